"""
tools/gpu_check.py: one prepared check of locksmith on one GPU (issue 14), made to run in a single command under a
hard time limit: what the GPU does with model.py, sampler.py, the training step and parallel.py's FSDP plumbing,
against floors it measures on the same GPU. The models are random-init at two real shapes (no weights can be
downloaded there; transformers is not needed):
  1B  TinyLlama-1.1B dims: hidden 2048, 22 layers, 32 heads / 4 kv-heads, intermediate 5632, vocabulary 32000
  7B  Llama-2-7B dims: hidden 4096, 32 layers, 32 heads, intermediate 11008, vocabulary 32000

    python tools/gpu_check.py --out=runs/gpu_check.json     # on the GPU machine: about 5 minutes, at most 7.7
    python tools/gpu_check.py --tiny=True --device=cpu      # tiny shapes, the same code: 8 s of CPU time
    python tools/gpu_check.py --tiny=True                   # on the GPU machine: does the script itself work there
    python tools/gpu_check.py --sections=decode --batches=64 --shapes=7B   # a part again

Sections, in order (each one's numbers and the reason for every skip are in the JSON):
  1. environment  torch / CUDA / cuDNN / NCCL versions, GPU name and memory, bf16 support; the copy bandwidth
                  (bench.copy_bandwidth: a 1 GiB device-to-device copy, read + write) and the best bf16 and fp32
                  GEMM rate (8192^3): the floors of sections 4 and 5.
  2. sdpa         the attention calls model.py makes (training: causal, no mask, forward + backward; scoring with
                  a (B, 1, T, T) boolean mask; the sampler's prefill and its one-query decode with a (B, 1, T, Tk)
                  boolean mask), at both shapes: the backend SDPA picks by itself, then FLASH_ATTENTION,
                  EFFICIENT_ATTENTION, CUDNN_ATTENTION and MATH each alone (torch.nn.attention.sdpa_kernel): which
                  run, their times, their error against an fp32 MATH reference, and why a refused one refused
                  (PyTorch's warning: a boolean mask rules flash out, which is a finding, not a failure).
  3. parity       every committed fixture (tests/fixtures, as tests/test_model.py uses them) loaded in bf16 and in
                  fp32 on the device: max abs error against transformers' fp32 logits, argmax agreement, and
                  sampler.generate's 12 greedy tokens against transformers' own.
  4. decode       sampler.generate, bf16, greedy, prompts of 256 random tokens, 64 new ones, batch 64 and 1, each
                  shape, without and with compile=True (CUDA graphs; torch._dynamo.reset() before each, so every
                  row compiles its own static graph). ms/step = (time of the full call - time of the same call in
                  which every id is a stop id, so it decodes sync_every = 8 steps only) / 56: prefill, setup and
                  compilation cancel out. Floor = (bytes of the weights a step reads (all but the input
                  embedding) + the KV cache, every slot's L = 319 columns) / the copy bandwidth; ratio = ms / floor
                  (issue target: <= 1.5 at batch 64 with compile). Every eager row runs first (batch 64, then 1),
                  then the compiled ones in the same order, so a timeout costs compiled rows only. Compiled
                  rows also record the compile time, dynamo's graph-break and CUDA-graph-skip counters and
                  whether their greedy tokens equal the eager ones.
  5. train        common.train_step (the training scripts' step: the completion loss through model(targets=...),
                  one micro-batch of 4 x 1024 tokens, every token a target) with common.make_optimizer, for the
                  settings in TRAIN_RUNS; each 7B setting runs only if memory.memory_estimate says it fits 90% of
                  the device (else skipped, with the estimate). Peak torch.cuda.max_memory_allocated over a first
                  step and two timed ones against the estimate for the same settings; MFU = 6 x matmul parameters (all
                  but an untied input embedding) x tokens / step time / the measured GEMM rate (hardware MFU
                  8x with checkpointing's recompute).
  6. fsdp         one rank, a process group of its own ("cpu:gloo,cuda:nccl" as parallel.setup_dist makes it; gloo on
                  CPU): a 110M Llama sharded per Block then at the root as parallel.prepare_model does, against the
                  same model unsharded: a no-grad forward, one common.train_step of two micro-batches (gradient
                  accumulation), the evaluation copy (parallel.plain_model and common.greedy_completions, which
                  samples from it), parallel.save_model then model.load, a reload into FSDP, and the optimizer
                  state saved (torch.save, as train_lock.py's resume) and loaded, then the same step on both.
                  After a no-grad forward the FSDP model is resharded (model.reshard(), as elicit_rl.py does): FSDP2
                  leaves the root gathered, and an optimizer made then holds the gathered copies of the embeddings,
                  final norm and head, which then never train (found by this check on CPU).
--tiny=True: tiny shapes and sizes instead of 1B / 7B, the same code, on --device (default: CUDA where there is
one); what needs CUDA is skipped with a reason (compile=True decode rows), never silently; on CPU the peak memory
comes from the profiler's allocation events. --isolate=False runs every section in this process, with no time
limits (for a debugger, and for tests/test_gpu_check.py).

Expected on one H200 (estimated from FLOPs and bytes at ~4 TB/s and ~600 bf16 TFLOP/s, not measured): environment
~8 s, sdpa ~10 s, parity ~8 s (mostly process and CUDA start-up), decode 30 s of eager rows plus four compiles of
~30-90 s each (its 210 s limit may cut the batch-1 compiled rows), train ~30 s (a 7B step is 166-221 TFLOP, about
0.3-0.5 s), fsdp ~15 s.

How it runs:
  1. The parent process runs each section as `python tools/gpu_check.py ... --section=NAME` with a time limit
     (TIMEOUT_S x timeout_scale, never past budget_s from the start) and kills that process group when it runs
     over, so a hang (a compile, an NCCL collective) or a crash costs that section only, and every section starts
     with the GPU's memory empty.
  2. A section rewrites what it has so far to OUT.NAME.part after every row (atomically); the parent merges that
     into OUT whether the section finished, failed or was killed: status ok, skipped (reason) or failed (error),
     its seconds, and the tail of its stderr. OUT is rewritten atomically after each section.
  3. At the end a summary is printed: a line a section, then the decode, train and sdpa tables.
Writes OUT (default runs/gpu_check.json): {"config", "started", "seconds", "sections": {name: result}}.
"""
import contextlib
import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.nn.attention import SDPBackend, sdpa_kernel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import bench  # noqa: E402
import common  # noqa: E402
import data  # noqa: E402
import memory  # noqa: E402
import model as M  # noqa: E402
import parallel  # noqa: E402
import sampler  # noqa: E402
from errors import BadInput, MissingFile  # noqa: E402
from files import atomic_write_text, read_json  # noqa: E402

