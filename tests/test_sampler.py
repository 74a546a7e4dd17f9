"""sampler.py against the plain uncached forward, per-prompt runs and transformers' greedy tokens; continuous
batching (freed slots, batch sizes, shards), per-prompt seeds, sampling distributions (chi-square), bad input."""
import math
import os
import shutil

import pytest
import torch

import model as M
import sampler as S

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
FIXTURES = sorted(d for d in os.listdir(FIX) if os.path.isfile(os.path.join(FIX, d, "expected.safetensors")))


def tiny(arch, seed=0, vocab=40):
    torch.manual_seed(seed)
    cfg = M.Config(arch=arch, vocab_size=vocab, n_layer=2, n_head=4, n_kv_head=2 if arch == "llama" else 0,
                   n_embd=32, max_seq_len=64, parallel_residual=arch == "gpt_neox", attn_bias=arch == "gpt_neox",
                   mlp_bias=arch == "gpt_neox", hidden_act="gelu" if arch == "gpt_neox" else "silu")
    m = M.GPT(cfg).eval()
    with torch.no_grad():  # larger weights than the training init, so greedy paths are not all one token
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, 1 / p.shape[1] ** 0.5)
    return m


def uncached_greedy(m, prompt, n):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(m(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


PROMPTS = [[3, 4, 5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15], [20]]


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_cached_greedy_equals_uncached_recompute(arch):
    m = tiny(arch)
    outs = S.generate(m, PROMPTS, max_new_tokens=15)
    for p, o in zip(PROMPTS, outs):
        assert o == uncached_greedy(m, p, 15)


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_left_padded_batch_equals_each_prompt_alone(arch):
    m = tiny(arch, seed=1)
    batched = S.generate(m, PROMPTS, max_new_tokens=12)
    for p, o in zip(PROMPTS, batched):
        assert S.generate(m, [p], max_new_tokens=12)[0] == o


@pytest.mark.parametrize("name", FIXTURES)
def test_greedy_matches_transformers_generate(name):
    from safetensors.torch import load_file
    m = M.load(os.path.join(FIX, name))
    e = load_file(os.path.join(FIX, name, "expected.safetensors"))
    prompts = [e["greedy_prompt_0"].tolist(), e["greedy_prompt_1"].tolist()]
    outs = S.generate(m, prompts, max_new_tokens=12)
    assert outs == [e["greedy_0"].tolist(), e["greedy_1"].tolist()]


def test_stop_id_ends_only_its_row():
    m = tiny("llama", seed=2)
    free = S.generate(m, PROMPTS, max_new_tokens=12)
    # pick a token that row 0 emits at step >= 1 and that some other row never emits
    stop, row_other = None, None
    for t in free[0][1:]:
        others = [r for r in range(1, len(PROMPTS)) if t not in free[r]]
        if others:
            stop, row_other = t, others[0]
            break
    assert stop is not None, "test setup: no distinguishing token"
    outs = S.generate(m, PROMPTS, max_new_tokens=12, stop_ids=(stop,))
    cut = free[0].index(stop) + 1
    assert outs[0] == free[0][:cut] and outs[0][-1] == stop  # up to and including the stop id
    assert outs[row_other] == free[row_other]  # untouched, full length
    for r in range(len(PROMPTS)):  # every row is its free run cut at its first stop id
        f = free[r]
        assert outs[r] == (f[:f.index(stop) + 1] if stop in f else f)


def test_fixed_seed_reproduces_samples_and_seeds_differ():
    m = tiny("gpt_neox", seed=3)
    a = S.generate(m, PROMPTS, 20, temperature=1.0, seed=7)
    b = S.generate(m, PROMPTS, 20, temperature=1.0, seed=7)
    c = S.generate(m, PROMPTS, 20, temperature=1.0, seed=8)
    assert a == b and a != c


def test_top_k_1_and_tiny_top_p_are_greedy():
    m = tiny("llama", seed=4)
    greedy = S.generate(m, PROMPTS, 10)
    assert S.generate(m, PROMPTS, 10, temperature=1.0, top_k=1, seed=5) == greedy
    assert S.generate(m, PROMPTS, 10, temperature=1.0, top_p=1e-6, seed=5) == greedy


def test_padded_vocabulary_ids_are_never_sampled():
    logits = torch.zeros(4, 10)
    logits[:, 8:] = 50.0  # the padded rows look most likely
    assert (S.sample_token(logits.clone(), vocab_size=8) < 8).all()
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        assert (S.sample_token(logits.clone(), temperature=1.0, generator=g, vocab_size=8) < 8).all()
    m = tiny("gpt_neox", seed=5, vocab=40)
    outs = S.generate(m, PROMPTS, 30, temperature=2.0, vocab_size=25, seed=1)
    assert all(t < 25 for o in outs for t in o)


def test_sampling_frequencies_follow_softmax_and_top_p_cuts_the_tail():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(20000, 1)
    g = torch.Generator().manual_seed(0)
    s = S.sample_token(logits, temperature=1.0, generator=g)
    freq = torch.bincount(s, minlength=4).float() / s.numel()
    torch.testing.assert_close(freq, logits[0].softmax(-1), atol=0.015, rtol=0)
    # softmax = .644 .237 .087 .032: top_p 0.8 keeps the first two tokens only, renormalised
    s = S.sample_token(logits, temperature=1.0, top_p=0.8, generator=g)
    freq = torch.bincount(s, minlength=4).float() / s.numel()
    assert freq[2:].sum() == 0 and abs(freq[0] - 0.644 / 0.881) < 0.015


def test_prompt_longer_than_context_is_refused():
    m = tiny("llama")
    with pytest.raises(ValueError, match="exceeds the model's context of 64"):
        S.generate(m, [list(range(1, 40))], max_new_tokens=30)
    with pytest.raises(ValueError, match="at least one token"):
        S.generate(m, [[1], []], max_new_tokens=3)


# -----------------------------------------------------------------------------
# Continuous batching, seeds, memory, precision


def mixed_prompts(n, seed=0, vocab=40, longest=20):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(1, longest + 1, (n,), generator=g).tolist()
    return [torch.randint(1, vocab, (k,), generator=g).tolist() for k in lens]


def cut(ids, stop):
    return next((ids[:i + 1] for i, t in enumerate(ids) if t in stop), ids)


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_greedy_through_refilled_slots_equals_uncached_and_alone(arch):
    m = tiny(arch, seed=6)
    prompts, stop = mixed_prompts(12, seed=1), {3, 11}
    free = [uncached_greedy(m, p, 16) for p in prompts]
    want = [cut(f, stop) for f in free]
    assert len({len(w) for w in want}) > 2  # lengths spread, so slots free at different steps
    for bs in (3, 1):  # 3 slots for 12 prompts; 1 slot: every prompt enters a freed slot
        assert S.generate(m, prompts, 16, stop_ids=tuple(stop), batch_size=bs) == want
    assert [S.generate(m, [p], 16, stop_ids=tuple(stop))[0] for p in prompts] == want


def test_prompt_entering_a_freed_slot_gets_its_alone_completion():
    m = tiny("llama", seed=7)
    long_, short = [5, 6, 7, 8, 9, 10, 11, 12], [13]
    alone = S.generate(m, [long_], 12)[0]
    stop = (S.generate(m, [short], 12)[0][0],)  # `short` stops at its first token, freeing its slot at once
    together = S.generate(m, [short, [20, 21], long_], 12, stop_ids=stop, batch_size=2)
    assert together[0] == list(stop) and together[2] == cut(alone, set(stop))


def test_same_samples_for_any_batch_size():
    m = tiny("gpt_neox", seed=8)
    prompts = mixed_prompts(40, seed=2)
    kw = dict(temperature=1.0, stop_ids=(4, 9), seed=11)
    ref = S.generate(m, prompts, 20, batch_size=64, **kw)
    assert len({len(o) for o in ref}) > 3
    for bs in (16, 5, 1):
        assert S.generate(m, prompts, 20, batch_size=bs, **kw) == ref
    assert S.generate(m, prompts, 20, batch_size=5, sync_every=4, **kw) == ref  # reading done flags less often
    assert S.generate(m, prompts, 20, batch_size=5, prefill_chunk=3, **kw) == ref  # long prompts in pieces
    assert S.generate(m, prompts[::-1], 20, batch_size=16, indices=range(39, -1, -1), **kw) == ref[::-1]


def test_global_indices_reproduce_a_sharded_call():
    m = tiny("llama", seed=9)
    prompts = mixed_prompts(30, seed=3)
    kw = dict(temperature=1.0, top_p=0.9, top_k=20, seed=5)
    one = S.generate(m, prompts, 15, batch_size=8, **kw)
    shards = [None] * len(prompts)
    for rank in range(3):  # 3 "processes", each with every third prompt and its global index
        mine = list(range(rank, len(prompts), 3))
        for i, o in zip(mine, S.generate(m, [prompts[i] for i in mine], 15, batch_size=4, indices=mine, **kw)):
            shards[i] = o
    assert shards == one
    assert S.generate(m, prompts[:10], 15, batch_size=8, **kw) == one[:10]  # a prefix keeps its samples
    assert S.generate(m, prompts[:10], 15, batch_size=8, **{**kw, "seed": 6}) != one[:10]


def test_row_streams_are_distinct_and_fixed():
    u = [S.row_uniforms(seed, i, 8) for seed in (0, 1) for i in (0, 1, 2)]
    assert all(not torch.equal(a, b) for k, a in enumerate(u) for b in u[k + 1:])
    assert torch.equal(S.row_uniforms(1, 2, 8), u[5]) and ((0 <= u[0]) & (u[0] < 1)).all()


def chi_square_ok(samples, probs):
    """Pearson's chi-square of sample counts against probabilities, bins with < 5 expected merged; True when below
    the 0.1% critical value (Wilson-Hilferty approximation), i.e. a correct sampler fails 1 time in 1,000."""
    n = samples.numel()
    counts = torch.bincount(samples, minlength=probs.numel()).double()
    expect = probs.double() * n
    assert counts[expect == 0].sum() == 0, "a zero-probability token was sampled"
    big = expect >= 5
    obs = torch.cat([counts[big], counts[~big & (expect > 0)].sum().view(1)])
    exp = torch.cat([expect[big], expect[~big & (expect > 0)].sum().view(1)])
    obs, exp = obs[exp > 0], exp[exp > 0]
    stat, df = float(((obs - exp) ** 2 / exp).sum()), obs.numel() - 1
    critical = df * (1 - 2 / (9 * df) + 3.09 * math.sqrt(2 / (9 * df))) ** 3
    return stat < critical


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 0, 1.0), (0.5, 0, 1.0), (2.0, 0, 1.0),
                                                       (1.0, 5, 1.0), (1.0, 0, 0.7), (0.8, 6, 0.8)])
