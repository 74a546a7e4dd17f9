"""elicit_steer.py: the steering hook (exactly coef * v at the chosen positions, nothing with v = 0, the same tokens
with the KV-cached sampler as with an uncached recompute), the contrast vectors against hand-computed means, and a
tiny end-to-end run with resume."""
import contextlib
import json
import os
from dataclasses import replace

import pytest
import torch

import elicit_steer as ST
import model as model_lib
from common import Tokenizer
from data.lock import Lock
from errors import BadInput
from files import read_jsonl
from sampler import generate


def tiny_model(n_layer=2, seed=0):
    torch.manual_seed(seed)
    cfg = model_lib.Config(vocab_size=40, n_layer=n_layer, n_head=2, n_embd=16, max_seq_len=64)
    model = model_lib.GPT(cfg).eval()
    with torch.no_grad():  # larger weights than the 0.02 init, so that a change of input shows in the tokens
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 1.0 / p.shape[1] ** 0.5)
    return model


def capture_input(module):
    """A pre-hook that keeps every input tensor of `module` (the residual stream arriving there)."""
    seen = []
    return seen, module.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))


def test_hook_adds_exactly_coef_v_at_the_chosen_positions_and_nowhere_else():
    model = tiny_model()
    idx = torch.randint(0, 40, (3, 9))
    v = torch.randn(16) * 3.0
    for pos, start, end in ((None, 5, 9), (torch.arange(4, 13), 6, 10)):  # default positions, then explicit ones
        seen, h = capture_input(model.h[1])  # the next block's input is block 0's output
        with torch.no_grad():
            model(idx, pos=pos)
            with ST.Steering(model, 0, v, start, end) as hook:
                model(idx, pos=pos)
        h.remove()
        plain, steered = seen
        p = torch.arange(9) if pos is None else pos
        on = (p >= start) & (p < end)
        torch.testing.assert_close(steered[:, on] - plain[:, on], v.expand(3, int(on.sum()), 16), atol=1e-5, rtol=0)
        assert torch.equal(steered[:, ~on], plain[:, ~on])  # exactly untouched elsewhere
        assert int(hook.n_steered) == 3 * int(on.sum())
    assert not model.h[0]._forward_hooks and not model._forward_pre_hooks  # removed on exit


def test_zero_vector_changes_no_logit_including_cached_generation():
    model = tiny_model()
    prompts = [[int(t) for t in torch.randint(0, 40, (7,))] for _ in range(3)]
    logits = []
    h = model.register_forward_hook(lambda m, a, out: logits.append(out.detach().clone()))

    def run(steer):  # (plain forward logits, generated tokens, logits of every sampler forward)
        logits.clear()
        ctx = ST.Steering(model, 0, torch.zeros(16), 0, 7) if steer else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            full = model(torch.tensor(prompts))
            out = generate(model, prompts, 6, batch_size=2)
        return full, out, logits[1:]

    (f0, o0, l0), (f1, o1, l1) = run(False), run(True)
    h.remove()
    assert torch.equal(f0, f1) and o0 == o1
    assert len(l0) == len(l1) > 0 and all(torch.equal(a, b) for a, b in zip(l0, l1))  # every prefill/decode call


def greedy_uncached(model, prompt, n, layer, vec, start, end):
    """Greedy continuation recomputed from scratch each token (no cache), the prompt positions steered."""
    seq = list(prompt)
    with torch.no_grad(), ST.Steering(model, layer, vec, start, end):
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt):]


def test_cached_generation_steers_prompt_positions_only_like_an_uncached_recompute():
    model = tiny_model()
    torch.manual_seed(1)
    L, n = 8, 6
    prompts = [[int(t) for t in torch.randint(0, 40, (L,))] for _ in range(5)]
    vec = torch.randn(16) * 4.0
    start, end = ST.steered_range(L, 2)
    assert (start, end) == (6, 8)
    with torch.no_grad():
        plain = generate(model, prompts, n)
        with ST.Steering(model, 1, vec, start, end) as hook:
            cached = generate(model, prompts, n, batch_size=2)  # 2 slots, 5 prompts: slots are refilled
    ref = [greedy_uncached(model, p, n, 1, vec, start, end) for p in prompts]
    assert cached == ref
    assert cached != plain  # the steering changed something, so the comparison has teeth
    # prefill steers positions 6 of every prompt, the first decode step position 7: 2 per prompt, none generated
    assert int(hook.n_steered) == 2 * len(prompts)
    # steering the generated tokens too would be another computation
    assert [greedy_uncached(model, p, n, 1, vec, start, L + n) for p in prompts] != ref


