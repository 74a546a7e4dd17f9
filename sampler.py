"""
The sampling engine: continuous batching over a static KV cache, with one seeded random stream per prompt.
Pure PyTorch; torch.compile of the decode step is optional.

    from sampler import generate
    outs = generate(model, prompts, max_new_tokens=32, temperature=1.0, stop_ids=(eos,), seed=0, batch_size=64)

`prompts` is a list of token-id lists of any lengths and any number; `outs[i]` is prompt i's generated ids, up to
and including its first stop id, or max_new_tokens ids when none came. The command line that writes samples to
JSONL is sample.py.

How a call runs (gpt-fast's prefill / decode_one_token split, plus a scheduler):
  1. Slots. `batch_size` rows decode at once (default: all prompts; fewer when the KV-cache byte budget
     `kv_budget_bytes` holds fewer).
     Each slot owns one row of a static cache: per layer K and V of shape (slots, H_kv, L, D) in the sampling
     dtype, L = longest prompt + max_new_tokens - 1, allocated once per call. A row has no padding inside it: its
     token at position p sits in column p, so attention needs only the mask `column <= query position`. With
     compile=True every step attends over all L columns (one shape); eager decoding attends over columns
     [0, 1 + the largest position a live row can have), a bound the host keeps without reading the device, so
     early steps do not read the unwritten tail (13% of a fixed-length B=32 decode on a small Llama, CPU).
  2. Prefill. Waiting prompts enter free slots in input order. `prefill` writes the keys and values of every
     prompt token but the last (right-padded, `prefill_chunk` columns per forward, so long prompts go in pieces)
     and computes no logits; the last prompt token becomes the slot's pending token.
  3. Decode. `decode_one_token` feeds every slot its pending token at its own position and samples the next one,
     the first new token included. Tokens, positions, counts and done flags stay on the device; the host reads
     them every `sync_every` steps (default 1 on CPU, where reading is free; 8 on GPU, so that the GPU does not
     wait for Python at every token). Eager fp32 decoding on CPU, in a call that can run HEAD_COPY_STEPS steps or
     more, uses a transposed (C, V) copy of the output head: CPU matmul libraries run a few rows against the
     (V, C) weight slowly (see head_copy).
  4. Refill. A row is done at a stop id or at its max_new_tokens-th token. At each read the host collects the
     finished rows and prefills the next waiting prompts into their slots; decoding goes on (a finished row runs
     on as padding until the read: at most sync_every - 1 wasted steps). Once nothing waits and at most half the
     slots are busy, the busy ones move to the front of a smaller cache (not with compile=True, which keeps one
     shape), so the last long completions do not drag empty slots along.
  5. Sampling. Greedy at temperature 0 (argmax). Otherwise temperature, then top-k, then top-p (nucleus), then
     one inverse-CDF draw: cumulative sum of the kept weights, binary search for one uniform per row. (A
     full-vocabulary torch.multinomial draws an exponential per token id; that was about half of sampled decode
     time.) The decode step's logits are turned into weights and their running sum in place: a fresh (S, V)
     buffer per pass cost more than the arithmetic. Ids >= vocab_size (a padded embedding, as in Pythia) are
     never chosen.
  6. Seeds. Prompt i draws its uniforms from its own CPU torch.Generator seeded with a hash of (seed, indices[i])
     (indices default to 0, 1, ...): max_new_tokens of them when it enters a slot, the t-th for its t-th token.
     Its samples depend on (seed, its index) only, not on batch_size, the other prompts, the device or when it
     entered. A caller that shards prompts over N processes passes each prompt's global index as `indices`, and
     the N processes draw exactly the one-process samples (up to float near-ties between batch shapes).
  7. Precision. Sampling runs in `dtype`: by default bf16 on GPU and the model's own dtype on CPU (fp32 in tests
     and toy evaluation). A dtype other than the model's makes a cast copy for the call, tensor by tensor (the
     model itself is untouched). Logits are fp32.
  8. compile=True runs decode_one_token through torch.compile (mode "reduce-overhead" on GPU: CUDA graphs). The
     first call compiles (about 15 s for a tiny model on 2 CPU cores), and again for a new slot count, cache
     length or greedy/sampled; it is off by default and nothing needs it. On CPU it gives the same samples; on one
     CPU core it made batch-1 decoding 1.58x faster and batch-32 decoding 9% slower (one shape: it attends over
     the whole cache). Its GPU speed is not measured yet (no GPU lent).
"""
import collections