SECTIONS = ("environment", "sdpa", "parity", "decode", "train", "fsdp")
TIMEOUT_S = dict(environment=25, sdpa=35, parity=35, decode=210, train=90, fsdp=55)  # 450 s in all

SHAPES = {  # model.Config fields; random init
    "1B": dict(arch="llama", vocab_size=32000, n_embd=2048, n_layer=22, n_head=32, n_kv_head=4,
               intermediate_size=5632, max_seq_len=2048),  # TinyLlama-1.1B
    "7B": dict(arch="llama", vocab_size=32000, n_embd=4096, n_layer=32, n_head=32, intermediate_size=11008,
               max_seq_len=4096),  # Llama-2-7B
    "fsdp": dict(arch="llama", vocab_size=32000, n_embd=1024, n_layer=4, n_head=16, n_kv_head=4,
                 intermediate_size=2816, max_seq_len=1024),  # 110M: checks, not speed
}
TINY = {  # the same roles at a size a CPU runs in seconds (the 1B one keeps GQA, the 7B one is MHA)
    "1B": dict(arch="llama", vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_kv_head=2, intermediate_size=128,
               max_seq_len=256),
    "7B": dict(arch="llama", vocab_size=256, n_embd=64, n_layer=2, n_head=4, intermediate_size=176, max_seq_len=256),
    "fsdp": dict(arch="llama", vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_kv_head=2, intermediate_size=64,
                 max_seq_len=128),  # vocabulary >= the toy tokenizer's 62 (greedy_completions)
}
SIZES = {  # sequence sizes: (full, tiny)
    "train": ((4, 1024), (2, 32)),          # micro-batch: sequences x tokens
    "decode": ((256, 64), (16, 72)),        # prompt tokens, new tokens (tiny: 64 timed steps beyond SYNC)
    "fsdp": ((4, 256), (2, 16)),            # each of the two micro-batches
    "copy_bytes": (2**30, 2**26),
    "gemm_n": (8192, 256),
}
TRAIN_RUNS = (  # (shape, train_dtype, optimizer, grad_checkpoint), most telling first (a timeout cuts the tail)
    ("1B", "fp32", "adamw", False),  # the training scripts' defaults: fp32 weights, the forward under bf16 autocast
    ("7B", "bf16", "lion", True),    # the paper's one-GPU 7B setup (README: estimated 56 GB)
    ("1B", "bf16", "lion", True),
    ("7B", "bf16", "adamw", True),   # README: estimated 96.4 GB
    ("7B", "fp32", "lion", False),   # README: estimated 113 GB
    ("7B", "fp32", "adamw", False),  # README: estimated 140 GB: over 90% of an H200's 150 GB (139 GiB): skipped
)
SYNC = 8  # sampler sync_every for every decode call: the stop-all call decodes exactly this many steps
BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")


@dataclass
class Config:
    out: str = "runs/gpu_check.json"  # the one JSON file (sections write OUT.NAME.part while they run)
    tiny: bool = False                # tiny shapes and sizes: the whole check in seconds on a CPU
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    sections: tuple = SECTIONS        # which sections, in this order
    shapes: tuple = ("7B", "1B")      # decode shapes, in this order
    batches: tuple = (64, 1)          # decode batch sizes, in this order
    reps: int = 0                     # timed repetitions, the best kept (0: 3, or 1 with --tiny)
    fixtures: str = os.path.join(ROOT, "tests", "fixtures")  # the parity fixtures
    isolate: bool = True              # each section in its own process with a time limit (False: all in this
                                      # one, no limits: for a debugger, and the quick tiny test)
    timeout_scale: float = 1.0        # x every section's time limit (TIMEOUT_S)
    budget_s: float = 460.0           # no section runs past this many seconds from the start
    seed: int = 0
    section: str = ""                 # internal: run this one section here and write OUT.NAME.part


# -----------------------------------------------------------------------------
# Small helpers: statuses, the part file, models, timing


def write_json(path, obj):
    """files.write_json, except that a value JSON cannot hold is written as its str() rather than lost."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def one_line(e):
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:400]}" if text else type(e).__name__


def skipped(reason, **kw):
    return {"status": "skipped", "reason": reason, **kw}


def failed(e, **kw):
    return {"status": "failed", "error": e if isinstance(e, str) else one_line(e), **kw}


class Part:
    """What one section has measured so far, rewritten atomically to its part file after every row."""

    def __init__(self, path):
        self.path, self.data = path, {"status": "running"}

    def save(self):
        write_json(self.path, self.data)

    def row(self, key, row):
        self.data.setdefault(key, []).append(row)
        self.save()
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items() if not isinstance(v, dict)}
        print(f"  {key}: {shown}", flush=True)


def attempt(row, fn):
    """row.update(fn()) with status ok, or status failed and the error; memory is freed either way."""
    try:
        row.update(fn())
        row.setdefault("status", "ok")
    except Exception as e:  # one failed row (an out-of-memory error, an unsupported kernel) is a finding
        row.update(failed(e))
        traceback.print_exc()
    free()
    return row


def free():
    """Give the GPU memory of the last row back (a 7B model and its optimizer state); on CPU nothing to do."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        gc.collect()  # (about 0.3 s with torch imported: not on every CPU row)
        torch.cuda.empty_cache()


def part_path(cfg, name):
    return f"{cfg.out}.{name}.part"


def shape(cfg, name):
    return M.Config(**(TINY if cfg.tiny else SHAPES)[name])


def size(cfg, name):
    return SIZES[name][1 if cfg.tiny else 0]