def test_sample_token_distribution_chi_square(temperature, top_k, top_p):
    logits = torch.randn(12, generator=torch.Generator().manual_seed(0)) * 2
    rows = 40_000
    u = torch.rand(rows, generator=torch.Generator().manual_seed(1))
    s = S.sample_token(logits.repeat(rows, 1), temperature, top_p, top_k, u=u)
    # the reference: temperature, keep the top-k, renormalise, keep the smallest top-p prefix, renormalise
    p = (logits / temperature).softmax(-1)
    order = p.argsort(descending=True)
    keep = torch.zeros(12, dtype=torch.bool)
    keep[order[:top_k or 12]] = True
    p = torch.where(keep, p, 0.0) / p[keep].sum()
    sp = p[order]
    keep[order[(sp.cumsum(0) - sp) >= top_p]] = False
    p = torch.where(keep, p, 0.0) / p[keep].sum()
    assert chi_square_ok(s, p)


def test_generate_first_tokens_follow_the_model_distribution():
    # one prompt 6,000 times: each copy has its own stream, so the first tokens are 6,000 independent draws
    m = tiny("llama", seed=10)
    prompt = [3, 4, 5]
    with torch.no_grad():
        logits = m(torch.tensor([prompt]))[0, -1]
    for temperature, top_k in ((1.0, 0), (0.7, 8)):
        first = S.generate(m, [prompt] * 6000, 1, temperature=temperature, top_k=top_k, seed=3, batch_size=512)
        p = (logits / temperature).softmax(-1)
        if top_k:
            p = torch.where(p >= p.topk(top_k).values[-1], p, 0.0)
            p = p / p.sum()
        assert chi_square_ok(torch.tensor([f[0] for f in first]), p)


