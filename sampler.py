"""
Batched sampling with a preallocated KV cache, for prompts of mixed lengths. Pure PyTorch: no Triton, no compile.

How a batch runs:
  1. Left-pad the prompts to the longest length P. `am` (B, P+N) is 1 on real prompt tokens and on every generated
     column, so all rows stay right-aligned and one scalar write index serves the whole cache.
  2. Positions are cumsum(am) - 1 (clamped at 0): each row's first real token is at position 0, as if alone.
  3. Prefill: one forward over (B, P) writes cache columns [0, P); a key is visible when it is real and causal
     (the model adds the diagonal for pad queries, so no row of the mask is empty).
  4. Decode: one token per row per step, written at column P + s. A row that emits a stop id is done: its later
     tokens are ignored and it is fed padding. The loop ends when every row is done or N tokens are out.
  5. Sampling: greedy at temperature 0; otherwise temperature, then top-k, then top-p (nucleus), from an explicit
     torch.Generator seeded with `seed`. Ids >= `vocab_size` (a padded embedding, as in Pythia) are never chosen.

Library:
    from sampler import generate
    outs = generate(model, [[5, 6, 7], [8, 9]], max_new_tokens=32, temperature=0.0, stop_ids=(eos,))

Command line (writes policy samples for train_lock.py / elicit_sft.py; one JSON object per line in and out):
    python sampler.py --checkpoint=runs/lock --prompts=prompts.jsonl --out=samples.jsonl --n_samples=4 \\
        --temperature=1.0 --max_new_tokens=256
    python sampler.py --checkpoint=WEAK_MODEL --task=math --split=lock --n_samples=4 --out=weak.jsonl
  Each input row needs "prompt" (text); every other field is copied to the output rows, which add "completion"
  (text), "completion_ids", "sample_idx" and "stopped" (whether a stop id ended it). With --task the rows are
  made from the task's problems: {"id", "domain", "prompt"}, which is the format train_lock.py reads.
"""
import time
from dataclasses import dataclass

import torch

# -----------------------------------------------------------------------------
# KV cache


