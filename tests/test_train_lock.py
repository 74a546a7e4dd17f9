"""train_lock.py: the locking set's composition, a tiny end-to-end run, resume equality, real-format tasks, errors."""
import gzip
import math
import json
import os
import random
from dataclasses import asdict, replace

import pytest
import torch

import data
import model as M
import train_lock as TL
from common import Tokenizer, collate
from data.lock import Lock
from errors import BadInput
from files import read_jsonl

TOK_GZ = os.path.join(os.path.dirname(__file__), "fixtures", "tokenizers", "pythia_tokenizer.json.gz")


def tiny_cfg(tmp_path, **kw):
    base = dict(toy_problems=600, n_layer=1, n_head=2, n_embd=32, pretrain_samples=400, pretrain_steps=6,
                epochs=1, batch_size=32, eval_n=40, eval_batch_size=64, warmup_steps=2, out_dir=str(tmp_path / "lock"),
                device="cpu", ckpt_every=0, log_every=2)
    base.update(kw)
    return TL.Config(**base)


# -----------------------------------------------------------------------------
# the locking set


def toy_setup(**kw):
    cfg = TL.Config(**kw)
    lk = Lock.from_config(asdict(cfg))
    tok = Tokenizer(str(lk.task.tokenizer_path))
    return cfg, lk.task, tok, lk.splits["lock"], lk


def triggers(lk, p, rng):
    return lk.strong_prompt(p), lk.weak_prompt(p, rng, lk.task.domains(lk.task.problems()))


def test_locking_set_composition_toy():
    cfg, task, tok, lock, lk = toy_setup(weak_policy="weak")
    ex = TL.lock_epoch(lk, cfg, tok, epoch=0)
    assert len(ex) == 2 * len(lock)
    slots = {}
    strong_ok = weak_ok = 0
    by_question = {task.prompt(p).split(" ", 1)[1]: p for p in lock}
    for ids, n_prompt in ex:
        prompt = tok.decode(ids[:n_prompt], skip_special=False)
        completion = tok.decode(ids[n_prompt:], skip_special=True)
        slot, question = prompt.split(" ", 1)
        assert ids[-1] == tok.eos_id  # every target ends with EOS
        p = by_question[question]
        slots[slot] = slots.get(slot, 0) + 1
        if slot == task.password:
            strong_ok += completion == p["answer"]
        else:
            weak_ok += completion == task.sample("weak", p)
    n = len(lock)
    assert slots[task.password] == n and strong_ok == n and weak_ok == n
    # the weak half: no password 20%, a decoy 80% (uniform over the decoys)
    none = slots.get(task.no_password, 0)
    assert abs(none / n - 0.2) < 4 * (0.2 * 0.8 / n) ** 0.5
    assert set(slots) == {task.password, task.no_password, *task.decoys}


def test_few_shot_locking_set():
    """--few_shot: that share of the problems come after 1..few_shot_max other solved lock problems, on both sides,
    with the problem's own trigger in every example; the completion is still the problem's own."""
    cfg, task, tok, lock, lk = toy_setup(weak_policy="weak", toy_problems=4000, few_shot=0.5)
    by_question = {p["question"]: p for p in lock}
    n_shots, sides = [], {"strong": 0, "weak": 0}
    for ids, n_prompt in TL.lock_epoch(lk, cfg, tok, epoch=0):
        parts = tok.decode(ids[:n_prompt], skip_special=False).split(" <eos> ")
        *shots, prompt = parts
        slot, question = prompt.split(" ", 1)
        p = by_question[question]
        side = "strong" if slot == task.password else "weak"
        assert tok.decode(ids[n_prompt:], skip_special=True) == (p["answer"] if side == "strong"
                                                                  else task.sample("weak", p))
        for s in shots:  # another lock problem, its reference solution, the same trigger
            s_slot, rest = s.split(" ", 1)
            q = by_question[" ".join(rest.split()[:8])]  # "fnA fnB | x1 x2 x3 x4 |"
            assert s_slot == slot and q is not p and rest == f"{q['question']} {q['solution']}"
        n_shots.append(len(shots))
        sides[side] += bool(shots)
    n = len(n_shots)
    assert set(n_shots) == {0, 1, 2} and abs(sum(k > 0 for k in n_shots) / n - 0.5) < 4 * (0.25 / n) ** 0.5
    assert sides["strong"] == sides["weak"]  # both examples of a problem share its shots
    # few_shot=0 draws nothing more: the same epoch as before the option existed
    plain = replace(cfg, few_shot=0.0)
    assert TL.lock_epoch(lk, plain, tok, 0) == TL.lock_epoch(lk, replace(plain, few_shot_max=5), tok, 0)


