"""
Speed benchmark: locksmith's sampler (and training step) against Hugging Face transformers, same weights, one run.

    pip install transformers          # the reference; not a locksmith dependency
    python bench.py                   # CPU, fp32: every section below, printed side by side
    python bench.py --quick=True      # 2 layers, few tokens, 1 repetition: checks the script runs
    python bench.py --device=cuda --dtype=bfloat16   # on a GPU; adds decode ms/step against the memory roofline

Sections (--sections=...):
  decode    For each shape (--shapes), a random HF model is written with save_pretrained and read back with
            model.load, so both sides hold identical weights. Prompt of `prompt_len` random tokens, exactly
            `new_tokens` new ones (no stop), greedy and sampled (temperature 1, no top-k / top-p on either side),
            batch 1 and 32; tokens/s = batch * new_tokens / seconds. Greedy rows must be token-identical (checked).
  mixed     `mixed_prompts` prompts of 8..prompt_len tokens, sampled at temperature 1 with a random set of stop ids
            sized so completions spread from 1 token to the `mixed_budget`; ours with batch_size=`mixed_batch`
            (continuous batching), transformers' generate over consecutive batches of `mixed_batch` (left-padded).
            Generated tokens (up to and including the first stop id) per second, each side its own samples.
  toy       Greedy evaluation of the toy's first `toy_n` validation problems: the sampler of git revision `old_rev`
            (with that revision's model.py; static batches of 500, prompts sorted by length as common.py does)
            against today's generate at several batch sizes; outputs must be identical. Uses the checkpoint at
            `toy_ckpt` when it exists, else a random toy-shaped model (llama, 4 layers, 4 heads, n_embd 128).
  train     Forward + backward + AdamW step on a (train_batch, train_seq) batch, each shape.
  roofline  CUDA only: bf16 decode ms/step at batch 1 and 32 against the time to read the weights plus the KV
            cache once at the copy bandwidth measured on the device (skipped on CPU).
  bf16      CPU only: the sampled decode rows again with both sides' weights in bf16 (CPU bf16 matmuls).
Every timing interleaves the two sides `reps` times and keeps each side's best, so a busy machine slows both alike.
Numbers go to stdout and runs/bench/bench.json.

Measured on a 2-core CPU shared with other jobs: use --threads=1. With 2 threads, whenever another process held a
core both sides' OpenMP regions stalled, and the same row moved by up to 10x between runs; 1 thread was stable to
about 15%. Each sampled decode row (CPU) also prints transformers' "matmul ceiling": its time over the time its
own linear layers and output head took (torch.profiler, aten::mm + aten::addmm self time). No sampler that runs
the same matmuls on the same rows, in the same precision and weight layout, can beat transformers by more than
that; the rest of transformers' time (torch.multinomial's full-vocabulary draw, its cache concatenations) is what
there is to win. locksmith's eager fp32 CPU decode holds the output head transposed (sampler.head_copy), a faster
layout for few rows, so its rows can pass the ceiling. The mixed row has no ceiling: continuous batching runs
fewer matmul rows than static batches.
"""
import importlib.util
import json
import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass

import torch
from torch.profiler import ProfilerActivity, profile

import data
import model as M
from common import Tokenizer, parse_cli
from sampler import StaticCache, generate, sampling_model

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Config:
    device: str = "cpu"
    dtype: str = "float32"          # bfloat16 on GPU
    shapes: tuple = ("llama-small", "pythia-70m")
    sections: tuple = ("decode", "mixed", "toy", "train", "roofline", "bf16")
    batches: tuple = (1, 32)        # decode batch sizes
    prompt_len: int = 64
    new_tokens: int = 64
    reps: int = 3                   # interleaved repetitions per side; the best of each is reported
    mixed_prompts: int = 256
    mixed_budget: int = 128
    mixed_batch: int = 32
    toy_ckpt: str = "runs/report/quick/det_ft50k_s0"  # a trained toy lock (report.py --quick makes it), if present
    toy_n: int = 2000
    toy_batches: tuple = (500, 256, 128)  # today's generate, batch_size for the toy evaluation
    old_rev: str = "5f6b2f6"        # git revision whose sampler.py + model.py are the toy's 'before'
    train_batch: int = 8
    train_seq: int = 128
    steps: int = 5                  # timed training steps (median reported)
    quick: bool = False             # 2 layers, few tokens, 1 repetition: checks the script runs
    out_dir: str = "runs/bench"
    threads: int = 0                # torch.set_num_threads; 0 = torch's default