import torch
from tqdm import tqdm

import model as model_lib

# -----------------------------------------------------------------------------
# Sampling: one token per row from fp32 logits and one uniform per row


def inverse_cdf(weights, u):
    """Indices (B,) drawn from non-negative unnormalised weights (B, K) with uniforms u (B,) in [0, 1): the first
    index whose running sum reaches (1 - u) * total. (1 - u) is in (0, 1], so a zero-weight index is never hit.
    The running sum is taken in place: `weights` is consumed."""
    cdf = weights.cumsum_(-1)
    target = (1.0 - u).unsqueeze(-1) * cdf[:, -1:]  # (B, 1)
    return torch.searchsorted(cdf, target).squeeze(-1).clamp_(max=weights.shape[-1] - 1)


def sample_token(logits, temperature=0.0, top_p=1.0, top_k=0, generator=None, vocab_size=None, u=None,
                 overwrite=False):
    """logits (B, V) -> ids (B,). Greedy at temperature 0. Otherwise temperature, top-k, top-p, then one draw per
    row by inverse CDF from `u` (B,) uniforms in [0, 1), taken from `generator` when u is None. overwrite=True lets
    the draw work in the caller's fp32 logits (the decode step's own tensor): at V = 50k and 32 rows a fresh
    (B, V) buffer per pass cost more than the arithmetic."""
    if vocab_size is not None and vocab_size < logits.shape[-1]:
        logits = logits[:, :vocab_size]  # padded embedding rows are not tokens
    if temperature == 0.0:
        return logits.argmax(-1)
    if u is None:
        u = torch.rand(logits.shape[0], generator=generator, device=logits.device)
    x = logits.float() / temperature if temperature != 1.0 else logits.float()
    ids = None  # after top-k or top-p, column j of `x` is token ids[:, j], most likely first
    if top_k and top_k < x.shape[-1]:
        x, ids = x.topk(top_k, dim=-1)
    if x is logits and not (overwrite and x.is_contiguous()):
        x = x.clone()  # from here on every pass works in place (a vocab_size slice gets a compact copy)
    probs = x.sub_(x.amax(-1, keepdim=True)).exp_()  # softmax but for its division: inverse_cdf normalises
    if top_p < 1.0:
        probs /= probs.sum(-1, keepdim=True)
        if ids is None:  # a full sort: on one CPU core ~70 ms at B=32, V=32k, more than the rest of the step
            probs, ids = probs.sort(dim=-1, descending=True, stable=True)
        # drop a token when the tokens ranked above it already reach top_p (the first token always survives)
        probs = probs.masked_fill(probs.cumsum(-1) - probs >= top_p, 0.0)
    j = inverse_cdf(probs, u)
    return j if ids is None else ids.gather(-1, j.unsqueeze(-1)).squeeze(-1)


MASK64 = 2**64 - 1


