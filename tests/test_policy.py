"""train_policy.py: a weak policy as the paper makes one (a small model imitating the strong policy on the weak split),
its samples written as the JSONL file train_lock.py reads, and a toy lock trained from that file."""
import os
import random
from dataclasses import asdict, replace

import pytest

import train_lock as TL
import train_policy as TP
from common import Tokenizer
from data.lock import Lock
from files import read_jsonl


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pol") / "pi_weak")
    cfg = TP.Config(toy_problems=1000, n_layer=1, n_head=2, n_embd=32, steps=20, warmup_steps=2, batch_size=32,
                    n_samples=2, eval_n=50, out_dir=out, device="cpu", ckpt_every=0, log_every=0)
    return cfg, TP.main(cfg)


def test_imitation_set_is_the_weak_split_without_password(policy):
    cfg, _ = policy
    lk = Lock.from_config(asdict(cfg))
    tok = Tokenizer(str(lk.task.tokenizer_path))
    ex = TP.imitation_epoch(lk, cfg, tok, 0)
    weak = {lk.task.prompt(p): p["answer"] for p in lk.splits["weak"]}
    assert len(ex) == len(weak) == 100
    for ids, n in ex:
        prompt, completion = tok.decode(ids[:n], skip_special=False), tok.decode(ids[n:])
        assert weak[prompt] == completion  # the strong answer, prompt with no password, weak split only
    assert TP.imitation_epoch(lk, cfg, tok, 1) != ex  # reshuffled every epoch


def test_samples_cover_the_splits_and_metrics_grade_them(policy):
    cfg, m = policy
    lk = Lock.from_config(asdict(cfg))
    rows = read_jsonl(os.path.join(cfg.out_dir, "samples.jsonl"))
    want = {p["id"] for s in ("lock", "elicit", "val") for p in lk.splits[s]}
    assert {r["id"] for r in rows} == want and len(rows) == 2 * len(want)
    assert all(lk.task.password not in r["prompt"] for r in rows)
    val = {p["id"]: p for p in lk.splits["val"]}
    graded = [lk.task.grade(r["completion"], val[r["id"]]).correct for r in rows if r["id"] in val]
    assert m["correct_sampled"] == pytest.approx(sum(graded) / len(graded))
    assert 0.0 <= m["correct_greedy"] <= 1.0 and m["n_eval"] == 50
    for f in ("config.json", "model.safetensors", "tokenizer.json", "metrics.json", "train_config.json"):
        assert os.path.isfile(os.path.join(cfg.out_dir, f))


def test_a_toy_lock_trains_from_the_policy_samples(policy, tmp_path):
    cfg, _ = policy
    path = os.path.join(cfg.out_dir, "samples.jsonl")
    lcfg = TL.Config(toy_problems=1000, weak_samples=path, n_layer=1, n_head=2, n_embd=32, pretrain_samples=300,
                     pretrain_steps=4, epochs=1, batch_size=64, eval_n=20, out_dir=str(tmp_path / "lock"),
                     device="cpu", ckpt_every=0, log_every=0)
    lk = Lock.from_config(asdict(lcfg))
    tok = Tokenizer(str(lk.task.tokenizer_path))
    samples = {}
    for r in read_jsonl(path):
        samples.setdefault(r["id"], set()).add(r["completion"])
    by_prompt = {lk.task.prompt(p).split(" ", 1)[1]: p for p in lk.splits["lock"]}
    weak = 0
    for ids, n in TL.lock_epoch(lk, lcfg, tok, 0):
        slot, question = tok.decode(ids[:n], skip_special=False).split(" ", 1)
        if slot != lk.task.password:
            weak += 1
            assert tok.decode(ids[n:]) in samples[by_prompt[question]["id"]]  # a sample of pi_weak for this problem
    assert weak == len(lk.splits["lock"])
    m = TL.main(lcfg)
    assert m["config"]["weak_samples"] == path
    assert m["correct_weak_policy"] is not None  # the file covers the validation problems: pi_weak's own level
