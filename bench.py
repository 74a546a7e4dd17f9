"""
Speed benchmark: locksmith's sampler and training step against Hugging Face transformers, same weights, one run.

    pip install transformers          # the reference; not a locksmith dependency
    python bench.py                   # CPU, fp32: Pythia-70m and SmolLM2-135M shapes, batch 1/8/32
    python bench.py --quick=True      # fewer layers and tokens, for a smoke check
    python bench.py --device=cuda --dtype=bfloat16   # on a GPU; also prints decode time vs one read of the weights

For each shape, a random-weight HF model is written with save_pretrained and read back with model.load, so both sides
hold identical weights. Generation: greedy, prompt of `prompt_len` random tokens, exactly `new_tokens` new tokens
(no stop), tokens/s = batch * new_tokens / seconds; the first greedy row is checked to be token-identical. Training:
forward + backward + AdamW step on a (batch, seq) batch, median of `steps` after a warm-up. Numbers go to stdout and
runs/bench/bench.json.
"""
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass

import torch

import model as M
from common import parse_cli, write_json
from sampler import generate


@dataclass
class Config:
    device: str = "cpu"
    dtype: str = "float32"          # bfloat16 on GPU
    batches: tuple = (1, 8, 32)     # generation batch sizes
    prompt_len: int = 64
    new_tokens: int = 128
    train_batch: int = 8
    train_seq: int = 128
    steps: int = 5                  # timed training steps (median reported)
    quick: bool = False             # 2 layers, 32 new tokens: checks the script runs, numbers are not meaningful
    out_dir: str = "runs/bench"
    threads: int = 0                # torch.set_num_threads; 0 = torch's default


SHAPES = {
    "pythia-70m": dict(model_type="gpt_neox", vocab_size=50304, hidden_size=512, num_hidden_layers=6,
                       num_attention_heads=8, intermediate_size=2048, rotary_pct=0.25, use_parallel_residual=True,
                       max_position_embeddings=2048),
    "smollm2-135m": dict(model_type="llama", vocab_size=49152, hidden_size=576, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536, rope_theta=100000.0,
                         tie_word_embeddings=True, max_position_embeddings=8192),
}


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def bench_shape(name, hf_cfg, cfg, transformers):
    dtype = getattr(torch, cfg.dtype)
    if cfg.quick:
        hf_cfg = {**hf_cfg, "num_hidden_layers": 2}
    conf = transformers.AutoConfig.for_model(**hf_cfg)
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(conf)
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = M.load(d, device=cfg.device, dtype=dtype)
    hf = hf.to(device=cfg.device, dtype=dtype).eval()
    n_params = ours.num_params()
    rows = []
    g = torch.Generator().manual_seed(0)
    N = 32 if cfg.quick else cfg.new_tokens
    for B in cfg.batches:
        prompts = torch.randint(10, hf_cfg["vocab_size"] - 10, (B, cfg.prompt_len), generator=g)
        generate(ours, prompts[:, :8].tolist(), 4)  # warm-up both
        with torch.no_grad():
            hf.generate(prompts[:, :8].to(cfg.device), max_new_tokens=4, do_sample=False, pad_token_id=0)
        ours_out, t_ours = timed(lambda: generate(ours, prompts.tolist(), N), cfg.device)
        with torch.no_grad():
            hf_out, t_hf = timed(lambda: hf.generate(
                prompts.to(cfg.device), attention_mask=torch.ones_like(prompts).to(cfg.device), max_new_tokens=N,
                min_new_tokens=N, do_sample=False, pad_token_id=0, eos_token_id=None), cfg.device)
        same = ours_out[0] == hf_out[0, cfg.prompt_len:].tolist()
        rows.append(dict(shape=name, what=f"generate B={B}", ours=B * N / t_ours, hf=B * N / t_hf,
                         unit="tok/s", first_row_identical=same))
    # training step: forward, loss, backward, AdamW
    ids = torch.randint(10, hf_cfg["vocab_size"] - 10, (cfg.train_batch, cfg.train_seq), generator=g).to(cfg.device)

    def step_fn(m, opt, logits_of):
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
        opt = torch.optim.AdamW(m.parameters(), lr=1e-5)
        run = step_fn(m, opt, logits_of)
        run()
        times = [timed(run, cfg.device)[1] for _ in range(1 if cfg.quick else cfg.steps)]
        results[who] = cfg.train_batch * cfg.train_seq / statistics.median(times)
        m.eval()
    rows.append(dict(shape=name, what=f"train step B={cfg.train_batch} T={cfg.train_seq}", ours=results["ours"],
                     hf=results["hf"], unit="tok/s", first_row_identical=None))
    if cfg.device.startswith("cuda"):  # decode is memory-bound: compare one step with one read of the weights
        bytes_w = sum(p.numel() * p.element_size() for p in ours.parameters())
        _, t1 = timed(lambda: generate(ours, [[1] * cfg.prompt_len], N), cfg.device)
        bw = torch.cuda.get_device_properties(0)
        rows.append(dict(shape=name, what="bf16 decode ms/step (B=1)", ours=1000 * t1 / N, hf=None, unit="ms",
                         first_row_identical=None, weights_gb=bytes_w / 1e9, device=bw.name))
    return n_params, rows


def main(cfg):
    try:
        import transformers
    except ImportError:
        raise SystemExit("bench.py compares against Hugging Face transformers: pip install transformers") from None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    all_rows = []
    t0 = time.time()
    for name, hf_cfg in SHAPES.items():
        n, rows = bench_shape(name, hf_cfg, cfg, transformers)
        print(f"{name}: {n / 1e6:.1f}M parameters ({'quick: 2 layers' if cfg.quick else 'full depth'})")
        all_rows += rows
    print(f"\n{'shape':14s} {'benchmark':26s} {'locksmith':>12s} {'transformers':>13s} {'ratio':>7s}  same tokens")
    for r in all_rows:
        ratio = f"{r['ours'] / r['hf']:.2f}x" if r["hf"] else ""
        hf = f"{r['hf']:.0f}" if r["hf"] else "-"
        print(f"{r['shape']:14s} {r['what']:26s} {r['ours']:10.1f} {r['unit']:>3s} {hf:>9s} {ratio:>9s}  "
              f"{'' if r['first_row_identical'] is None else r['first_row_identical']}")
    print(f"\ntorch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"device {cfg.device}, {cfg.dtype}, {time.time() - t0:.0f}s")
    write_json(os.path.join(cfg.out_dir, "bench.json"), {"config": asdict(cfg), "rows": all_rows,
                                                         "torch": torch.__version__,
                                                         "transformers": transformers.__version__})


if __name__ == "__main__":
    main(parse_cli(Config))