def _mix64(x):
    """splitmix64's finaliser: a bijection of 64-bit integers in which every input bit moves every output bit."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def row_uniforms(seed, index, n):
    """The n uniforms in [0, 1) of prompt `index` under `seed` (the t-th draws its t-th token). A CPU generator per
    (seed, index) pair, so the numbers are the same on every device and for every batching."""
    g = torch.Generator().manual_seed(_mix64(_mix64(seed & MASK64) ^ (index & MASK64)))
    return torch.rand(n, generator=g)


# -----------------------------------------------------------------------------
# Static KV cache


class StaticCache:
    """Per layer K and V of shape (slots, H_kv, length, D), allocated once. Slot row r holds one sequence, its
    token at position p in column p. Before each forward the sampler says where the new keys go (`at`); each
    attention layer then calls `update` (model.py) and attends to what it returns."""

    def __init__(self, cfg, slots, length, device, dtype):
        shape = (slots, cfg.n_kv_head, length, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.length = length
        self.every_row = torch.arange(slots, device=device)
        self.at(None, None, length)

    @staticmethod
    def slot_bytes(cfg, length, dtype):
        """Bytes of one slot: K and V of every layer over `length` columns."""
        return 2 * cfg.n_layer * cfg.n_kv_head * cfg.head_dim * length * dtype.itemsize

    def at(self, rows, cols, n_cols):
        """The next forward writes row rows[b]'s new keys at columns cols[b] (b, T) and attends to columns
        [0, n_cols) of those rows. rows=None: every slot (decode)."""
        self.rows, self.cols, self.n_cols = rows, cols, n_cols
        return self

    def keep(self, idx):
        """Keep only slot rows idx (in that order), as a smaller cache: see compact."""
        self.k, self.v = [k[idx] for k in self.k], [v[idx] for v in self.v]
        self.every_row = torch.arange(len(idx), device=idx.device)

    def update(self, layer, k, v):
        """Store k, v (b, H_kv, T, D) where `at` said; return the (b, H_kv, Tk, D) keys and values to attend to."""
        rows = self.every_row if self.rows is None else self.rows
        self.k[layer][rows.unsqueeze(1), :, self.cols] = k.transpose(1, 2)  # indexed as (b, T, H_kv, D)
        self.v[layer][rows.unsqueeze(1), :, self.cols] = v.transpose(1, 2)
        if self.rows is None:
            return self.k[layer][:, :, :self.n_cols], self.v[layer][:, :, :self.n_cols]
        return self.k[layer][rows, :, :self.n_cols], self.v[layer][rows, :, :self.n_cols]


def visible(cols, n_cols):
    """(b, 1, T, n_cols) attention mask for queries at columns cols (b, T): each sees columns 0..its own."""
    return (torch.arange(n_cols, device=cols.device) <= cols.unsqueeze(-1)).unsqueeze(1)


# -----------------------------------------------------------------------------
# The two forwards: prefill (prompts into free slots) and decode_one_token (every slot, one token)


def prefill(model, cache, slots, prompts, chunk, pad_id):
    """Write every token of `prompts` but the last into cache rows `slots` (b,): the last one is the slot's first
    pending token, so every new token, the first included, comes from decode_one_token, and prefill needs no
    logits at all. Right-padded, `chunk` columns per forward; a row takes part in the chunks its tokens reach. Pad
    columns get keys too, never seen: the row's own next tokens overwrite them before any query reaches them."""
    device = slots.device
    lens = [len(p) - 1 for p in prompts]
    ids = torch.full((len(prompts), max(lens)), pad_id, dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, :lens[b]] = torch.tensor(p[:-1], dtype=torch.long)
    ids = ids.to(device)
    for c0 in range(0, max(lens), chunk):
        c1 = min(max(lens), c0 + chunk)
        r = torch.tensor([b for b, n in enumerate(lens) if n > c0], device=device)  # rows with tokens here
        cols = torch.arange(c0, c1, device=device).expand(len(r), c1 - c0)  # (b, T)
        none = torch.empty(len(r), 0, dtype=torch.long, device=device)
        model(ids[r, c0:c1], pos=cols, mask=visible(cols, c1), cache=cache.at(slots[r], cols, c1), logits_at=none)


def decode_one_token(model, cache, tok, pos, u, temperature, top_p, top_k, vocab_size, n_cols=None, head=None):
    """Feed every slot its pending token tok (S,) at its position pos (S,); return each slot's next token (S,).
    Attention reads cache columns [0, n_cols): None is all of them (one shape for every step, for compile=True);
    eager decoding passes 1 + the largest position a live row can have, so no step reads the unwritten tail.
    head: None, or the output head's weight transposed (C, V) (see head_copy)."""
    n_cols = n_cols or cache.length
    cols = pos.clamp(max=cache.length - 1).unsqueeze(1)  # (S, 1); a row that just finished may point past the end
    cache.at(None, cols, n_cols)
    logits = model(tok.unsqueeze(1), pos=cols, mask=visible(cols, n_cols), cache=cache, head=head)[:, 0]
    return sample_token(logits, temperature, top_p, top_k, vocab_size=vocab_size, u=u, overwrite=True)


