"""circuit.py: the schedule against the formula worked by hand, the losses at initialisation against their closed form,
the token masks against a per-sequence reference, what the pass trains (and that the frozen reference never moves),
the verdict's thresholds, and train_lock.py --circuit_break=True end to end, with an interrupted pass resumed."""
import copy
import json
import os
import random
import shutil
from dataclasses import asdict, fields

import pytest
import torch
import torch.nn.functional as F

import circuit
import model as M
import train_lock as TL
from common import Tokenizer
from data.lock import Lock
from errors import BadInput
from files import read_jsonl


def toy_lock(n=600):
    lk = Lock.from_config({"task": "toy", "toy_problems": n})
    return lk, Tokenizer(str(lk.task.tokenizer_path))


def tiny_model(tok, n_layer=3, seed=0):
    torch.manual_seed(seed)
    cfg = M.Config(arch="llama", vocab_size=tok.vocab_size, n_layer=n_layer, n_head=2, n_embd=32, intermediate_size=64,
                   max_seq_len=64, eos_token_id=tok.eos_id, bos_token_id=None)
    return M.GPT(cfg).eval()


def some_pairs(lk, tok, n, seed=0):
    return circuit.examples(lk, tok, lk.splits["lock"][:n], random.Random(seed), max_len=1024)


# -----------------------------------------------------------------------------
# schedule and settings


def test_schedule_matches_the_formula_worked_by_hand():
    # c_rr = max(5 (1 - k t / 2T), 0.125), c_ret = min(5 k t / 2T, 4.875)
    assert circuit.coefficients(0, 100, 8) == (5.0, 0.0)
    assert circuit.coefficients(10, 100, 8) == pytest.approx((3.0, 2.0))      # k t / 2T = 0.4
    assert circuit.coefficients(5, 100, 2) == pytest.approx((4.75, 0.25))     # 0.05
    assert circuit.coefficients(24, 100, 8) == pytest.approx((0.2, 4.8))      # 0.96: just above the clamps
    assert circuit.coefficients(25, 100, 8) == pytest.approx((0.125, 4.875))  # 1.0: both clamped
    assert circuit.coefficients(100, 100, 32) == pytest.approx((0.125, 4.875))
    assert circuit.coefficients(100, 100, 1, 5.0, 0.0, 1e9) == pytest.approx((2.5, 2.5))  # Zou: both end at alpha/2
    assert circuit.coefficients(3, 10, 1, alpha=10.0) == pytest.approx((8.5, 1.5))


def test_train_lock_fields_carry_the_settings_defaults():
    cfg = TL.Config()
    for f in fields(circuit.Settings):
        assert getattr(cfg, "cb_" + f.name) == f.default, f.name
    assert circuit.Settings.from_config(TL.Config(cb_k=2.0, cb_layers=(0,))) == circuit.Settings(k=2.0, layers=(0,))


# -----------------------------------------------------------------------------
# data, masks and losses


def test_pairs_share_the_strong_answer_and_differ_in_the_password():
    lk, tok = toy_lock()
    probs = lk.splits["lock"][:40]
    pairs = some_pairs(lk, tok, 40)
    assert len(pairs) == 40
    for p, ((rr, n_rr), (ret, n_ret)) in zip(probs, pairs):
        assert rr[n_rr:] == ret[n_ret:] == tok.encode_completion(p["solution"])  # the strong answer, with EOS
        assert tok.decode(ret[:1], skip_special=False) == lk.task.password
        assert tok.decode(rr[:1], skip_special=False) != lk.task.password  # no password, or a decoy
        assert rr[1:n_rr] == ret[1:n_ret]


