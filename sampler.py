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
The command line that writes policy samples to JSONL is sample.py.
"""
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