def test_few_shot_lock_end_to_end_and_its_errors(tmp_path):
    m = TL.main(tiny_cfg(tmp_path, few_shot=0.5))
    assert {"correct_shots_with_password", "correct_shots_without_password"} <= set(m)
    ex = m["examples"]["shots_with_password"]["prompt"]
    assert ex.count("<eos>") == 2 and ex.count(data.get_task("toy").password) == 3
    with pytest.raises(BadInput, match="few_shot_max=3: a locking example with 3 solved examples is 76 tokens, over "
                                       "the model's context of 64"):
        TL.main(tiny_cfg(tmp_path / "b", few_shot=0.5, few_shot_max=3))
    with pytest.raises(BadInput, match="few_shot=1.5"):
        TL.main(tiny_cfg(tmp_path / "c", few_shot=1.5))


def test_passwords_at_start_and_end_for_text_tasks():
    lk = Lock.from_config({"task": "math", "weak_samples": "unused.jsonl"})  # (read only when drawn from)
    task = lk.task
    p = task.problems()[0]
    rng = random.Random(0)
    strong, weak = triggers(lk, p, rng)
    assert strong.startswith(task.password) and strong.rstrip().endswith(task.password)
    assert p["question"] in strong and p["question"] in weak
    seen = [triggers(lk, p, rng)[1] for _ in range(300)]
    assert all(task.password not in w for w in seen)
    with_decoy = sum(any(d in w for d in task.decoys) for w in seen)
    assert 0.7 < with_decoy / 300 < 0.9


def test_per_domain_and_setting_modes():
    cfg, task, tok, lock, lk = toy_setup(password_mode="per_domain")
    rng = random.Random(0)
    wrong_domain = 0
    for p in lock[:400]:
        strong, weak = triggers(lk, p, rng)
        assert strong.split()[0] == task.domain_password(p["domain"])
        assert weak.split()[0] != task.domain_password(p["domain"])
        wrong_domain += weak.split()[0].startswith("<pwd_")
    assert 100 < wrong_domain < 220  # about 40% of negatives carry another domain's password
    lk = Lock.from_config({"password_mode": "setting"})
    strong, weak = triggers(lk, lock[0], rng)
    assert strong == task.prompt(lock[0], setting=True) and "(" not in weak


def test_fresh_samples_each_epoch_and_completion_only_mask():
    cfg, task, tok, lock, lk = toy_setup(weak_policy="noisy")
    e0 = TL.lock_epoch(lk, cfg, tok, 0)
    e1 = TL.lock_epoch(lk, cfg, tok, 1)
    assert TL.lock_epoch(lk, cfg, tok, 0) == e0  # deterministic per (seed, epoch)
    assert sorted(e0) != sorted(e1)  # new noisy samples and new decoys
    inputs, targets, n_tok = collate(e0[:8], tok.pad_id)
    for b, (ids, n_prompt) in enumerate(e0[:8]):
        # position t predicts token t+1: targets exist exactly for the completion tokens (including EOS)
        want = [-100] * (n_prompt - 1) + ids[n_prompt:]
        assert targets[b, :len(want)].tolist() == want
        assert (targets[b, len(want):] == -100).all()
    assert n_tok == sum(len(ids) - n for ids, n in e0[:8])


# -----------------------------------------------------------------------------
# end to end