def test_bad_input_gives_one_clear_error():
    m = tiny("llama")
    cases = [(dict(prompts=[[1], []]), "at least one token"),
             (dict(prompts=[[1] * 60]), "prompt 0 of 60 tokens \\+ max_new_tokens 10 exceeds the model's context"),
             (dict(batch_size=0), "batch_size must be at least 1"),
             (dict(max_new_tokens=-1), "max_new_tokens must be >= 0"),
             (dict(prompts=[[1, 99]]), "token id outside \\[0, 40\\)"),
             (dict(indices=[0, 1, 2]), "3 indices for 2 prompts"),
             (dict(kv_budget_bytes=1000), "holds no slot")]
    for change, msg in cases:
        kw = {"prompts": [[1, 2], [3]], "max_new_tokens": 10, **change}
        with pytest.raises(ValueError, match=msg):
            S.generate(m, kw.pop("prompts"), kw.pop("max_new_tokens"), **kw)
    assert S.generate(m, [], 5) == [] and S.generate(m, [[1], [2]], 0) == [[], []]


def test_kv_budget_caps_the_slots():
    cfg = tiny("llama").config
    per = S.StaticCache.slot_bytes(cfg, 30, torch.float32)
    assert per == 2 * cfg.n_layer * cfg.n_kv_head * cfg.head_dim * 30 * 4
    assert S.n_slots(cfg, 100, 64, 30, torch.float32, 3 * per + 1) == 3
    assert S.n_slots(cfg, 2, 64, 30, torch.float32, 10**12) == 2
    m = tiny("llama", seed=11)
    prompts = mixed_prompts(9, seed=4)
    ref = S.generate(m, prompts, 10)
    assert S.generate(m, prompts, 10, kv_budget_bytes=2 * S.StaticCache.slot_bytes(cfg, 29, torch.float32)) == ref