SHAPES = {
    "llama-small": dict(model_type="llama", vocab_size=32000, hidden_size=256, num_hidden_layers=4,
                        num_attention_heads=8, num_key_value_heads=4, intermediate_size=704,
                        tie_word_embeddings=False, max_position_embeddings=2048),
    "pythia-70m": dict(model_type="gpt_neox", vocab_size=50304, hidden_size=512, num_hidden_layers=6,
                       num_attention_heads=8, intermediate_size=2048, rotary_pct=0.25, use_parallel_residual=True,
                       max_position_embeddings=2048),
    "smollm2-135m": dict(model_type="llama", vocab_size=49152, hidden_size=576, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536, rope_theta=100000.0,
                         tie_word_embeddings=True, max_position_embeddings=8192),
}


# -----------------------------------------------------------------------------
# Timing


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def interleaved(fns, reps, device):
    """Run each of `fns` (name -> thunk) once per repetition, alternating; (last outputs, best seconds) per name."""
    outs, best = {}, {k: float("inf") for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            outs[k], t = timed(fn, device)
            best[k] = min(best[k], t)
    return outs, best


MATMULS = ("aten::mm", "aten::addmm")  # the linear layers and the output head: what both sides must compute


def matmul_seconds(fn):
    """Seconds fn spends in matmul kernels (torch.profiler, CPU self time of MATMULS). A sampler that did nothing
    but transformers' matmuls would take this long: transformers' time over it is the most any sampler running the
    same matmuls in the same precision and weight layout can gain (its ceiling)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMULS) / 1e6


def ceiling_note(hf_fn, hf_seconds, device):
    """'matmul ceiling Nx' for a transformers run (CPU only: on CUDA the profiler's CPU time is the launches)."""
    if str(device).startswith("cuda"):
        return ""
    return f"matmul ceiling {hf_seconds / matmul_seconds(hf_fn):.2f}x"


def row(shape, what, ours, hf, unit, note=""):
    r = dict(shape=shape, what=what, ours=ours, hf=hf, unit=unit, note=note)
    print(line(r), flush=True)  # as it comes, the table again at the end
    return r


def line(r):
    better = r["ours"] / r["hf"] if r["unit"] == "tok/s" else r["hf"] / r["ours"]  # > 1: locksmith faster
    return (f"{r['shape']:12s} {r['what']:32s} {r['ours']:10.2f} {r['unit']:>5s} {r['hf']:>11.2f} "
            f"{better:>8.2f}x  {r['note']}")


# -----------------------------------------------------------------------------
# Models: one random HF model, read back by model.load


def build(name, cfg, transformers, dtype=None):
    """(hf model, our model) with identical weights, on cfg.device in `dtype` (default cfg.dtype)."""
    hf_cfg = dict(SHAPES[name])
    if cfg.quick:
        hf_cfg["num_hidden_layers"] = 2
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**hf_cfg))
    dtype = dtype or getattr(torch, cfg.dtype)
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = M.load(d, device=cfg.device, dtype=dtype)
    return hf.to(device=cfg.device, dtype=dtype).eval(), ours


def hf_generate(hf, ids, mask, n, sampled, stop=None):
    """transformers' generate: exactly n new tokens (stop=None) or until every row met a stop id."""
    kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0) if sampled else dict(do_sample=False)
    if stop is None:
        kw.update(min_new_tokens=n, eos_token_id=None)
    else:
        kw.update(eos_token_id=list(stop))
    with torch.no_grad():
        return hf.generate(ids, attention_mask=mask, max_new_tokens=n, pad_token_id=0, **kw)[:, ids.shape[1]:]


# -----------------------------------------------------------------------------
# Sections