def n_reps(cfg):
    return cfg.reps or (1 if cfg.tiny else 3)


def is_cuda(cfg):
    return cfg.device.startswith("cuda")


def build(config, device, dtype, seed):
    """A random-init model (model.GPT's own init) made directly in `dtype` on `device`: built on the meta device,
    as parallel.load_model does, so a 7B in bf16 never exists in fp32 first."""
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = M.GPT(config)
    model = model.to(dtype).to_empty(device=device)
    model.init_weights()
    model.inv_freq = M.rope_inv_freq(config).to(device)  # fp32, as model.load leaves it
    return model.eval()


def n_params(config):
    with torch.device("meta"):
        return M.GPT(config).num_params()


def device_memory(cfg):
    if is_cuda(cfg):
        return torch.cuda.get_device_properties(cfg.device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def gemm_flops(device, dtype, n, reps):
    """Best FLOP/s of an n x n x n matmul in `dtype` (10 back to back a timing, best of reps)."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    c = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=c)  # warm-up (cuBLAS handles, heuristics)
    k = 10 if device.startswith("cuda") else 2
    t = min(bench.timed(lambda: [torch.mm(a, b, out=c) for _ in range(k)], device)[1] for _ in range(reps))
    return 2 * n ** 3 * k / t


def measured(cfg):
    """Copy bandwidth (bytes/s) and GEMM rates (FLOP/s by dtype): the environment section's, or measured here."""
    try:
        env = read_json(cfg.out)["sections"]["environment"]
        return dict(copy_Bps=env["copy_GBps"] * 1e9, gemm={k: v * 1e12 for k, v in env["gemm_TFLOPs"].items()},
                    source="environment section")
    except (MissingFile, KeyError, TypeError, ValueError):
        return dict(copy_Bps=bench.copy_bandwidth(cfg.device, size(cfg, "copy_bytes")),
                    gemm={k: gemm_flops(cfg.device, getattr(torch, k), size(cfg, "gemm_n"), n_reps(cfg))
                          for k in ("bfloat16", "float32")}, source="measured in this section")


def cpu_peak(fn):
    """(fn(), peak bytes of the tensors fn allocated and held at once) on CPU, from the profiler's allocation
    events (torch.cuda.max_memory_allocated has no CPU counterpart)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    with tempfile.TemporaryDirectory() as d:
        prof.export_chrome_trace(os.path.join(d, "trace.json"))
        with open(os.path.join(d, "trace.json")) as f:
            events = json.load(f)["traceEvents"]
    live = peak = 0
    for e in sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"]):
        live += e["args"]["Bytes"]
        peak = max(peak, live)
    return out, peak


# -----------------------------------------------------------------------------
# 1. environment


def section_environment(cfg, part):
    d, dev = part.data, cfg.device
    d.update(torch=torch.__version__, python=platform.python_version(), device=dev, cuda_build=torch.version.cuda,
             cpu_threads=torch.get_num_threads(), nccl_available=torch.distributed.is_nccl_available(),
             triton=importlib.util.find_spec("triton") is not None)
    if is_cuda(cfg):
        p = torch.cuda.get_device_properties(dev)
        nccl = torch.cuda.nccl.version() if d["nccl_available"] else None
        d["gpu"] = dict(name=p.name, memory_bytes=p.total_memory, capability=f"{p.major}.{p.minor}",
                        multiprocessors=p.multi_processor_count, bf16=torch.cuda.is_bf16_supported(),
                        cudnn=torch.backends.cudnn.version(), nccl=".".join(map(str, nccl)) if isinstance(
                            nccl, tuple) else nccl, tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    else:
        d["gpu"] = skipped("no CUDA")
    part.save()
    d["copy_GBps"] = bench.copy_bandwidth(dev, size(cfg, "copy_bytes")) / 1e9
    d["gemm_TFLOPs"] = {k: gemm_flops(dev, getattr(torch, k), size(cfg, "gemm_n"), n_reps(cfg)) / 1e12
                        for k in ("bfloat16", "float32")}
    d["status"] = "ok"


# -----------------------------------------------------------------------------
# 2. SDPA kernels


def attention_calls(cfg, name):
    """The SDPA calls model.Attention makes at this shape: (what, q shape, kv length, mask or None, backward)."""
    c = shape(cfg, name)
    (B, T), (P, N) = size(cfg, "train"), size(cfg, "decode")
    S, L = max(cfg.batches), P + N - 1
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    pad = torch.arange(T) >= T // 8  # the first eighth of each row is left padding (a pad query sees itself)
    scoring = ((causal & pad) | torch.eye(T, dtype=torch.bool)).expand(B, 1, T, T)
    prefill_cols = torch.arange(P - 1).expand(S, P - 1)
    decode_cols = torch.full((S, 1), L - 1)
    calls = [(f"train B={B} T={T}: causal, no mask, fwd+bwd", (B, c.n_head, T, c.head_dim), T, None, True),
             (f"scoring B={B} T={T}: (B,1,T,T) bool mask", (B, c.n_head, T, c.head_dim), T, scoring, False),
             (f"prefill B={S} T={P - 1}: (B,1,T,T) bool mask", (S, c.n_head, P - 1, c.head_dim), P - 1,
              sampler.visible(prefill_cols, P - 1), False)]
    for b in sorted(set(cfg.batches), reverse=True):
        calls.append((f"decode B={b} Tk={L}: 1 query, (B,1,1,Tk) bool mask", (b, c.n_head, 1, c.head_dim), L,
                      sampler.visible(decode_cols[:b], L), False))
    return c, calls


def run_sdpa(q, k, v, mask, grad, backend=None):
    """model.Attention's call, alone with one backend (None: SDPA's own choice)."""
    with sdpa_kernel([getattr(SDPBackend, backend)]) if backend else contextlib.nullcontext():
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                           enable_gqa=k.shape[1] != q.shape[1])
        if grad:
            y.float().square().mean().backward()
    return y


def section_sdpa(cfg, part):
    dev = cfg.device
    dtype = torch.bfloat16 if is_cuda(cfg) else torch.float32  # what the model computes in there
    g = torch.Generator().manual_seed(cfg.seed)
    for name in ("7B", "1B"):
        c, calls = attention_calls(cfg, name)
        for what, qshape, Tk, mask, grad in calls:
            kvshape = (qshape[0], c.n_kv_head, Tk, c.head_dim)
            q, k, v = (torch.randn(s, generator=g).to(dev, dtype).requires_grad_(grad)
                       for s in (qshape, kvshape, kvshape))
            mask = None if mask is None else mask.to(dev)
            ref = run_sdpa(q.detach().float(), k.detach().float(), v.detach().float(), mask, False, "MATH")
            row = dict(shape=name, call=what, q=list(qshape), kv=list(kvshape), dtype=str(dtype).removeprefix("torch."),
                       n_head=c.n_head, n_kv_head=c.n_kv_head)
            try:  # the dispatcher's own choice (an internal op: the same one F.scaled_dot_product_attention asks)
                row["default"] = SDPBackend(torch._fused_sdp_choice(q, k, v, mask, 0.0, mask is None, scale=None,
                                                                    enable_gqa=c.n_kv_head != c.n_head)).name
            except Exception as e:
                row["default"] = f"unknown ({one_line(e)})"
            for backend in (None,) + BACKENDS:
                row[backend or "chosen"] = sdpa_backend(q, k, v, mask, grad, backend, ref, dev, n_reps(cfg))
            part.row("calls", row)
    refused = [f"{r['shape']} {r['call']}: {b} refused ({r[b].get('why') or r[b].get('error')})"
               for r in part.data["calls"] for b in BACKENDS if r[b]["status"] != "ok"]
    part.data["findings"] = refused
    part.data["status"] = "ok"


def sdpa_backend(q, k, v, mask, grad, backend, ref, dev, reps):
    """{status, ms (a call; forward + backward when grad), max_abs_err against fp32 MATH} or why it refused."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            y = run_sdpa(q, k, v, mask, grad, backend)  # warm-up; raises when the backend refuses the call
            n = 20 if dev.startswith("cuda") else 2
            t = min(bench.timed(lambda: [run_sdpa(q, k, v, mask, grad, backend) for _ in range(n)], dev)[1]
                    for _ in range(reps))
            return dict(status="ok", ms=1000 * t / n, max_abs_err=(y.float() - ref).abs().max().item())
        except Exception as e:  # "No available kernel": PyTorch warned why just before
            why = "; ".join(dict.fromkeys(str(w.message).strip().splitlines()[0] for w in caught))
            return dict(status="refused", error=one_line(e), why=why[:600])