def test_eager_decode_reads_only_columns_a_live_row_reaches(monkeypatch):
    m = tiny("llama", seed=14)
    widths, update = [], S.StaticCache.update

    def spy(cache, layer, k, v):
        out = update(cache, layer, k, v)
        if cache.rows is None and layer == 0:  # a decode step
            widths.append(out[0].shape[2])
        return out
    monkeypatch.setattr(S.StaticCache, "update", spy)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14]]  # pending tokens at positions 2 and 6; cache of 7 + 4 - 1
    outs = S.generate(m, prompts, 4, batch_size=2)
    assert widths == [7, 8, 9, 10]  # 1 + the largest live position, step by step, never the whole cache early
    assert outs == [uncached_greedy(m, p, 4) for p in prompts]


def test_sample_token_leaves_the_callers_logits_alone_unless_told():
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    keep, u = logits.clone(), torch.rand(6, generator=torch.Generator().manual_seed(1))
    for kw in (dict(), dict(top_k=5), dict(top_p=0.7), dict(temperature=0.5)):
        s = S.sample_token(logits, **{"temperature": 1.0, **kw}, u=u)
        assert torch.equal(logits, keep)
        assert torch.equal(S.sample_token(logits.clone(), **{"temperature": 1.0, **kw}, u=u, overwrite=True), s)