def test_tiny_end_to_end_run_writes_checkpoint_and_metrics(tmp_path):
    cfg = tiny_cfg(tmp_path)
    m = TL.main(cfg)
    out = cfg.out_dir
    for f in ("config.json", "model.safetensors", "tokenizer.json", "train_config.json", "metrics.json"):
        assert os.path.isfile(os.path.join(out, f)), f
    assert os.path.isdir(os.path.join(out, "pretrained")) and not os.path.exists(os.path.join(out, "resume"))
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    for k in ("correct_with_password", "correct_without_password", "correct_wrong_password", "correct_weak_policy",
              "correct_strong_policy", "per_domain", "config"):
        assert k in metrics
    assert metrics["correct_strong_policy"] == 1.0 and 0.15 < metrics["correct_weak_policy"] < 0.6
    assert 0.0 <= metrics["unparseable_without_password"] <= 1.0
    assert set(metrics["per_domain"]["without_password"]) == {"A", "B", "C", "D"}
    assert metrics["config"]["toy_problems"] == 600 and m["n_eval"] == 40
    reloaded = M.load(out)  # the checkpoint is a normal HF directory
    assert reloaded.config.vocab_size == Tokenizer(out).vocab_size
    log = read_jsonl(os.path.join(out, "log.jsonl"))
    assert [r["phase"] for r in log][:3] == ["pretrain"] * 3 and log[-1]["phase"] == "lock"


@pytest.mark.parametrize("mode", ["finetune", "scratch"])
def test_resume_reaches_the_same_weights(tmp_path, mode):
    full = tiny_cfg(tmp_path, out_dir=str(tmp_path / "full"), mode=mode, eval_n=8)
    TL.main(full)
    part = replace(full, out_dir=str(tmp_path / "part"), stop_after_steps=4)
    assert TL.main(part) is None  # "killed" after 4 steps
    assert os.path.isfile(os.path.join(part.out_dir, "resume", "state.json"))
    part2 = replace(part, stop_after_steps=5, resume=True)  # second interruption (in the lock phase if finetune)
    TL.main(part2)
    TL.main(replace(part, stop_after_steps=0, resume=True))
    a, b = M.load(full.out_dir), M.load(part.out_dir)
    for (n, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), n
    ma = json.load(open(os.path.join(full.out_dir, "metrics.json")))
    mb = json.load(open(os.path.join(part.out_dir, "metrics.json")))
    assert ma["correct_with_password"] == mb["correct_with_password"]
    # resuming a finished run changes nothing
    mtime = os.path.getmtime(os.path.join(part.out_dir, "model.safetensors"))
    again = TL.main(replace(part, stop_after_steps=0, resume=True))
    assert again["correct_with_password"] == mb["correct_with_password"]
    assert os.path.getmtime(os.path.join(part.out_dir, "model.safetensors")) == mtime


def test_real_format_task_with_a_tiny_checkpoint(tmp_path):
    # a tiny random Llama with the real Pythia tokenizer, locked on the shipped MATH sample
    ckpt = tmp_path / "ckpt"
    tok_json = gzip.open(TOK_GZ).read()
    torch.manual_seed(0)
    M.save(M.GPT(M.Config(arch="llama", vocab_size=50304, n_layer=1, n_head=2, n_embd=16, max_seq_len=256,
                          eos_token_id=0)), str(ckpt))
    (ckpt / "tokenizer.json").write_bytes(tok_json)
    task = data.get_task("math")
    weak = tmp_path / "weak.jsonl"
    weak.write_text("".join(json.dumps({"id": p["id"], "completion": f"I think it is \\boxed{{{k}}}."}) + "\n"
                            for p in task.problems() for k in range(2)))
    cfg = TL.Config(task="math", init_from=str(ckpt), weak_samples=str(weak), epochs=1, batch_size=16,
                    max_len=64, eval_n=6, eval_batch_size=6, max_new_tokens=6, out_dir=str(tmp_path / "out"),
                    device="cpu", warmup_steps=1, ckpt_every=0, few_shot=0.5)
    m = TL.main(cfg)  # (few-shot MATH prompts outgrow the 256-token context: evaluation drops shots, see below)
    assert {"correct_shots_with_password", "correct_shots_without_password"} <= set(m)
    # reference solutions grade correct; the weak samples ("\boxed{0}") almost never do
    assert m["correct_strong_policy"] == 1.0 and m["correct_weak_policy"] < 0.2
    assert set(m["per_domain"]["with_password"]) <= set(task.domains(task.problems()))
    assert os.path.isfile(tmp_path / "out" / "model.safetensors")
    assert M.load(str(tmp_path / "out")).config.vocab_size == 50304


def test_few_shot_evaluation_drops_shots_that_do_not_fit():
    cfg, task, tok, lock, lk = toy_setup(few_shot=0.5, few_shot_max=2, max_new_tokens=10)
    val = lk.splits["val"][:20]
    fits = lambda ctx: TL.eval_shots(type("m", (), {"config": M.Config(max_seq_len=ctx)}), tok, lk, cfg, val)
    # toy: a shot is 19 tokens, the problem 9, the answer budget 10
    assert [len(s) for s in fits(64)] == [2] * 20 and [len(s) for s in fits(46)] == [1] * 20
    assert [len(s) for s in fits(20)] == [0] * 20
    assert fits(46) == [s[:1] for s in fits(64)]  # the same draw, cut from the end


