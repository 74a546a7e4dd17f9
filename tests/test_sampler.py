"""sampler.py against the plain uncached forward, per-prompt runs and transformers' greedy tokens."""
import json
import os

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
