"""elicit_sft.py: demo selection, the epoch rule, resume, demo sources, errors, and a tiny end-to-end run."""
import json
import os
from dataclasses import replace

import pytest

import elicit_sft as ES
from data.lock import Lock
from errors import BadInput
from files import read_jsonl




def cfg_for(locked, tmp_path, **kw):
    base = dict(locked=locked, ks=(1, 4), epochs=(1.0, 2.0), eval_n=40, heldout_n=30, batch_size=8,
                out_dir=str(tmp_path / "sft"), device="cpu")
    base.update(kw)
    return ES.Config(**base)


def test_epoch_rule():
    cfg = ES.Config(epoch_mult=1.0)
    assert ES.epoch_counts(cfg, 1) == [256, 512, 1024]
    assert ES.epoch_counts(cfg, 64) == [4, 8, 16]
    assert ES.epoch_counts(cfg, 256) == ES.epoch_counts(cfg, 512) == [1, 2, 4]
    assert ES.epoch_counts(ES.Config(epoch_mult=16.0), 8) == [512, 1024, 2048]
    assert ES.epoch_counts(ES.Config(epoch_mult=16.0, epoch_choice=(1,)), 8) == [1024]
    assert ES.epoch_counts(ES.Config(epoch_mult=1.0, epoch_choice=(2, 0)), 512) == [4, 1]
    with pytest.raises(BadInput, match="epoch_choice"):
        ES.epoch_counts(ES.Config(epoch_choice=(3,)), 8)
    assert ES.epoch_counts(ES.Config(epochs=(3.0,)), 8) == [3.0]


def test_demo_pool_is_disjoint_from_validation_and_heldout(locked, tmp_path):
    cfg = cfg_for(locked, tmp_path)
    lock = Lock.from_dir(locked)
    pool, heldout, val = ES.demo_pool(cfg, lock, ES.demo_policy(cfg, lock))
    ids = lambda ps: {p["id"] for p in ps}  # noqa: E731
    assert not ids(pool) & ids(val) and not ids(pool) & ids(heldout) and not ids(heldout) & ids(val)
    assert ids(pool) | ids(heldout) == ids(lock.splits["elicit"])  # demos come from the elicitation split only
    assert ids(val) <= ids(lock.splits["val"])
    dom = ES.demo_pool(replace(cfg, train_domain="B"), lock, ES.demo_policy(cfg, lock))[0]
    assert dom and {p["domain"] for p in dom} == {"B"}


def test_end_to_end_rows_resume_and_determinism(locked, tmp_path):
    cfg = cfg_for(locked, tmp_path)
    table = ES.main(cfg)
    rows = read_jsonl(os.path.join(cfg.out_dir, "results.jsonl"))
    assert [(r["n_demos"], r["epochs"]) for r in rows] == [(1, 1.0), (1, 2.0), (4, 1.0), (4, 2.0)]
    for r in rows:
        for k in ("n_demos", "seed", "epochs", "correct_without_password", "correct_with_password", "per_domain",
                  "demo_source"):
            assert k in r
        assert 0.0 <= r["correct_without_password"] <= 1.0 and r["demo_source"] == "strong"
    assert rows[2]["demo_ids"][:1] == rows[0]["demo_ids"]  # nested: the k=4 demos start with the k=1 demo
    assert set(table) == {1, 4} and table[1][0] == 1  # one seed per k
    # resume: nothing is recomputed, a new k only adds its own rows
    mtime = os.path.getmtime(os.path.join(cfg.out_dir, "results.jsonl"))
    ES.main(cfg)
    assert os.path.getmtime(os.path.join(cfg.out_dir, "results.jsonl")) == mtime
    ES.main(replace(cfg, ks=(1, 4, 2)))
    rows2 = read_jsonl(os.path.join(cfg.out_dir, "results.jsonl"))
    assert rows2[:4] == rows and [r["n_demos"] for r in rows2[4:]] == [2, 2]
    # the same seed gives the same numbers in a fresh directory
    again = replace(cfg, out_dir=str(tmp_path / "again"), ks=(4,))
    ES.main(again)
    r_again = read_jsonl(os.path.join(again.out_dir, "results.jsonl"))
    assert [r["correct_without_password"] for r in r_again] == [r["correct_without_password"] for r in rows[2:4]]
    assert r_again[0]["demo_ids"] == rows[2]["demo_ids"]