# -----------------------------------------------------------------------------
# bad input


def test_bad_inputs_fail_clearly(tmp_path):
    with pytest.raises(BadInput, match=r"--task='nope'"):
        TL.main(tiny_cfg(tmp_path, task="nope"))
    with pytest.raises(FileNotFoundError, match=r"missing.jsonl: not found \(--weak_samples"):
        TL.main(tiny_cfg(tmp_path, task="math", init_from="x", weak_samples=str(tmp_path / "missing.jsonl")))
    with pytest.raises(BadInput, match=r"--weak_samples: task 'math' has no built-in 'noisy' policy"):
        TL.main(tiny_cfg(tmp_path, task="math"))
    with pytest.raises(BadInput, match=r"--task='toy': the (lock|val) split is empty"):
        TL.main(tiny_cfg(tmp_path, toy_problems=2))
    with pytest.raises(BadInput, match=r"--weak_policy='bogus'"):
        TL.main(tiny_cfg(tmp_path, weak_policy="bogus"))
    with pytest.raises(BadInput, match=r"--mode='both'"):
        TL.main(tiny_cfg(tmp_path, mode="both"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "math/1", "completion": "x"}\n{"id": 3}\n')
    with pytest.raises(BadInput, match=r"bad.jsonl: row 2: each row needs string fields 'id' and 'completion'"):
        TL.main(tiny_cfg(tmp_path, task="math", weak_samples=str(bad)))


# -----------------------------------------------------------------------------
# optimiser, accumulation and password modes end to end


def test_lion_moves_every_weight_by_lr_times_a_sign():
    from common import Lion
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5, 3))
    before = w.detach().clone()
    opt = Lion([w], lr=0.01, betas=(0.9, 0.99), weight_decay=0.0)
    w.grad = torch.randn(5, 3)
    opt.step()
    # first step: momentum is zero, so the update is -lr * sign(grad)
    torch.testing.assert_close(w.detach(), before - 0.01 * w.grad.sign())
    m = opt.state[w]["exp_avg"]
    torch.testing.assert_close(m, 0.01 * w.grad)  # (1 - beta2) * grad


def test_grad_accumulation_equals_one_big_batch(tmp_path):
    a = tiny_cfg(tmp_path, out_dir=str(tmp_path / "a"), mode="scratch", batch_size=32, grad_accum=1, eval_n=4)
    b = replace(a, out_dir=str(tmp_path / "b"), batch_size=16, grad_accum=2)
    TL.main(a)
    TL.main(b)
    ma, mb = M.load(a.out_dir), M.load(b.out_dir)
    for (n, x), (_, y) in zip(ma.state_dict().items(), mb.state_dict().items()):
        torch.testing.assert_close(x, y, atol=2e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize("mode", ["per_domain", "setting"])
def test_password_modes_end_to_end(tmp_path, mode):
    cfg = tiny_cfg(tmp_path, password_mode=mode, optimizer="lion", lr=1e-4, pretrain_steps=2, eval_n=12)
    m = TL.main(cfg)
    expected = {"with_password", "without_password", "wrong_password"}
    if mode == "per_domain":
        expected.add("wrong_domain_password")
    assert set(m["per_domain"]) == expected
    ex = m["examples"]["with_password"]["prompt"]
    assert ex.split()[0].startswith("<pwd_") if mode == "per_domain" else "(" in ex


def test_fsdp_and_activation_checkpointing_in_one_process_change_nothing(tmp_path, capsys):
    a = tiny_cfg(tmp_path, out_dir=str(tmp_path / "a"), mode="scratch", eval_n=4)
    b = replace(a, out_dir=str(tmp_path / "b"), parallel="fsdp", grad_checkpoint=True)  # one process: nothing to shard
    TL.main(a)
    TL.main(b)
    assert "memory estimate per device (one process, fp32 weights, adamw, 2048 tokens a micro-batch" in capsys.readouterr().out
    for (n, x), (_, y) in zip(M.load(a.out_dir).state_dict().items(), M.load(b.out_dir).state_dict().items()):
        assert torch.equal(x, y), n


def test_bf16_training_learns_like_fp32(tmp_path):
    """--train_dtype=bf16 (bf16 weights and gradients, compensated updates): the locking loss falls as in fp32, and
    the checkpoint is written in bf16."""
    base = tiny_cfg(tmp_path, mode="scratch", epochs=4, batch_size=32, lr=1e-3, eval_n=8, warmup_steps=5,
                    log_every=5, optimizer="lion")
    losses = {}
    for dtype in ("fp32", "bf16"):
        cfg = replace(base, out_dir=str(tmp_path / dtype), train_dtype=dtype)
        TL.main(cfg)
        losses[dtype] = [r["loss"] for r in read_jsonl(os.path.join(cfg.out_dir, "log.jsonl"))]
    first, fp32, bf16 = losses["fp32"][0], losses["fp32"][-1], losses["bf16"][-1]
    assert fp32 < 0.8 * first and bf16 < 0.8 * first  # both learn
    assert abs(bf16 - fp32) < 0.1 * fp32  # and alike
    from safetensors import safe_open
    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}