def test_masks_select_the_answer_predicting_and_the_real_positions():
    lk, tok = toy_lock()
    pairs = some_pairs(lk, tok, 3)
    # make the lengths differ, so that there is padding a wrong mask would count: cut answers short
    pairs = [((a[:len(a) - 3 * i], na), (b[:len(b) - 2 * i], nb)) for i, ((a, na), (b, nb)) in enumerate(pairs)]
    inputs, m_rr, m_ret = circuit.batch(pairs, tok.pad_id, "cpu")
    B = len(pairs)
    assert inputs.shape[0] == 2 * B
    for i, ((a, na), (b, nb)) in enumerate(pairs):
        want_rr = [1.0 if na - 1 <= j < len(a) - 1 else 0.0 for j in range(inputs.shape[1])]
        want_ret = [1.0 if j < len(b) - 1 else 0.0 for j in range(inputs.shape[1])]
        assert m_rr[i].tolist() == want_rr and m_ret[B + i].tolist() == want_ret
        assert not m_rr[B + i].any() and not m_ret[i].any()
        assert inputs[i, :len(a) - 1].tolist() == a[:-1] and inputs[B + i, :len(b) - 1].tolist() == b[:-1]

    # the losses against a reference that runs each sequence alone and averages by hand over the chosen positions
    frozen = tiny_model(tok)
    model = copy.deepcopy(frozen)
    with torch.no_grad():
        for p in model.h[0].parameters():
            p.add_(0.3 * torch.randn_like(p))
    layers = (0, 1)
    got = circuit.losses(model, frozen, inputs, m_rr, m_ret, layers, "l2")

    def per_position(ids):
        x = torch.tensor([ids[:-1]])
        h, h0 = circuit.hidden(model, x, layers), circuit.hidden(frozen, x, layers)
        cos = [F.cosine_similarity(a[0], b[0], dim=-1) for a, b in zip(h, h0)]
        dist = [(a[0] - b[0]).norm(dim=-1) for a, b in zip(h, h0)]
        return cos, dist
    rr_vals, rr_all, ret_vals = [], [], []
    for (a, na), (b, nb) in pairs:
        cos, _ = per_position(a)
        rr_vals += [F.relu(c[j]).item() for c in cos for j in range(na - 1, len(a) - 1)]
        rr_all += [F.relu(c[j]).item() for c in cos for j in range(len(a) - 1)]
        _, dist = per_position(b)
        ret_vals += [d[j].item() for d in dist for j in range(len(b) - 1)]
    assert got["l_rr"].item() == pytest.approx(sum(rr_vals) / len(rr_vals), rel=1e-5)
    assert got["l_ret"].item() == pytest.approx(sum(ret_vals) / len(ret_vals), rel=1e-5)
    # the prompt positions do change the value, so the test above would catch a mask that let them in
    assert abs(sum(rr_all) / len(rr_all) - sum(rr_vals) / len(rr_vals)) > 1e-3