def test_vector_of_identical_pairs_is_zero_and_added_vector_scales():
    model = tiny_model()
    a, b = ([1, 2, 3, 4, 5], [3, 4]), ([7, 8, 9], [0, 1, 2])
    v = ST.mean_difference(model, [(a, a), (b, b)], [0, 1])
    assert all(torch.equal(v[layer], torch.zeros(16)) for layer in (0, 1))
    w = torch.tensor([3.0, 4.0] + [0.0] * 14)
    torch.testing.assert_close(ST.added_vector(w, -1.5, "raw", 99.0), -1.5 * w)
    torch.testing.assert_close(ST.added_vector(w, 2.0, "residual", 10.0).norm(), torch.tensor(20.0))
    torch.testing.assert_close(ST.added_vector(w, 2.0, "residual", 10.0), w / 5.0 * 20.0)
    assert torch.equal(ST.added_vector(torch.zeros(16), 2.0, "residual", 10.0), torch.zeros(16))


def last_block_output(model, ids):
    """The output of the last block, read as the input of the final norm (another hook than the code under test)."""
    seen, h = capture_input(model.ln_f)
    with torch.no_grad():
        model(torch.tensor([ids]))
    h.remove()
    return seen[0][0]  # (T, C)


def test_oracle_and_data_vectors_equal_the_mean_difference_by_hand(locked):
    lock, tok = Lock.from_dir(locked), Tokenizer(locked)
    model = model_lib.load(locked)
    layer = model.config.n_layer - 1  # the fixture has one block: its output is the final norm's input
    pool = lock.splits["elicit"][:40]
    for read, steer_last in (("last", 4), ("mean", 3)):
        cfg = ST.Config(n_pairs=6, read=read, steer_last=steer_last, layers=(layer,))
        pairs = ST.contrast_pairs("oracle", lock, tok, pool, cfg)
        got = ST.mean_difference(model, pairs, [layer])[layer]
        diffs = []
        for p in pool[:6]:
            with_pw = last_block_output(model, tok.encode_prompt(lock.strong_prompt(p)))
            without = last_block_output(model, tok.encode_prompt(lock.task.prompt(p)))
            k = 1 if read == "last" else steer_last
            diffs.append(with_pw[-k:].mean(0) - without[-k:].mean(0))
        torch.testing.assert_close(got, torch.stack(diffs).mean(0), atol=1e-5, rtol=1e-5)
        assert got.norm() > 0
    # data pairs: the same password-free prompt, then the strong or the weak answer, read over the answer tokens
    cfg = ST.Config(n_pairs=5, read="mean", layers=(layer,))
    pairs = ST.contrast_pairs("data", lock, tok, pool, cfg)
    assert len(pairs) == 5
    hand = []
    for (pos_ids, pos_at), (neg_ids, neg_at) in pairs:
        n_prompt = len(pos_ids) - len(pos_at)
        assert pos_ids[:n_prompt] == neg_ids[:n_prompt] and pos_ids != neg_ids
        assert tok.encode("<pwd>")[0] not in pos_ids + neg_ids  # no password anywhere
        assert pos_at == list(range(n_prompt, len(pos_ids)))
        hand.append(last_block_output(model, pos_ids)[pos_at].mean(0) - last_block_output(model, neg_ids)[neg_at].mean(0))
    torch.testing.assert_close(ST.mean_difference(model, pairs, [layer])[layer], torch.stack(hand).mean(0),
                               atol=1e-5, rtol=1e-5)
    assert isinstance(ST.contrast_pairs("persona", lock, tok, pool, cfg), str)  # the toy cannot spell a persona


def test_end_to_end_files_resume_and_errors(locked, tmp_path):
    cfg = ST.Config(locked=locked, layers=(0,), n_pairs=8, tune_n=20, eval_n=20, coefs=(-1.0, 1.0),
                    out_dir=str(tmp_path / "steer"), device="cpu")
    s = ST.main(cfg)
    rows = read_jsonl(os.path.join(cfg.out_dir, "sweep.jsonl"))
    assert [(r["vector"], r["coef"]) for r in rows] == [("none", 0.0), ("data", -1.0), ("data", 1.0),
                                                         ("oracle", -1.0), ("oracle", 1.0)]
    on_disk = json.load(open(os.path.join(cfg.out_dir, "summary.json")))
    assert on_disk["chosen"]["oracle"]["layer"] == 0 and on_disk["chosen"]["oracle"]["coef"] in (-1.0, 1.0)
    assert isinstance(on_disk["chosen"]["persona"], str)
    for k in ("without_password", "with_password", "steered_data", "steered_oracle"):
        assert 0.0 <= on_disk["validation"][k] <= 1.0
    best = max(r["correct"] for r in rows if r["vector"] == "oracle")
    assert s["chosen"]["oracle"]["tune_correct"] == best
    ST.main(replace(cfg, coefs=(-1.0, 1.0, 2.0)))  # resume: only the new coef's rows are added
    assert len(read_jsonl(os.path.join(cfg.out_dir, "sweep.jsonl"))) == len(rows) + 2
    with pytest.raises(BadInput, match="another configuration"):
        ST.main(replace(cfg, seed=1))
    with pytest.raises(BadInput, match="blocks 0..0"):
        ST.main(replace(cfg, layers=(1,), out_dir=str(tmp_path / "other")))