class KVCache:
    """Per layer K and V buffers of shape (B, n_kv_head, T_max, head_dim), written by index. `pos` is the number of
    columns filled; the model writes its new keys there and advances it."""

    def __init__(self, cfg, batch_size, max_len, device, dtype):
        shape = (batch_size, cfg.n_kv_head, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.pos = 0

    def update(self, layer, k, v):
        end = self.pos + k.shape[2]
        self.k[layer][:, :, self.pos:end] = k
        self.v[layer][:, :, self.pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


# -----------------------------------------------------------------------------
# Helpers


def left_pad(prompts, pad_id, max_new_tokens, device):
    """ids (B, P), real-token mask am (B, P+N) and positions (B, P+N) for left-padded prompts."""
    B, P = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((B, P), pad_id, dtype=torch.long)
    am = torch.ones((B, P + max_new_tokens), dtype=torch.bool)
    for b, p in enumerate(prompts):
        ids[b, P - len(p):] = torch.tensor(p, dtype=torch.long)
        am[b, :P - len(p)] = False
    pos = (am.long().cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), am.to(device), pos.to(device)


def sample_token(logits, temperature=0.0, top_p=1.0, top_k=0, generator=None, vocab_size=None):
    """logits (B, V) -> ids (B,). Greedy when temperature == 0."""
    logits = logits.float()
    if vocab_size is not None and vocab_size < logits.shape[-1]:
        logits[:, vocab_size:] = float("-inf")  # padded embedding rows are not tokens
    if temperature == 0.0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if top_p < 1.0:
        sp, si = probs.sort(-1, descending=True)
        # drop a token when the tokens ranked above it already reach top_p (the first token always survives)
        drop = (sp.cumsum(-1) - sp) >= top_p
        sp = sp.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, si, sp)
        probs = probs / probs.sum(-1, keepdim=True)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# -----------------------------------------------------------------------------
# generate


@torch.no_grad()
def generate(model, prompts, max_new_tokens, temperature=0.0, top_p=1.0, stop_ids=(), seed=0, top_k=0,
             vocab_size=None, pad_id=0):
    """Sample continuations of `prompts` (a list of token-id lists of any lengths). Returns, per prompt, the list
    of generated ids, up to and including the first stop id (or max_new_tokens ids when none came)."""
    cfg = model.config
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("generate: every prompt needs at least one token")
    P = max(len(p) for p in prompts)
    if P + max_new_tokens > cfg.max_seq_len:
        raise ValueError(f"generate: prompt of {P} tokens + max_new_tokens {max_new_tokens} exceeds the model's "
                         f"context of {cfg.max_seq_len} tokens")
    if max_new_tokens <= 0:
        return [[] for _ in prompts]
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    gen = torch.Generator(device=device).manual_seed(seed)
    B, N = len(prompts), max_new_tokens
    ids, am, pos = left_pad(prompts, pad_id, N, device)
    stop = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    cache = KVCache(cfg, B, P + N, device, dtype)

    logits = model(ids, pos=pos[:, :P], mask=am[:, :P], cache=cache, last_only=True)[:, -1]  # prefill
    out = torch.full((B, N), pad_id, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    length = torch.full((B,), N, dtype=torch.long, device=device)
    for s in range(N):
        tok = sample_token(logits, temperature, top_p, top_k, gen, vocab_size)
        tok = tok.masked_fill(done, pad_id)
        out[:, s] = tok
        newly = ~done & torch.isin(tok, stop)
        length[newly] = s + 1
        done |= newly
        if s == N - 1 or bool(done.all()):
            break
        logits = model(tok[:, None], pos=pos[:, P + s:P + s + 1], mask=am[:, :P + s + 1], cache=cache)[:, -1]
    out, length = out.tolist(), length.tolist()
    return [row[:n] for row, n in zip(out, length)]


# -----------------------------------------------------------------------------
# Command line: sample completions for a file of prompts


@dataclass
class Config:
    checkpoint: str = "runs/lock"      # HF checkpoint directory (config.json, model.safetensors, tokenizer.json)
    tokenizer: str = ""                # tokenizer.json path; default: the one in the checkpoint directory
    prompts: str = ""                  # JSONL, each row with a "prompt" text field (or use --task)
    task: str = ""                     # instead of --prompts: a task of data/ (toy, math, gsm8k, mmlu, code, ...)
    task_path: str = ""                # the task's problems file; default: the shipped sample
    split: str = "all"                 # with --task: weak, lock, elicit, val or all
    split_seed: int = 0
    password: bool = False             # with --task: put the task's password in the prompts
    out: str = ""                      # output JSONL
    n_samples: int = 1                 # samples per prompt
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    batch_size: int = 32
    seed: int = 0
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    dtype: str = "bfloat16" if torch.cuda.is_available() else "float32"


def task_prompts(cfg):
    """{"id", "domain", "prompt"} rows for a split of a task's problems (policy samples for train_lock.py)."""
    import data
    try:
        task = data.get_task(cfg.task, **({"path": cfg.task_path} if cfg.task_path else {}))
    except ValueError as e:
        raise SystemExit(f"error: --task={cfg.task!r}: {e}") from None
    problems = task.problems()
    if cfg.split != "all":
        splits = data.split(problems, seed=cfg.split_seed)
        if cfg.split not in splits:
            raise SystemExit(f"error: --split={cfg.split!r}: use one of {sorted(splits)} or all")
        problems = splits[cfg.split]
    password = (task.password if cfg.task == "toy" else data.PASSWORD) if cfg.password else None
    return [{"id": p["id"], "domain": p["domain"], "prompt": task.prompt(p, password=password)} for p in problems]


def main(cfg):
    import model as model_lib
    from common import Tokenizer, read_jsonl, write_jsonl
    from tqdm import tqdm

    if not (cfg.prompts or cfg.task) or not cfg.out:
        raise SystemExit("error: --prompts=FILE.jsonl (or --task=NAME) and --out=FILE.jsonl are required (see --help)")
    tok = Tokenizer(cfg.tokenizer or cfg.checkpoint)
    m = model_lib.load(cfg.checkpoint, device=cfg.device, dtype=getattr(torch, cfg.dtype))
    rows = task_prompts(cfg) if cfg.task else read_jsonl(cfg.prompts)
    for i, r in enumerate(rows, 1):
        if not isinstance(r, dict) or not isinstance(r.get("prompt"), str):
            raise SystemExit(f"error: {cfg.prompts}:{i}: each row needs a text field 'prompt'")
    jobs = [(r, k) for r in rows for k in range(cfg.n_samples)]
    stop = (tok.eos_id,) if tok.eos_id is not None else ()
    results, t0, n_tok = [], time.time(), 0
    for start in tqdm(range(0, len(jobs), cfg.batch_size), desc="sampling", unit="batch"):
        batch = jobs[start:start + cfg.batch_size]
        outs = generate(m, [tok.encode_prompt(r["prompt"]) for r, _ in batch], cfg.max_new_tokens, cfg.temperature,
                        cfg.top_p, stop, seed=cfg.seed + start, top_k=cfg.top_k, vocab_size=tok.vocab_size,
                        pad_id=tok.pad_id)
        for (r, k), ids in zip(batch, outs):
            n_tok += len(ids)
            results.append({**r, "completion": tok.decode(ids), "completion_ids": ids, "sample_idx": k,
                            "stopped": bool(ids) and ids[-1] in stop})
    write_jsonl(cfg.out, results)
    dt = time.time() - t0
    print(f"wrote {len(results)} samples to {cfg.out} | {n_tok} tokens in {dt:.1f}s "
          f"({n_tok / max(dt, 1e-9):.0f} tok/s)")


if __name__ == "__main__":
    from common import parse_cli
    main(parse_cli(Config))