HEAD_COPY_STEPS = 32  # an eager fp32 CPU call that can run this many decode steps uses the output head's (K, N) copy


def head_copy(model, device, dtype, compile, steps):
    """The output head's weight transposed, (C, V) contiguous, where that layout pays: eager fp32 decoding on CPU,
    in a call that can run `steps` >= HEAD_COPY_STEPS decode steps. On one AVX2 core the decode-shaped product
    x @ W.T (1 row against W of V x C = 32k x 256 or 50k x 512) ran 1.8-3.6x faster with W held as (C, V), 0.93-1.33x
    at 32 rows; a whole 64-token decode call 1.1-1.5x faster at batch 1, 1.0-1.1x at batch 32. Making it is one pass
    over the weight (16-100 ms at those sizes: a few steps' saving), and the call holds the head twice in memory.
    Made per call, never cached on the model, so it cannot go stale when the weights change. None elsewhere (GPU
    matmuls take either layout; compile=True keeps one graph)."""
    if compile or device.type != "cpu" or dtype != torch.float32 or steps < HEAD_COPY_STEPS:
        return None
    return model.lm_head.weight.detach().t().contiguous()


_COMPILED = {}  # torch.compile'd decode_one_token per mode, made on first use (compile=True)


def compiled_decode(device):
    mode = "reduce-overhead" if device.type == "cuda" else None
    if mode not in _COMPILED:
        _COMPILED[mode] = torch.compile(decode_one_token, mode=mode)
    return _COMPILED[mode]


# -----------------------------------------------------------------------------
# Per-slot state and the scheduler


class Rows:
    """What every slot is doing, as device tensors, so decoding needs no host sync: the pending token `tok`, its
    position `pos` (= its cache column), the tokens generated so far `out` (S, N + 1: the last column is scratch
    for finished rows) and their number `count`, `done` (an empty slot is done), and the slot's uniforms `u`."""

    def __init__(self, S, N, device, sampled):
        self.N = N
        self.tok = torch.zeros(S, dtype=torch.long, device=device)
        self.pos = torch.zeros(S, dtype=torch.long, device=device)
        self.count = torch.zeros(S, dtype=torch.long, device=device)
        self.done = torch.ones(S, dtype=torch.bool, device=device)
        self.out = torch.zeros(S, N + 1, dtype=torch.long, device=device)
        self.u = torch.zeros(S, N, device=device) if sampled else None

    def keep(self, idx):
        """Keep only slots idx (in that order): see compact."""
        for name in ("tok", "pos", "count", "done", "out", "u"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name)[idx])

    def step_uniforms(self):
        """Each slot's uniform for its next token (None when greedy)."""
        if self.u is None:
            return None
        return self.u.gather(1, self.count.clamp(max=self.N - 1).unsqueeze(1)).squeeze(1)

    def start(self, slots, prompts, u):
        """Slots `slots` (b,) begin `prompts`, whose tokens but the last are in the cache: that one is pending."""
        device = slots.device
        self.tok[slots] = torch.tensor([p[-1] for p in prompts], device=device)
        self.pos[slots] = torch.tensor([len(p) - 1 for p in prompts], device=device)
        self.count[slots], self.done[slots] = 0, False
        if u is not None:
            self.u[slots] = u

    def advance(self, nxt, stop):
        """Record each live slot's next token `nxt` (S,); a slot is done at a stop id or at its N-th token."""
        live = ~self.done
        self.out.scatter_(1, self.count.unsqueeze(1), nxt.unsqueeze(1))  # a finished row writes past its end
        self.count += live
        self.pos += live
        self.done |= is_stop(nxt, stop) | (self.count >= self.N)
        self.tok = nxt