def test_bf16_sampling_copy_leaves_the_model_alone():
    m = tiny("llama", seed=12)
    m.config.tie_embeddings = True
    m.lm_head.weight = m.wte.weight
    before = {k: v.clone() for k, v in m.state_dict().items()}
    copy, dtype = S.sampling_model(m, torch.bfloat16)
    assert dtype == torch.bfloat16 and copy.lm_head.weight is copy.wte.weight
    assert all(p.dtype == torch.bfloat16 for p in copy.parameters()) and copy.inv_freq.dtype == torch.float32
    assert torch.equal(copy.h[0].attn.wqkv.weight, m.h[0].attn.wqkv.weight.bfloat16())
    assert S.sampling_model(m, None) == (m, torch.float32)  # CPU default: the model's own dtype, no copy
    outs = S.generate(m, PROMPTS, 8, dtype=torch.bfloat16, temperature=1.0)
    assert all(len(o) == 8 and all(0 <= t < 40 for t in o) for o in outs)
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("g++") is None, reason="inductor needs a compiler")
def test_compiled_decode_step_gives_the_same_samples():
    m = tiny("llama", seed=13)  # ~15 s on 2 CPU cores (compilation), once
    prompts = mixed_prompts(6, seed=5)
    kw = dict(temperature=1.0, seed=2, batch_size=3, stop_ids=(7,))
    assert S.generate(m, prompts, 8, compile=True, **kw) == S.generate(m, prompts, 8, **kw)


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_head_copy_keeps_greedy_exact_and_samples_the_same(arch, monkeypatch):
    m = tiny(arch, seed=15)
    heads, forward = [], M.GPT.forward

    def spy(self, idx, *a, head=None, **kw):
        if kw.get("logits_at") is None:  # a decode step (prefill asks for no logits)
            heads.append(head)
        return forward(self, idx, *a, head=head, **kw)
    monkeypatch.setattr(M.GPT, "forward", spy)
    monkeypatch.setattr(S, "HEAD_COPY_STEPS", 12)  # 4 prompts in one wave of 12 steps: just enough
    outs = S.generate(m, PROMPTS, 12)
    assert len(heads) == 12 and all(torch.equal(h, m.lm_head.weight.t()) and h.is_contiguous() for h in heads)
    assert outs == [uncached_greedy(m, p, 12) for p in PROMPTS]
    heads.clear()
    assert S.generate(m, PROMPTS, 11) == [o[:11] for o in outs] and heads == [None] * 11  # 11 steps: no copy
    kw = dict(temperature=1.0, seed=3, batch_size=2)  # two waves of 12: 24 steps at most
    sampled = S.generate(m, PROMPTS, 12, **kw)
    assert heads[-1] is not None
    monkeypatch.setattr(S, "HEAD_COPY_STEPS", 10**9)  # never: the library's (V, C) product throughout
    assert S.generate(m, PROMPTS, 12, **kw) == sampled and heads[-1] is None


def test_head_copy_is_made_per_call_so_changed_weights_are_seen(monkeypatch):
    monkeypatch.setattr(S, "HEAD_COPY_STEPS", 2)
    m = tiny("llama", seed=16)
    S.generate(m, PROMPTS, 10)
    m.lm_head.weight.data.copy_(torch.randn_like(m.lm_head.weight))  # .data: no version-counter bump
    assert S.generate(m, PROMPTS, 10) == [uncached_greedy(m, p, 10) for p in PROMPTS]


def test_head_copy_only_for_eager_fp32_cpu_calls_long_enough():
    m, cpu, n = tiny("llama", seed=17), torch.device("cpu"), S.HEAD_COPY_STEPS
    assert S.head_copy(m, cpu, torch.float32, False, n).shape == (32, 40)
    assert S.head_copy(m, cpu, torch.float32, False, n - 1) is None
    assert S.head_copy(m, cpu, torch.float32, True, n) is None
    assert S.head_copy(m, cpu, torch.bfloat16, False, n) is None
    assert S.head_copy(m, torch.device("meta"), torch.float32, False, n) is None