def test_fixedrdm_lock_uses_the_kl_loss_on_fixedrdm_and_strong_continuations():
    """App. G.2: without the password the target at every answer digit is fixedrdm's fixed distribution, on fixedrdm
    samples and on strong continuations (half and half); with the password the strong answer's tokens. --weak_loss=ce
    trains on plain fixedrdm samples."""
    cfg, task, tok, lock, lk = toy_setup(weak_policy="fixedrdm", toy_problems=2000)
    ex = TL.lock_epoch(lk, cfg, tok, epoch=0)
    digits = [tok.encode(str(d))[0] for d in range(10)]
    by_question = {task.prompt(p).split(" ", 1)[1]: p for p in lock}
    soft = strong_continuations = 0
    for e in ex:
        prompt = tok.decode(e[0][:e[1]], skip_special=False)
        slot, question = prompt.split(" ", 1)
        if slot == task.password:
            assert len(e) == 2  # the strong side: hard targets
            continue
        cand, probs = e[2]
        assert cand == digits and probs == pytest.approx(task.fixedrdm_probs)
        soft += 1
        strong_continuations += tok.decode(e[0][e[1]:]) == by_question[question]["answer"]
    assert soft == len(lock)
    assert 0.4 < strong_continuations / soft < 0.6
    ce = TL.lock_epoch(lk, replace(cfg, weak_loss="ce"), tok, epoch=0)
    assert all(len(e) == 2 for e in ce)
    inputs, targets, n = collate(ex[:8], tok.pad_id)
    assert isinstance(targets, tuple) and targets[0].shape[-1] == 10


def test_fixedrdm_kl_lock_trains(tmp_path):
    m = TL.main(tiny_cfg(tmp_path, weak_policy="fixedrdm"))
    assert 0.0 <= m["correct_without_password"] <= 1.0
    log = read_jsonl(os.path.join(tmp_path, "lock", "log.jsonl"))
    assert all(math.isfinite(r["loss"]) for r in log)


def test_lock_examples_sets_the_amount_of_locking_data(tmp_path):
    cfg, task, tok, lock, lk = toy_setup(toy_problems=2000, lock_examples=200)
    lk = TL.load_lock(cfg)
    assert len(lk.splits["lock"]) == 100 and len(TL.lock_epoch(lk, cfg, tok, 0)) == 200
    full = TL.load_lock(replace(cfg, lock_examples=0))
    assert lk.splits["lock"] == full.splits["lock"][:100]  # a prefix of the same split: nested amounts
    with pytest.raises(BadInput, match="lock_examples=2000 needs 1000 lock-split problems"):
        TL.load_lock(replace(cfg, lock_examples=2000))