# -----------------------------------------------------------------------------
# 3. bf16 / fp32 parity on the committed fixtures


def section_parity(cfg, part):
    if not os.path.isdir(cfg.fixtures):
        raise MissingFile(f"--fixtures={cfg.fixtures}: not found")
    names = sorted(n for n in os.listdir(cfg.fixtures)
                   if os.path.isfile(os.path.join(cfg.fixtures, n, "expected.safetensors")))
    if not names:
        raise MissingFile(f"--fixtures={cfg.fixtures}: no fixture (a directory with expected.safetensors)")
    for name in names:
        e = load_file(os.path.join(cfg.fixtures, name, "expected.safetensors"))
        for dtype in (torch.bfloat16, torch.float32):
            row = dict(fixture=name, dtype=str(dtype).removeprefix("torch."))
            part.row("rows", attempt(row, lambda: parity_row(cfg, name, e, dtype)))
    rows = [r for r in part.data["rows"] if r["status"] == "ok"]
    for dt in ("bfloat16", "float32"):
        mine = [r for r in rows if r["dtype"] == dt]
        part.data[dt] = mine and dict(max_abs_err=max(r["max_abs_err"] for r in mine), logit_scale=max(r["logit_scale"]
                             for r in mine), argmax_agree=min(r["argmax_agree"] for r in mine),
                             greedy_equal=sum(r["greedy_equal"] for r in mine), greedy_of=2 * len(mine))
    part.data["status"] = "ok" if len(rows) == len(part.data["rows"]) else "failed"
    if part.data["status"] == "failed":
        part.data["error"] = f"{len(part.data['rows']) - len(rows)} fixture rows failed (see rows)"


def parity_row(cfg, name, e, dtype):
    m = M.load(os.path.join(cfg.fixtures, name), device=cfg.device, dtype=dtype)
    with torch.no_grad():
        logits = m(e["ids"].to(cfg.device)).cpu()
    greedy = [sampler.generate(m, [e[f"greedy_prompt_{i}"].tolist()], len(e[f"greedy_{i}"]), dtype=dtype)[0]
              for i in (0, 1)]  # (dtype: generate would sample an fp32 model in bf16 on a GPU)
    same = [g == e[f"greedy_{i}"].tolist() for i, g in enumerate(greedy)]
    return dict(max_abs_err=(logits - e["logits"]).abs().max().item(), logit_scale=e["logits"].abs().max().item(),
                argmax_agree=(logits.argmax(-1) == e["logits"].argmax(-1)).float().mean().item(),
                greedy_equal=sum(same))


# -----------------------------------------------------------------------------
# 4. decode: ms/step against the memory floor


def section_decode(cfg, part):
    floors = measured(cfg)
    part.data.update(copy_GBps=floors["copy_Bps"] / 1e9, floors_from=floors["source"])
    models = {}  # shape -> model, and (tokens, shape, batch) -> the eager call's tokens
    for compile_ in (False, True):  # every eager row first: a timeout during a compile costs compiled rows only
        for B in cfg.batches:
            for name in cfg.shapes:
                row = dict(shape=name, batch=B, compile=compile_)
                if compile_ and not is_cuda(cfg):
                    row.update(skipped("no CUDA: compile=True is timed with CUDA graphs (mode reduce-overhead) only; "
                                       "a CPU compile takes ~15 s a shape"))
                else:
                    attempt(row, lambda: decode_row(cfg, models, name, B, compile_, floors["copy_Bps"]))
                part.row("rows", row)
    del models
    bad = [r for r in part.data["rows"] if r["status"] == "failed"]
    part.data["status"] = "failed" if bad else "ok"
    if bad:
        part.data["error"] = f"{len(bad)} of {len(part.data['rows'])} rows failed: {bad[0]['error']}"