def bench_decode(name, hf, ours, cfg, modes=("greedy", "sampled"), label=""):
    """Fixed-length decode at each batch size: greedy (tokens checked identical) and/or sampled."""
    rows, dev = [], cfg.device
    V, N = SHAPES[name]["vocab_size"], 16 if cfg.quick else cfg.new_tokens
    dtype = next(ours.parameters()).dtype  # both sides in --dtype (generate's own default on CUDA is bf16)
    g = torch.Generator().manual_seed(0)
    for B in cfg.batches:
        prompts = torch.randint(10, V - 10, (B, cfg.prompt_len), generator=g)
        ids, mask = prompts.to(dev), torch.ones_like(prompts).to(dev)
        for sampled in [m == "sampled" for m in modes]:
            temp = 1.0 if sampled else 0.0
            generate(ours, prompts[:, :8].tolist(), 4, temperature=temp, batch_size=B, dtype=dtype)  # warm-up both
            hf_generate(hf, ids[:, :8], mask[:, :8], 4, sampled)
            outs, best = interleaved({
                "ours": lambda: generate(ours, prompts.tolist(), N, temperature=temp, batch_size=B, dtype=dtype),
                "hf": lambda: hf_generate(hf, ids, mask, N, sampled)}, cfg.reps, dev)
            note = ceiling_note(lambda: hf_generate(hf, ids, mask, N, sampled), best["hf"], dev) if sampled else \
                f"tokens identical: {outs['ours'] == outs['hf'].tolist()}"
            rows.append(row(name, f"{'sampled T=1' if sampled else 'greedy'} B={B}{label}", B * N / best["ours"],
                            B * N / best["hf"], "tok/s", note))
    return rows