def is_stop(tok, stop):
    """(S,) bool: which tokens are stop ids (`stop` a 1-d tensor, maybe empty)."""
    return torch.isin(tok, stop) if stop.numel() else torch.zeros_like(tok, dtype=torch.bool)


def admit(model, cache, rows, owner, top, waiting, prompts, uniforms, chunk, pad_id):
    """Move waiting prompts (their indices, in order) into the free slots: prefill, then start their rows. top[slot]
    becomes the position of the slot's pending token (the host's bound on its cache column; see generate)."""
    free = [s for s, o in enumerate(owner) if o < 0]
    take = [waiting.popleft() for _ in range(min(len(free), len(waiting)))]
    slots, batch = torch.tensor(free[:len(take)], device=rows.tok.device), [prompts[i] for i in take]
    if max(len(p) for p in batch) > 1:
        prefill(model, cache, slots, batch, chunk, pad_id)
    rows.start(slots, batch, uniforms(take))
    for s, i in zip(free, take):
        owner[s] = i
        top[s] = len(prompts[i]) - 1


def harvest(rows, owner, results):
    """Copy finished slots' tokens to results[prompt] and free the slots (owner[slot] = -1). One host sync.
    Returns how many finished."""
    done = rows.done.tolist()
    fin = [s for s, o in enumerate(owner) if o >= 0 and done[s]]
    if fin:
        for s, n, out in zip(fin, rows.count[fin].tolist(), rows.out[fin].tolist()):
            results[owner[s]] = out[:n]
            owner[s] = -1
    return len(fin)


def compact(rows, cache, owner, top):
    """Once nothing waits, the tail: move the owned slots to the front and drop the rest, so the last long rows do
    not drag empty slots through every step. Called when at most half the slots are owned (so at most log2(slots)
    times); returns the new owner and top lists."""
    keep = [s for s, o in enumerate(owner) if o >= 0]
    idx = torch.tensor(keep, device=rows.tok.device)
    rows.keep(idx)
    cache.keep(idx)
    return [owner[s] for s in keep], [top[s] for s in keep]


# -----------------------------------------------------------------------------
# Checks, memory and precision


def check_inputs(cfg, prompts, max_new_tokens, batch_size, indices):
    """One clear ValueError for input that cannot run, before anything is allocated."""
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"generate: batch_size must be at least 1, got {batch_size}")
    if max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")
    if indices is not None and len(indices) != len(prompts):
        raise ValueError(f"generate: {len(indices)} indices for {len(prompts)} prompts")
    context = min(cfg.max_seq_len, cfg.sliding_window or cfg.max_seq_len)
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"generate: every prompt needs at least one token (prompt {i} is empty)")
        if len(p) + max_new_tokens > context:
            raise ValueError(f"generate: prompt {i} of {len(p)} tokens + max_new_tokens {max_new_tokens} exceeds the "
                             f"model's context of {context} tokens")
        if min(p) < 0 or max(p) >= cfg.vocab_size:
            raise ValueError(f"generate: prompt {i} has a token id outside [0, {cfg.vocab_size})")


def default_kv_budget(device):
    """Half the free GPU memory on CUDA; 4 GiB elsewhere."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    return 4 * 2**30


def n_slots(cfg, n_prompts, batch_size, length, dtype, budget):
    """Rows that decode at once: batch_size, at most the prompts, at most what the KV budget holds."""
    per_slot = StaticCache.slot_bytes(cfg, length, dtype)
    if budget < per_slot:
        raise ValueError(f"generate: kv_budget_bytes={budget} holds no slot: one takes {per_slot} bytes "
                         f"({length} tokens of K and V, {cfg.n_layer} layers, {dtype})")
    return min(batch_size or n_prompts, n_prompts, budget // per_slot)


def sampling_model(model, dtype):
    """(model, dtype) to sample with. dtype None: bf16 on GPU, else the model's own. A dtype other than the
    model's gives a cast copy, made tensor by tensor (peak memory: the model plus the copy)."""
    have = next(model.parameters()).dtype
    if dtype is None:
        dtype = torch.bfloat16 if next(model.parameters()).is_cuda else have
    if dtype == have:
        return model, dtype
    # named_parameters lists a tied weight once; model_lib.from_state ties it again
    return model_lib.from_state(model.config, {n: p.detach().to(dtype) for n, p in model.named_parameters()}), dtype