def test_demo_sources(locked, tmp_path):
    cfg = cfg_for(locked, tmp_path)
    lock = Lock.from_dir(locked)
    task = lock.task
    pool = ES.demo_pool(cfg, lock, ES.demo_policy(cfg, lock))[0]
    p = pool[0]
    import random
    rng = random.Random(0)
    assert ES.demo_policy(cfg, lock).draw(p, rng) == p["answer"]
    weak = ES.demo_policy(replace(cfg, demo_source="weak"), lock).draw(p, rng)
    assert weak in {task.sample("noisy", p, random.Random(s)) for s in range(50)}  # the lock's weak policy
    middle = ES.demo_policy(replace(cfg, demo_source="intermediate"), lock)
    assert middle.program == "noisy" and middle.p == 0.5
    demos = tmp_path / "demos.jsonl"
    demos.write_text("".join(json.dumps({"id": q["id"], "completion": "1 2 3 4 | 5 6 7 8"}) + "\n" for q in pool[:6]))
    fcfg = cfg_for(locked, tmp_path, demo_source="file", demos=str(demos), ks=(0,), epochs=(1.0,),
                   out_dir=str(tmp_path / "file"), save=True)
    ES.main(fcfg)
    rows = read_jsonl(os.path.join(fcfg.out_dir, "results.jsonl"))
    assert rows[0]["n_demos"] == 0 and len(rows[0]["demo_ids"]) == 6
    assert os.path.isfile(os.path.join(fcfg.out_dir, "models", "k0_s0_e1", "model.safetensors"))


def test_bad_inputs(locked, tmp_path):
    with pytest.raises(FileNotFoundError, match="run `python train_lock.py` first"):
        ES.main(cfg_for(str(tmp_path / "nope"), tmp_path))
    with pytest.raises(BadInput, match=r"--demo_source='best'"):
        ES.main(cfg_for(locked, tmp_path, demo_source="best"))
    with pytest.raises(FileNotFoundError, match=r"missing.jsonl: not found \(--demos"):
        ES.main(cfg_for(locked, tmp_path, demo_source="file", demos="missing.jsonl"))
    with pytest.raises(BadInput, match=r"--train_domain='Z'"):
        ES.main(cfg_for(locked, tmp_path, train_domain="Z"))


def test_cross_domain_summary_and_plot_flag(locked, tmp_path, capsys, monkeypatch):
    cfg = cfg_for(locked, tmp_path, train_domain="C", ks=(2,), epochs=(1.0,))
    ES.main(cfg)
    out = capsys.readouterr().out
    assert "in domain C" in out and "other domains" in out
    rows = read_jsonl(os.path.join(cfg.out_dir, "results.jsonl"))
    by_id = {p["id"]: p for p in Lock.from_dir(locked).task.problems()}
    assert all(by_id[i]["domain"] == "C" for i in rows[0]["demo_ids"])
    assert set(rows[0]["per_domain"]["without_password"]) == {"A", "B", "C", "D"}  # evaluated on every domain
    import builtins
    real_import = builtins.__import__

    def no_matplotlib(name, *a, **kw):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *a, **kw)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(BadInput, match="pip install matplotlib"):
        ES.main(replace(cfg, plot=True))


def test_plot_is_written_when_matplotlib_is_installed(locked, tmp_path):
    pytest.importorskip("matplotlib")
    cfg = cfg_for(locked, tmp_path, ks=(1, 2), epochs=(1.0,), plot=True)
    ES.main(cfg)
    assert os.path.getsize(os.path.join(cfg.out_dir, "sft.png")) > 1000