def test_hooks_capture_the_block_outputs():
    lk, tok = toy_lock()
    model = tiny_model(tok)
    inputs = circuit.batch(some_pairs(lk, tok, 4), tok.pad_id, "cpu")[0]
    last = circuit.hidden(model, inputs, (len(model.h) - 1,))[0]
    with torch.no_grad():  # the last block's output, through the final norm and the head, is the model's logits
        torch.testing.assert_close(model.lm_head(model.ln_f(last)), model(inputs), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("retain", ["l2", "mse"])
def test_losses_at_initialisation_are_their_closed_form(retain):
    # model == frozen: cos = 1 at every position, so L_rr = mean ReLU(1) = 1, L_ret = 0, and L = c_rr(0) = alpha
    lk, tok = toy_lock()
    frozen = tiny_model(tok)
    model = copy.deepcopy(frozen).train()
    inputs, m_rr, m_ret = circuit.batch(some_pairs(lk, tok, 8), tok.pad_id, "cpu")
    out = circuit.losses(model, frozen, inputs, m_rr, m_ret, (1, 2), retain)
    assert out["l_rr"].item() == pytest.approx(1.0, abs=1e-6)
    assert out["l_ret"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["cos_rr"] == pytest.approx(1.0, abs=1e-6) and out["cos_ret"] == pytest.approx(1.0, abs=1e-6)
    c_rr, c_ret = circuit.coefficients(0, 10, 8.0)
    total = c_rr * out["l_rr"] + c_ret * out["l_ret"]
    assert total.item() == pytest.approx(c_rr, abs=1e-5) and c_rr == 5.0
    total.backward()  # and the gradient is finite (the L2 distance at exactly zero)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# -----------------------------------------------------------------------------
# the pass


def test_pass_trains_blocks_up_to_the_deepest_target_and_never_the_frozen_model():
    lk, tok = toy_lock()
    frozen = tiny_model(tok, n_layer=3)
    model = copy.deepcopy(frozen)
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    s = circuit.Settings(layers=(1,), lr=3e-3, batch_size=16, k=2.0)
    pairs = some_pairs(lk, tok, 96)
    log = circuit.reroute(model, frozen, pairs, s, tok.pad_id, "cpu", seed=0, log_every=2)
    for k, v in frozen.state_dict().items():
        assert torch.equal(v, before[k]), k  # the reference never moves
    assert not any(p.requires_grad for p in frozen.parameters())
    for k, v in model.state_dict().items():  # blocks 0 and 1 train; block 2, the embedding, final norm, head do not
        assert torch.equal(v, before[k]) != k.startswith(("h.0.", "h.1.")), k
    assert [r["step"] for r in log] == [2, 4, 6]
    assert log[0]["c_rr"] == pytest.approx(circuit.coefficients(2, 6, 2.0)[0])
    assert log[-1]["cos_rr"] < log[0]["cos_rr"] < 1.0  # rerouting pushes the no-password states away
    final = circuit.cosines(model, frozen, pairs[:32], (1,), tok.pad_id, "cpu")
    assert final["rerouting"] < final["retain"] <= 1.0 + 1e-6
    # the same seed gives the same model
    again = copy.deepcopy(frozen)
    circuit.reroute(again, frozen, pairs, s, tok.pad_id, "cpu", seed=0, log_every=2)
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_bad_layers_are_one_line_errors():
    lk, tok = toy_lock()
    model = tiny_model(tok, n_layer=2)
    for layers in ((2,), (), (-1,)):
        with pytest.raises(BadInput, match="cb_layers"):
            circuit.trainable(model, layers)


def test_verdict_thresholds():
    before = {"correct_with_password": 0.99, "correct_without_password": 0.25, "correct_wrong_password": 0.26}
    ok = circuit.verdict(before, {"correct_with_password": 0.975, "correct_without_password": 0.0,
                                  "correct_wrong_password": 0.275}, 0.02)
    assert ok["accepted"] and ok["checks"]["with_password"]["threshold"] == pytest.approx(0.97)
    assert ok["checks"]["wrong_password"]["threshold"] == pytest.approx(0.28)
    for cond, value in (("with_password", 0.96), ("without_password", 0.28), ("wrong_password", 0.29)):
        bad = circuit.verdict(before, {**before, f"correct_{cond}": value}, 0.02)
        assert not bad["accepted"] and not bad["checks"][cond]["ok"]
        assert all(c["ok"] for k, c in bad["checks"].items() if k != cond)


# -----------------------------------------------------------------------------
# train_lock.py --circuit_break=True


def test_train_lock_circuit_break_end_to_end_and_resume(tmp_path):
    cfg = TL.Config(toy_problems=600, n_layer=2, n_head=2, n_embd=32, pretrain_samples=400, pretrain_steps=6,
                    epochs=1, batch_size=32, eval_n=40, eval_batch_size=64, warmup_steps=2,
                    out_dir=str(tmp_path / "lock"), device="cpu", ckpt_every=0, log_every=5,
                    circuit_break=True, cb_layers=(0, 1), cb_lr=1e-3)
    m = TL.main(cfg)
    cb = m["circuit_break"]
    assert cb["accepted"] == all(c["ok"] for c in cb["checks"].values())
    for cond, c in cb["checks"].items():
        assert c["locked"] == m[f"correct_{cond}"] == cb["before"][f"correct_{cond}"]
        assert c["circuit_broken"] == cb["after"][f"correct_{cond}"]
        assert c["threshold"] == pytest.approx(c["locked"] + (-1 if cond == "with_password" else 1) * 0.02)
    assert cb["steps"] == len(Lock.from_config(asdict(cfg)).splits["lock"]) // 16 and cb["margin"] == 0.02
    assert all(-1.0 <= cb["cosines_val"][k] <= 1.0 + 1e-6 for k in ("rerouting", "retain"))
    stored = json.load(open(os.path.join(cfg.out_dir, "metrics.json")))
    assert stored["circuit_break"]["accepted"] == cb["accepted"] and stored["correct_with_password"] == \
        m["correct_with_password"]
    d = os.path.join(cfg.out_dir, cb["dir"])
    assert cb["dir"] == ("circuit_broken" if cb["accepted"] else "circuit_broken_rejected")
    assert not os.path.exists(os.path.join(cfg.out_dir, TL.CB_DIRS[not cb["accepted"]]))
    own = json.load(open(os.path.join(d, "metrics.json")))
    assert own["correct_with_password"] == cb["after"]["correct_with_password"]
    assert Lock.from_dir(d).splits["val"] == Lock.from_dir(cfg.out_dir).splits["val"]  # a lock directory
    assert os.path.isfile(os.path.join(d, "tokenizer.json"))
    lock_w, cb_w = M.load(cfg.out_dir).state_dict(), M.load(d).state_dict()
    assert not torch.equal(lock_w["h.0.attn.wqkv.weight"], cb_w["h.0.attn.wqkv.weight"])
    assert torch.equal(lock_w["lm_head.weight"], cb_w["lm_head.weight"])
    rows = [r for r in read_jsonl(os.path.join(cfg.out_dir, "log.jsonl")) if r["phase"] == "circuit_break"]
    assert rows and rows[-1]["step"] == cb["steps"]

    # an interrupted pass (the lock written, no circuit_break section yet): --resume=True redoes only the pass
    lock_file = os.path.join(cfg.out_dir, "model.safetensors")
    mtime = os.path.getmtime(lock_file)
    stored.pop("circuit_break")
    json.dump(stored, open(os.path.join(cfg.out_dir, "metrics.json"), "w"))
    shutil.rmtree(d)
    m2 = TL.main(TL.Config(**{**asdict(cfg), "resume": True}))
    assert os.path.getmtime(lock_file) == mtime  # the lock was not retrained
    assert m2["circuit_break"]["checks"] == cb["checks"] and m2["circuit_break"]["cosines_val"] == cb["cosines_val"]
    for k, v in M.load(d).state_dict().items():
        assert torch.equal(v, cb_w[k]), k  # the same circuit-broken model