# -----------------------------------------------------------------------------
# generate


@torch.no_grad()
def generate(model, prompts, max_new_tokens, temperature=0.0, top_p=1.0, stop_ids=(), seed=0, top_k=0,
             batch_size=None, vocab_size=None, pad_id=0, indices=None, kv_budget_bytes=None, prefill_chunk=512,
             sync_every=None, dtype=None, compile=False, progress=None):
    """Continuations of `prompts` (token-id lists), in input order: each up to and including its first stop id,
    or max_new_tokens ids. batch_size: slots decoding at once (None: every prompt at once, as one static batch
    did, within the KV budget; pass it to get continuous batching). indices: each prompt's global index for its random
    stream (default 0, 1, ...). vocab_size: ids >= it are never sampled. pad_id: filler of padded columns (never
    seen). progress: a description for a tqdm bar over finished prompts (None: no bar). See the module docstring
    for the rest."""
    cfg = model.config
    check_inputs(cfg, prompts, max_new_tokens, batch_size, indices)
    if not prompts or max_new_tokens == 0:
        return [[] for _ in prompts]
    model, dtype = sampling_model(model, dtype)
    device = next(model.parameters()).device
    N, indices = max_new_tokens, list(range(len(prompts))) if indices is None else list(indices)
    length = max(len(p) for p in prompts) + N - 1  # a row's prompt and all its new tokens but the last
    budget = default_kv_budget(device) if kv_budget_bytes is None else kv_budget_bytes
    S = n_slots(cfg, len(prompts), batch_size, length, dtype, budget)
    cache = StaticCache(cfg, S, length, device, dtype)
    sampled = temperature > 0
    rows = Rows(S, N, device, sampled)
    stop = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    sync_every = sync_every or (8 if device.type == "cuda" else 1)
    decode = decode_one_token
    if compile:
        decode = compiled_decode(device)
        for t in cache.k + cache.v:  # fixed addresses: CUDA graphs may keep them
            torch._dynamo.mark_static_address(t)
    knobs = (temperature, top_p, top_k, vocab_size)

    def uniforms(take):  # (b, N) for the prompts entering slots; None when greedy
        return torch.stack([row_uniforms(seed, indices[i], N) for i in take]).to(device) if sampled else None

    waiting, owner, results = collections.deque(range(len(prompts))), [-1] * S, [None] * len(prompts)
    top = [0] * S  # host-side: each slot's position if it advanced every step (>= its device-side pos)
    head = head_copy(model, device, dtype, compile, N * -(-len(prompts) // S))  # the most steps the call can run
    bar = tqdm(total=len(prompts), desc=progress, unit="prompt", leave=False, disable=progress is None)
    while True:
        bar.update(harvest(rows, owner, results))
        if waiting and min(owner) < 0:
            admit(model, cache, rows, owner, top, waiting, prompts, uniforms, prefill_chunk, pad_id)
        elif max(owner) < 0:
            bar.close()
            return results
        elif not compile and sum(o >= 0 for o in owner) <= len(owner) // 2:
            owner, top = compact(rows, cache, owner, top)
        for _ in range(sync_every):
            # eager: attend to the columns a live row can reach, not the whole cache (compile: one shape)
            n_cols = None if compile else min(length, 1 + max(t for t, o in zip(top, owner) if o >= 0))
            nxt = decode(model, cache, rows.tok, rows.pos, rows.step_uniforms(), *knobs, n_cols, head)
            # a CUDA-graph output is overwritten by the next replay: keep a copy (rows.tok feeds the next step)
            rows.advance(nxt.clone() if compile else nxt, stop)
            top = [t + 1 for t in top]