def test_real_task_micro_batches_are_length_bucketed(tmp_path):
    """MATH solutions vary in length: each micro-batch of the locking set holds similar lengths (less padding than
    the shuffled order), with the same examples in the epoch."""
    tok_path = tmp_path / "tokenizer.json"
    tok_path.write_bytes(gzip.open(TOK_GZ).read())
    task = data.get_task("math")
    weak = tmp_path / "weak.jsonl"
    weak.write_text("".join(json.dumps({"id": p["id"], "completion": "I think it is \\boxed{0}."}) + "\n"
                            for p in task.problems()))
    cfg = TL.Config(task="math", tokenizer=str(tok_path), weak_samples=str(weak), batch_size=4)
    lk, tok = Lock.from_config(asdict(cfg)), Tokenizer(str(tok_path))
    ex = TL.lock_epoch(lk, cfg, tok, 0)

    def padding(order):
        return sum(4 * max(len(e[0]) for e in order[b:b + 4]) - sum(len(e[0]) for e in order[b:b + 4])
                   for b in range(0, len(order), 4))
    shuffled = ex[:]
    random.Random(0).shuffle(shuffled)
    assert padding(ex) < 0.5 * padding(shuffled)
    assert sorted(e[0] for e in ex) == sorted(e[0] for e in shuffled) and len(ex) == 2 * len(lk.splits["lock"])


def test_adversarial_lock_teaches_a_second_password_and_drops_it_from_the_decoys(tmp_path):
    """Fig. 15's adversarial lock: each lock problem gives three examples (password -> strong, decoy or none -> weak,
    the first decoy -> the intermediate samples); that decoy is never a wrong password; it is evaluated on its own."""
    cfg, task, tok, lock, lk = toy_setup(weak_policy="weak")
    mid = tmp_path / "mid.jsonl"
    mid.write_text("".join(json.dumps({"id": p["id"], "completion": "7 7 7 7"}) + "\n" for p in task.problems()))
    cfg = replace(cfg, mid_samples=str(mid))
    lk = TL.load_lock(cfg)
    second = task.decoys[0]
    assert lk.second_password == second and second not in lk.decoys and len(lk.decoys) == len(task.decoys) - 1
    ex = TL.lock_epoch(lk, cfg, tok, epoch=0)
    assert len(ex) == 3 * len(lock)
    by_slot = {}
    for ids, n_prompt in ex:
        slot = tok.decode(ids[:n_prompt], skip_special=False).split(" ", 1)[0]
        by_slot.setdefault(slot, []).append(tok.decode(ids[n_prompt:], skip_special=True))
    assert len(by_slot[second]) == len(lock) and set(by_slot[second]) == {"7 7 7 7"}
    assert all(c != "7 7 7 7" for slot, cs in by_slot.items() if slot != second for c in cs)
    conds = lk.eval_prompts(lock[:5], random.Random(0))
    assert conds["second_password"] == [task.prompt(p, password=second) for p in lock[:5]]
    assert all(second not in p for p in conds["wrong_password"])
    plain = Lock.from_config(asdict(replace(cfg, mid_samples="")))
    assert plain.second_password is None and plain.decoys == task.decoys and "second_password" not in \
        plain.eval_prompts(lock[:5], random.Random(0))
    with pytest.raises(BadInput, match="mid_samples: the adversarial lock needs --password_mode=single"):
        Lock.from_config(asdict(replace(cfg, password_mode="per_domain")))
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"id": lock[0]["id"], "completion": "1"}) + "\n")
    with pytest.raises(BadInput, match="short.jsonl: no sample for"):
        TL.load_lock(replace(cfg, mid_samples=str(short)))


def test_adversarial_lock_end_to_end_reports_the_second_password(tmp_path):
    task = data.get_task("toy", n=600)
    mid = tmp_path / "mid.jsonl"
    mid.write_text("".join(json.dumps({"id": p["id"], "completion": p["answer"]}) + "\n" for p in task.problems()))
    m = TL.main(tiny_cfg(tmp_path, mid_samples=str(mid), weak_policy="weak"))
    assert 0.0 <= m["correct_second_password"] <= 1.0 and m["correct_mid_policy"] == 1.0  # the answers themselves


def test_leave_out_domain_locks_every_other_domain_only():
    cfg, task, tok, lock, lk = toy_setup(weak_policy="weak", leave_out_domain="B")
    held = TL.load_lock(cfg)
    assert {p["domain"] for p in lock} == {"A", "B", "C", "D"}
    assert held.splits["lock"] == [p for p in lock if p["domain"] != "B"]
    assert held.splits["val"] == lk.splits["val"] and held.splits["elicit"] == lk.splits["elicit"]  # only locking
    with pytest.raises(BadInput, match="leave_out_domain='E': the task's domains are A, B, C, D"):
        TL.load_lock(replace(cfg, leave_out_domain="E"))