def decode_row(cfg, models, name, B, compile_, bandwidth):
    dev = cfg.device
    if name not in models:
        models[name] = build(shape(cfg, name), dev, torch.bfloat16, cfg.seed)
    m = models[name]
    V, (P, N) = m.config.vocab_size, size(cfg, "decode")
    prompts = torch.randint(10, V - 10, (B, P), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    L = P + N - 1  # the cache's columns: what generate allocates
    kv = B * sampler.StaticCache.slot_bytes(m.config, L, torch.bfloat16)
    kw = dict(batch_size=B, compile=compile_, kv_budget_bytes=kv, sync_every=SYNC, dtype=torch.bfloat16)
    if compile_:
        torch._dynamo.reset()  # a fresh static graph for this shape and batch (no automatic-dynamic recompile)
        torch._dynamo.utils.counters.clear()  # reset() keeps them: each row counts its own breaks and skips
        with contextlib.suppress(Exception):
            torch._logging.set_logs(perf_hints=True)  # why CUDA graphs were skipped, if they were (stderr)
    out, first = bench.timed(lambda: sampler.generate(m, prompts, N, **kw), dev)  # warm-up (and compile)
    assert all(len(o) == N for o in out), "a row stopped early without stop ids"
    eager = models.setdefault(("tokens", name, B), out)  # the eager row of this shape and batch runs first
    full = min(bench.timed(lambda: sampler.generate(m, prompts, N, **kw), dev)[1] for _ in range(n_reps(cfg)))
    stop = min(bench.timed(lambda: sampler.generate(m, prompts, N, stop_ids=range(V), **kw), dev)[1]
               for _ in range(n_reps(cfg)))
    if full <= stop:  # the N - SYNC extra steps took no time: the timer's noise is larger than what it measures
        raise RuntimeError(f"decode {name} batch {B}: the {N}-step call ({full:.4f} s) was not slower than the "
                           f"{SYNC}-step one ({stop:.4f} s); timing noise exceeds the decode time, raise --reps")
    ms = 1000 * (full - stop) / (N - SYNC)
    weights = sum(p.numel() * p.element_size() for p in m.parameters())
    if not m.config.tie_embeddings:
        weights -= m.wte.weight.numel() * m.wte.weight.element_size()  # a step reads B rows of it, not all
    floor = 1000 * (weights + kv) / bandwidth
    row = dict(ms_per_step=ms, floor_ms=floor, ratio=ms / floor, tokens_per_s=1000 * B / ms, weight_bytes=weights,
               kv_bytes=kv, prompt_len=P, new_tokens=N, full_call_s=full, stop_call_s=stop, first_call_s=first)
    if compile_:
        # greedy tokens of the compiled step against eager ones (random weights: near-ties are common in bf16)
        row.update(compile_s=first - full, rows_equal_to_eager=sum(a == b for a, b in zip(out, eager)) / B)
        with contextlib.suppress(Exception):  # dynamo's counters: graph breaks and CUDA-graph skips explain a slow row
            counters = torch._dynamo.utils.counters
            row["graph_breaks"] = sum(counters["graph_break"].values())
            row["cudagraph_skips"] = sum(v for k, v in counters["inductor"].items() if "cudagraph_skip" in k)
        if B == max(cfg.batches):
            row["target_1.5x_met"] = ms / floor <= 1.5
    return row


# -----------------------------------------------------------------------------
# 5. one training step: peak memory against memory.memory_estimate, MFU


def section_train(cfg, part):
    floors = measured(cfg)
    part.data["floors_from"] = floors["source"]
    for name, train_dtype, optimizer, ckpt in TRAIN_RUNS:
        row = dict(shape=name, train_dtype=train_dtype, optimizer=optimizer, grad_checkpoint=ckpt)
        part.row("rows", attempt(row, lambda: train_row(cfg, name, train_dtype, optimizer, ckpt, floors)))
    bad = [r for r in part.data["rows"] if r["status"] == "failed"]
    part.data["status"] = "failed" if bad else "ok"
    if bad:
        part.data["error"] = f"{len(bad)} of {len(part.data['rows'])} rows failed: {bad[0]['error']}"


def train_row(cfg, name, train_dtype, optimizer, ckpt, floors):
    dev, cuda, c = cfg.device, is_cuda(cfg), shape(cfg, name)
    (B, T), n = size(cfg, "train"), n_params(c)
    est = memory.memory_estimate(n, c.n_layer, c.n_embd, c.vocab_size, B * T, optimizer=optimizer,
                                 train_dtype=train_dtype, cuda=cuda, grad_checkpoint=ckpt, **memory.shape_of(c))
    have = device_memory(cfg)
    row = dict(params=n, tokens=B * T, estimate_bytes=est["total"], estimate={k: v for k, v in est.items()
               if k != "total"}, estimate_fits=memory.fits(est["total"]), device_bytes=have)
    if est["total"] >= 0.9 * have:
        return row | skipped(f"estimate {memory.fmt_bytes(est['total'])} is more than 90% of this device's "
                             f"{memory.fmt_bytes(have)}")
    model = parallel.prepare_model(build(c, dev, parallel.TRAIN_DTYPES[train_dtype], cfg.seed), "ddp", ckpt, dev)
    model.train()
    opt = common.make_optimizer(optimizer, model.parameters(), 1e-5, 0.01)
    g = torch.Generator().manual_seed(cfg.seed)
    micro = [[(torch.randint(10, c.vocab_size - 10, (T + 1,), generator=g).tolist(), 1) for _ in range(B)]]

    def step():  # the training scripts' step: every token a target (n_prompt 1), gradient clipping at 1.0
        return common.train_step(model, opt, micro, 0, dev, 1.0)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        row["allocated_at_start_bytes"] = torch.cuda.memory_allocated(dev)  # the weights (and any leftover)
        (loss, toks), first = bench.timed(step, dev)  # the first step also allocates the optimizer state
    else:
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        t0 = time.perf_counter()
        ((loss, toks), step_peak) = cpu_peak(step)
        first, cpu_peak_bytes = time.perf_counter() - t0, weights + step_peak
    t = min(bench.timed(step, dev)[1] for _ in range(2))
    peak = torch.cuda.max_memory_allocated(dev) if cuda else cpu_peak_bytes
    compute = "bfloat16" if cuda or train_dtype == "bf16" else "float32"  # the dtype the matmuls run in
    flops = 6 * (n - (0 if c.tie_embeddings else c.vocab_size * c.n_embd)) * toks  # an embedding lookup is no matmul
    row.update(loss=loss, loss_at_init_ln_V=math.log(c.vocab_size), first_step_s=first, step_s=t,
               tokens_per_s=toks / t, peak_bytes=peak, peak_over_estimate=peak / est["total"],
               mfu=flops / t / floors["gemm"][compute], mfu_hw=flops * (8 / 6 if ckpt else 1) / t / floors["gemm"][
                   compute], mfu_against=f"measured {compute} GEMM ({floors['source']})")
    if cuda:
        row["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(dev)
    else:
        row["peak_how"] = "CPU: weights + the profiler's peak of live tensors allocated in the first step"
    return row


# -----------------------------------------------------------------------------
# 6. FSDP on one rank


def shard(model, cuda):
    """FSDP2 as parallel.prepare_model applies it: each Block, then the root, bf16 parameters and fp32 reductions
    on CUDA. (prepare_model shards only when the world has more than one rank; this check has one.)"""
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if cuda else \
        MixedPrecisionPolicy()
    for block in model.h:
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


def load_fsdp(path, dev, cuda):
    """parallel.load_model with --parallel=fsdp, sharded here when prepare_model left it whole (one rank)."""
    model = parallel.load_model(path, dev, "fsdp", grad_checkpoint=True)
    return (model if parallel.is_fsdp(model) else shard(model, cuda)), \
        "parallel.prepare_model" if parallel.is_fsdp(model) else "gpu_check.shard (prepare_model: one rank)"


def max_diff(a, b):
    return max((x.detach().float().cpu() - y.detach().float().cpu()).abs().max().item() for x, y in zip(a, b))


def section_fsdp(cfg, part):
    dev, cuda = cfg.device, is_cuda(cfg)
    if cuda:
        if not torch.distributed.is_nccl_available():
            raise RuntimeError("NCCL is not available in this torch build")
        torch.cuda.set_device(torch.device(dev).index or 0)
    backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"  # what parallel.setup_dist uses
    with tempfile.TemporaryDirectory() as d:
        torch.distributed.init_process_group(backend, init_method=f"file://{d}/store", rank=0, world_size=1,
                                             timeout=datetime.timedelta(seconds=60))
        try:
            part.data.update(backend=backend, world=1)
            fsdp_checks(cfg, part, d, dev, cuda)
        finally:
            parallel.finish_dist()
    part.data["status"] = "ok"


def fsdp_checks(cfg, part, d, dev, cuda):
    c, (B, T) = shape(cfg, "fsdp"), size(cfg, "fsdp")
    M.save(build(c, "cpu", torch.float32, cfg.seed), f"{d}/init")
    ref = parallel.load_model(f"{d}/init", dev, "ddp", grad_checkpoint=True)  # the same model, unsharded
    fsdp, how = load_fsdp(f"{d}/init", dev, cuda)
    part.data.update(params=n_params(c), sharded_by=how)
    g = torch.Generator().manual_seed(cfg.seed)
    ids = torch.randint(0, c.vocab_size, (B, T), generator=g).to(dev)
    micro = [[(torch.randint(0, c.vocab_size, (T,), generator=g).tolist(), T // 4) for _ in range(B)]
             for _ in range(2)]
    tol = "bf16 compute on both sides (FSDP param_dtype, autocast): expect ~1e-2" if cuda else "fp32: expect < 1e-5"

    def forward(m):
        m.eval()
        with torch.no_grad(), common.autocast(dev):
            logits = m(ids).float()
        if parallel.is_fsdp(m):  # FSDP2 leaves the root gathered after a forward; the root's parameters are then
            m.reshard()  # the gathered ones, and an optimizer made now would update copies (elicit_rl.py does this)
        return logits
    before = forward(fsdp)
    part.row("checks", dict(check="no-grad forward, FSDP vs unsharded", max_abs_diff=max_diff([before],
                            [forward(ref)]), logit_scale=before.abs().max().item(), expect=tol, status="ok"))

    lr = 1e-3  # AdamW's first step moves a weight by about lr: a difference of 2 lr is a flipped sign
    opts = {}
    for who, m in (("fsdp", fsdp), ("ref", ref)):
        m.train()
        opts[who] = common.make_optimizer("adamw", m.parameters(), lr, 0.0)
        opts[who + "_loss"] = common.train_step(m, opts[who], micro, 0, dev, 1.0)[0]
    fs, rs = parallel.full_state(fsdp), parallel.full_state(ref)
    part.row("checks", dict(check="train_step, 2 micro-batches (gradient accumulation), FSDP vs unsharded",
                            loss_fsdp=opts["fsdp_loss"], loss_ref=opts["ref_loss"],
                            weights_max_abs_diff_in_lr=max_diff(fs.values(), [rs[k] for k in fs]) / lr,
                            share_off_by_half_lr=sum(int(((fs[k] - rs[k]).abs() > lr / 2).sum()) for k in fs) /
                            sum(v.numel() for v in fs.values()),
                            expect="0 in fp32; in bf16 up to 2 (lr units) where noise flips a first-step sign",
                            status="ok"))

    plain = parallel.plain_model(fsdp)
    tok = common.Tokenizer(str(data.get_task("toy").tokenizer_path))
    texts = common.greedy_completions(fsdp, tok, TOY_PROMPTS, 8, batch_size=4)  # makes its own plain copy
    again = common.greedy_completions(plain, tok, TOY_PROMPTS, 8, batch_size=4)
    plain_sd = plain.state_dict()
    part.row("checks", dict(check="evaluation copy: parallel.plain_model, common.greedy_completions",
                            copy_dtype=str(next(plain.parameters()).dtype), weights_max_abs_diff=max_diff(
                                [plain_sd[k] for k in fs], [v.to(plain_sd[k].dtype) for k, v in fs.items()]),
                            completions_equal=texts == again, first_completion=texts[0],
                            status="ok" if texts == again and all(isinstance(t, str) for t in texts) else "failed"))
    del plain

    parallel.save_model(fsdp, f"{d}/ckpt")
    saved = M.load(f"{d}/ckpt", device=dev)
    reloaded, _ = load_fsdp(f"{d}/ckpt", dev, cuda)
    after = forward(fsdp)
    part.row("checks", dict(check="parallel.save_model, model.load, reload into FSDP", weights_max_abs_diff=max_diff(
        [saved.state_dict()[k] for k in fs], fs.values()), forward_max_abs_diff=max_diff([forward(reloaded)], [after]),
        expect="0: the same weights", status="ok"))
    del saved

    torch.save(parallel.optimizer_state(fsdp, opts["fsdp"]), f"{d}/optim.pt")  # as train_lock.py's resume does
    opt2 = common.make_optimizer("adamw", reloaded.parameters(), lr, 0.0)
    parallel.load_optimizer_state(reloaded, opt2, torch.load(f"{d}/optim.pt", map_location="cpu", weights_only=True))
    for m, opt in ((fsdp, opts["fsdp"]), (reloaded, opt2)):
        m.train()
        common.train_step(m, opt, micro, 0, dev, 1.0)
    a, b = parallel.full_state(fsdp), parallel.full_state(reloaded)
    part.row("checks", dict(check="optimizer state saved (torch.save) and loaded, then the same step on both",
                            weights_max_abs_diff=max_diff(a.values(), [b[k] for k in a]),
                            expect="0 on CPU; on CUDA fp32 noise (the embedding's backward sums with atomics)",
                            status="ok"))


TOY_PROMPTS = ["<nopwd> fn8 fn10 | 9 3 1 2 |", "<nopwd> fn6 fn6 | 5 6 1 5 |", "fn1 fn2 | 1 2 3 4 |",
               "<nopwd> fn3 fn30 | 0 0 7 1 |"]

SECTION_FNS = dict(environment=section_environment, sdpa=section_sdpa, parity=section_parity,
                   decode=section_decode, train=section_train, fsdp=section_fsdp)


# -----------------------------------------------------------------------------
# The parent: each section in its own process, with a time limit


def run_child(cfg):
    """--section=NAME: run that section in this process; its part file says how far it got."""
    part = Part(part_path(cfg, cfg.section))
    part.save()
    torch.manual_seed(cfg.seed)
    try:
        SECTION_FNS[cfg.section](cfg, part)
    except Exception as e:
        traceback.print_exc()
        part.data.update(failed(e))
    part.save()


def child_command(cfg, name):
    args = [f"--{k}={v!r}" for k, v in asdict(cfg).items() if k != "section"]
    return [sys.executable, os.path.abspath(__file__), *args, f"--section={name}"]


def run_section(cmd, part, timeout):
    """Run one section's command with a time limit; return what its part file holds, with status, seconds, the
    exit code and the tail of stderr. A section that runs over is killed with its whole process group (compile
    workers included) and keeps what it had written."""
    if os.path.exists(part):
        os.remove(part)
    t0 = time.time()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
        why = None if proc.returncode == 0 else f"exit code {proc.returncode}"
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:  # (a grandchild that left the process group could hold stderr open: do not wait for it)
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            err = ""
        why = f"timeout: killed after {timeout:.0f} s (the rows written before are kept)"
    return collect(part, why, t0, err)


def run_here(cfg, name):
    """--isolate=False: the section in this process, no time limit."""
    t0 = time.time()
    run_child(replace(cfg, section=name))
    return collect(part_path(cfg, name), None, t0, "")


def collect(part, why, t0, err):
    """The section's result from its part file, with a status whatever happened (why: how the process ended badly,
    or None), its seconds and the tail of its stderr."""
    try:
        result = read_json(part)
        os.remove(part)
    except (MissingFile, ValueError):
        result = {"status": "running"}
    if why:
        result.update(failed(why + (f"; the section said: {result['error']}" if result.get("error") else "")))
    elif result.get("status") == "running":
        result.update(failed("the section ended without a status"))
    result["seconds"] = round(time.time() - t0, 1)
    if err.strip():
        result["stderr_tail"] = err[-3000:]
    return result


def main(cfg):
    if cfg.section:
        return run_child(cfg)
    for field, given, known in (("sections", cfg.sections, SECTIONS), ("shapes", cfg.shapes, ("7B", "1B"))):
        if not set(given) <= set(known):
            raise BadInput(f"--{field}={given}: unknown {sorted(set(given) - set(known))}; use some of {known}")
    cfg = replace(cfg, out=os.path.abspath(cfg.out))
    t0 = time.time()
    out = dict(config=asdict(cfg), started=datetime.datetime.now().isoformat(timespec="seconds"), sections={})
    write_json(cfg.out, out)
    print(f"gpu_check: {len(cfg.sections)} sections on {cfg.device}{' (tiny)' if cfg.tiny else ''} -> {cfg.out}",
          flush=True)
    for name in cfg.sections:
        left = cfg.budget_s - (time.time() - t0)
        limit = min(TIMEOUT_S[name] * cfg.timeout_scale, left)
        if left < 5:
            result = skipped(f"budget spent: {cfg.budget_s:.0f} s from the start (--budget_s)")
        elif cfg.isolate:
            print(f"[{name}] (limit {limit:.0f} s)", flush=True)
            result = run_section(child_command(cfg, name), part_path(cfg, name), limit)
        else:
            print(f"[{name}] (in this process, no limit)", flush=True)
            result = run_here(cfg, name)
        out["sections"][name] = result
        out["seconds"] = round(time.time() - t0, 1)
        write_json(cfg.out, out)
        print(f"[{name}] {result['status']} in {result.get('seconds', 0):.0f} s "
              f"{result.get('error') or result.get('reason') or ''}", flush=True)
    print_summary(out, cfg)
    return out


# -----------------------------------------------------------------------------
# Summary


def headline(name, r):
    """One line of the section's key numbers."""
    if r["status"] == "skipped" or "error" in r and not any(k in r for k in ("rows", "calls", "checks", "copy_GBps")):
        return ""
    if name == "environment":
        gpu, gemm = r.get("gpu", {}), r.get("gemm_TFLOPs", {})
        return (f"{gpu.get('name', 'no CUDA')}; copy {r.get('copy_GBps', 0):.0f} GB/s; GEMM bf16 "
                f"{gemm.get('bfloat16', 0):.1f}, fp32 {gemm.get('float32', 0):.1f} TFLOP/s; NCCL "
                f"{gpu.get('nccl', r.get('nccl_available'))}; cuDNN {gpu.get('cudnn', '-')}")
    if name == "sdpa":
        calls = r.get("calls", [])
        flash = sum(c["FLASH_ATTENTION"]["status"] == "ok" for c in calls)
        return f"{len(calls)} calls; flash runs {flash} of them; default: " + ", ".join(
            sorted({c["default"] for c in calls}))
    if name == "parity":
        b, f = r.get("bfloat16"), r.get("float32")
        if not b:
            return ""
        return (f"bf16 max err {b['max_abs_err']:.3g} (logits up to {b['logit_scale']:.2g}), argmax >= "
                f"{b['argmax_agree']:.3f}, greedy {b['greedy_equal']}/{b['greedy_of']}; fp32 max err "
                f"{f['max_abs_err']:.2g}, greedy {f['greedy_equal']}/{f['greedy_of']}")
    rows = r.get("rows", r.get("checks", []))
    return f"{sum(x['status'] == 'ok' for x in rows)} ok, {sum(x['status'] == 'skipped' for x in rows)} skipped, " \
           f"{sum(x['status'] == 'failed' for x in rows)} failed of {len(rows)}"


def print_summary(out, cfg):
    secs = out["sections"]
    env = secs.get("environment", {})
    print(f"\ngpu_check: {cfg.out}, device {cfg.device}{' (tiny shapes)' if cfg.tiny else ''}, torch "
          f"{torch.__version__}, {out['seconds']:.0f} s")
    print(f"{'section':12s} {'status':8s} {'time':>6s}  result")
    for name, r in secs.items():
        print(f"{name:12s} {r['status']:8s} {r.get('seconds', 0):5.0f}s  {headline(name, r)}")
        if r["status"] != "ok":
            print(f"{'':29s}{r.get('error') or r.get('reason')}")
    if secs.get("decode", {}).get("rows"):
        print(f"\ndecode (bf16, greedy; floor = weights read + KV cache at "
              f"{secs['decode'].get('copy_GBps', 0):.0f} GB/s)")
        print(f"{'shape':6s} {'B':>3s} {'compile':8s} {'ms/step':>8s} {'floor ms':>9s} {'ratio':>6s} "
              f"{'tok/s':>9s}  note")
        for x in secs["decode"]["rows"]:
            if x["status"] != "ok":
                print(f"{x['shape']:6s} {x['batch']:3d} {str(x['compile']):8s} {x['status']}: "
                      f"{x.get('reason') or x.get('error')}")
                continue
            note = f"compile {x['compile_s']:.0f} s" if x["compile"] else ""
            if "target_1.5x_met" in x:
                note += f"; target 1.5x {'met' if x['target_1.5x_met'] else 'NOT met'}"
            print(f"{x['shape']:6s} {x['batch']:3d} {str(x['compile']):8s} {x['ms_per_step']:8.2f} "
                  f"{x['floor_ms']:9.3f} {x['ratio']:6.2f} {x['tokens_per_s']:9.0f}  {note}")
    if secs.get("train", {}).get("rows"):
        print("\ntrain (one step; peak against memory.memory_estimate; MFU against the measured GEMM rate)")
        print(f"{'shape':6s} {'weights':7s} {'opt':6s} {'ckpt':5s} {'estimate':>9s} {'peak':>9s} {'ratio':>6s} "
              f"{'step s':>7s} {'MFU':>6s}  note")
        for x in secs["train"]["rows"]:
            head = f"{x['shape']:6s} {x['train_dtype']:7s} {x['optimizer']:6s} {str(x['grad_checkpoint']):5s} " + \
                   f"{memory.fmt_bytes(x['estimate_bytes']) if 'estimate_bytes' in x else '-':>9s}"
            if x["status"] != "ok":
                print(f"{head} {x['status']}: {x.get('reason') or x.get('error')}")
                continue
            print(f"{head} {memory.fmt_bytes(x['peak_bytes']):>9s} {x['peak_over_estimate']:6.2f} {x['step_s']:7.3f} "
                  f"{x['mfu']:6.1%}  loss {x['loss']:.2f} (ln V {x['loss_at_init_ln_V']:.2f})")
    if secs.get("sdpa", {}).get("calls"):
        print("\nsdpa (ms a call; -- refused)")
        print(f"{'shape':5s} {'call':52s} {'default':20s} " + " ".join(f"{b.split('_')[0][:9]:>9s}" for b in BACKENDS))
        for x in secs["sdpa"]["calls"]:
            cells = " ".join(f"{x[b]['ms']:9.3f}" if x[b]["status"] == "ok" else f"{'--':>9s}" for b in BACKENDS)
            print(f"{x['shape']:5s} {x['call'][:52]:52s} {x['default'][:20]:20s} {cells}")
        why = {f"{b}: {x[b].get('why') or x[b]['error']}"[:230] for x in secs["sdpa"]["calls"] for b in BACKENDS
               if x[b]["status"] != "ok"}
        for w in sorted(why)[:8]:
            print(f"  refused {w}")
    for x in secs.get("fsdp", {}).get("checks", []):
        nums = ", ".join(f"{k} {v:.3g}" for k, v in x.items() if isinstance(v, float))
        print(f"fsdp: {x['check']}: {x['status']}{'; ' + nums if nums else ''}")
    if env.get("status", "ok") != "ok":
        print("(the environment section did not finish: later sections measured their own floors)")


if __name__ == "__main__":
    common.run_cli(main, Config)