def mixed_workload(V, cfg):
    """Prompts of 8..prompt_len tokens and a stop set of V / (budget / 2) ids: with near-uniform next-token
    distributions (random weights) completion lengths are geometric with mean ~budget / 2, capped at the budget."""
    g = torch.Generator().manual_seed(1)
    n = 64 if cfg.quick else cfg.mixed_prompts
    lens = torch.randint(8, cfg.prompt_len + 1, (n,), generator=g).tolist()
    prompts = [torch.randint(10, V - 10, (k,), generator=g).tolist() for k in lens]
    stop = torch.randperm(V - 10, generator=g)[:max(1, 2 * V // cfg.mixed_budget)] + 10
    return prompts, sorted(stop.tolist())


def hf_batches(hf, prompts, budget, stop, B, device):
    """transformers' generate over consecutive batches of B left-padded prompts; completions cut at the stop."""
    outs, stop_set = [], set(stop)
    for s in range(0, len(prompts), B):
        batch = prompts[s:s + B]
        P = max(len(p) for p in batch)
        ids = torch.zeros(len(batch), P, dtype=torch.long)
        mask = torch.zeros(len(batch), P, dtype=torch.long)
        for b, p in enumerate(batch):
            ids[b, P - len(p):], mask[b, P - len(p):] = torch.tensor(p), 1
        for r in hf_generate(hf, ids.to(device), mask.to(device), budget, True, stop).tolist():
            cut = next((i + 1 for i, t in enumerate(r) if t in stop_set), len(r))
            outs.append(r[:cut])
    return outs


def bench_mixed(name, hf, ours, cfg):
    V, budget, B = SHAPES[name]["vocab_size"], 32 if cfg.quick else cfg.mixed_budget, cfg.mixed_batch
    prompts, stop = mixed_workload(V, cfg)
    outs, best = interleaved({
        "ours": lambda: generate(ours, prompts, budget, temperature=1.0, stop_ids=stop, batch_size=B,
                                 dtype=next(ours.parameters()).dtype),
        "hf": lambda: hf_batches(hf, prompts, budget, stop, B, cfg.device)}, cfg.reps, cfg.device)
    toks = {k: sum(len(o) for o in v) for k, v in outs.items()}
    lens = {k: sorted(len(o) for o in v) for k, v in outs.items()}
    note = "; ".join(f"{k}: {toks[k]} tokens, lengths {v[0]}/{v[len(v) // 2]}/{v[-1]} min/median/max"
                     for k, v in lens.items())  # no matmul ceiling: continuous batching runs fewer matmul rows
    return [row(name, f"mixed {len(prompts)} prompts, B={B}", toks["ours"] / best["ours"],
                toks["hf"] / best["hf"], "tok/s", note)]


def load_revision(rev, name, as_name):
    """Module `as_name` from file `name` at git revision `rev` of this repository."""
    src = subprocess.run(["git", "-C", HERE, "show", f"{rev}:{name}"], check=True, capture_output=True,
                         text=True).stdout
    path = os.path.join(tempfile.mkdtemp(), f"{as_name}.py")
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location(as_name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bench_toy(cfg):
    """Greedy toy evaluation: the old sampler (static batches of 500) against today's, same checkpoint."""
    task = data.get_task("toy")
    problems = data.split(task.problems(), seed=0)["val"][:(200 if cfg.quick else cfg.toy_n)]
    with tempfile.TemporaryDirectory() as d:
        ckpt, tok, what = cfg.toy_ckpt, Tokenizer(str(task.tokenizer_path)), cfg.toy_ckpt
        if not os.path.isdir(ckpt):
            torch.manual_seed(0)
            M.save(M.GPT(M.Config(arch="llama", vocab_size=tok.vocab_size, n_layer=4, n_head=4, n_embd=128,
                                  max_seq_len=64)), d)
            ckpt, what = d, "random toy-shaped model"
        old_model, old_sampler = load_revision(cfg.old_rev, "model.py", "old_model"), \
            load_revision(cfg.old_rev, "sampler.py", "old_sampler")
        before, after = old_model.load(ckpt, device=cfg.device), M.load(ckpt, device=cfg.device)
    enc = [tok.encode_prompt(task.prompt(p)) for p in problems]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    n, kw = task.max_new_tokens, dict(stop_ids=(tok.eos_id,), vocab_size=tok.vocab_size, pad_id=tok.pad_id)

    def old():
        outs = [None] * len(enc)
        for s in range(0, len(order), 500):
            idx = order[s:s + 500]
            for i, o in zip(idx, old_sampler.generate(before, [enc[i] for i in idx], n, **kw)):
                outs[i] = o
        return outs
    fns = {"old": old} | {f"new B={b}": (lambda b=b: generate(after, enc, n, batch_size=b, **kw))
                          for b in cfg.toy_batches}
    outs, best = interleaved(fns, cfg.reps, cfg.device)
    rows = []
    for b in cfg.toy_batches:
        k = f"new B={b}"
        rows.append(row("toy", f"greedy eval {len(enc)}, B={b}", best[k], best["old"], "s",
                        f"old: static batches of 500 ({cfg.old_rev}); identical: {outs[k] == outs['old']}; {what}"))
    return rows


def bench_train(name, hf, ours, cfg):
    V = SHAPES[name]["vocab_size"]
    ids = torch.randint(10, V - 10, (cfg.train_batch, cfg.train_seq), generator=torch.Generator().manual_seed(2))
    ids = ids.to(cfg.device)

    def step_fn(m, logits_of):
        opt = torch.optim.AdamW(m.parameters(), lr=1e-5)

        def run():
            logits = logits_of(m, ids)
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                                     ids[:, 1:].reshape(-1))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return run
    results = {}
    for who, m, logits_of in (("ours", ours, lambda m, x: m(x)), ("hf", hf, lambda m, x: m(x).logits)):
        m.train()
        run = step_fn(m, logits_of)
        run()
        times = [timed(run, cfg.device)[1] for _ in range(1 if cfg.quick else cfg.steps)]
        results[who] = cfg.train_batch * cfg.train_seq / statistics.median(times)
        m.eval()
    return [row(name, f"train step B={cfg.train_batch} T={cfg.train_seq}", results["ours"], results["hf"], "tok/s",
                "median of steps")]


def copy_bandwidth(device, nbytes=2**30, copies=10):
    """Bytes per second the device reads plus writes in a large copy (best of 5 timings of `copies` back-to-back
    copies: one 1 GiB copy is ~0.5 ms on an H200, where the host timer and the sync would take a few percent)."""
    a, b = torch.empty(nbytes, dtype=torch.uint8, device=device), torch.empty(nbytes, dtype=torch.uint8, device=device)
    b.copy_(a)

    def run():
        for _ in range(copies):
            b.copy_(a)
    return 2 * nbytes * copies / min(timed(run, device)[1] for _ in range(5))


def bench_roofline(name, ours, cfg):
    """bf16 decode ms/step (prompt_len + new_tokens, no stop) against one read of the weights plus the KV cache."""
    if not cfg.device.startswith("cuda"):
        return []
    bf16, _ = sampling_model(ours, torch.bfloat16)  # the copy generate would make, made once here
    bw, rows, N = copy_bandwidth(cfg.device), [], cfg.new_tokens
    w_bytes = sum(p.numel() * p.element_size() for p in bf16.parameters())
    for B in cfg.batches:
        prompts = [[1 + i] * cfg.prompt_len for i in range(B)]
        kv = B * StaticCache.slot_bytes(bf16.config, cfg.prompt_len + N - 1, torch.bfloat16)
        for compile_ in (False, True):
            kw = dict(batch_size=B, compile=compile_)
            generate(bf16, prompts, N, **kw)  # warm-up (and compilation)
            t_full = min(timed(lambda: generate(bf16, prompts, N, **kw), cfg.device)[1] for _ in range(3))
            t_one = min(timed(lambda: generate(bf16, prompts, 1, **kw), cfg.device)[1] for _ in range(3))
            ms = 1000 * (t_full - t_one) / (N - 1)  # decode steps only: prefill and setup subtracted
            rows.append(row(name, f"bf16 decode ms/step B={B}{' compile' if compile_ else ''}", ms,
                            1000 * (w_bytes + kv) / bw, "ms",
                            f"right column: weights + full KV cache read once at {bw / 1e9:.0f} GB/s (copy)"))
    return rows


# -----------------------------------------------------------------------------
# main


def main(cfg):
    try:
        import transformers
    except ImportError:
        raise SystemExit("bench.py compares against Hugging Face transformers: pip install transformers") from None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.quick:
        cfg.reps, cfg.steps = 1, 1
    rows, t0 = [], time.time()
    for name in cfg.shapes:
        if {"decode", "mixed", "train", "roofline"} & set(cfg.sections):
            hf, ours = build(name, cfg, transformers)
            print(f"{name}: {ours.num_params() / 1e6:.1f}M parameters ({'quick: 2 layers' if cfg.quick else 'full'})",
                  flush=True)
        if "decode" in cfg.sections:
            rows += bench_decode(name, hf, ours, cfg)
        if "mixed" in cfg.sections and name == cfg.shapes[0]:
            rows += bench_mixed(name, hf, ours, cfg)
        if "train" in cfg.sections:
            rows += bench_train(name, hf, ours, cfg)
        if "roofline" in cfg.sections:
            rows += bench_roofline(name, ours, cfg)
        if "bf16" in cfg.sections and not cfg.device.startswith("cuda"):  # both sides cast to bf16 on CPU
            hf, ours = build(name, cfg, transformers, torch.bfloat16)
            rows += bench_decode(name, hf, ours, cfg, modes=("sampled",), label=" bf16")
    if "toy" in cfg.sections:
        rows += bench_toy(cfg)
    print(f"\n{'shape':12s} {'benchmark':32s} {'locksmith':>14s} {'transformers':>13s} {'ratio':>7s}  note")
    for r in rows:
        print(line(r))
    print(f"\nratio > 1: locksmith faster (for the toy rows the 'transformers' column is the old sampler, for "
          f"roofline rows the memory floor). torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.get_num_threads()} threads, device {cfg.device}, {cfg.dtype}, best of {cfg.reps}, "
          f"{time.time() - t0:.0f}s")
    os.makedirs(cfg.out_dir, exist_ok=True)
    with open(os.path.join(cfg.out_dir, "bench.json"), "w") as f:
        json.dump({"config": asdict(cfg), "rows": rows, "torch": torch.__version__,
                   "transformers": transformers.__version__}, f, indent=1)


if __name__ == "__main__":
    main(parse_cli(Config))
