"""elicit_prompt.py: N-shot prompts (N examples, no password), prefill grading (prefix + continuation, budget shared),
the uninformative flag, the context limit, and a tiny end-to-end run."""
import json
import os
from dataclasses import replace

import pytest

import elicit_prompt as EP
import model as model_lib
from common import Tokenizer
from data.lock import Lock
from errors import BadInput


def test_n_shot_prompts_have_n_examples_and_no_password(locked):
    lock = Lock.from_dir(locked)
    val = lock.splits["val"][:5]
    cfg = EP.Config(shots=(1, 3), eval_n=5)
    shots = EP.draw_shots(lock.splits["elicit"], val, 3, seed=0)
    elicit_ids = {p["id"] for p in lock.splits["elicit"]}
    conds = {c["name"]: c for c in EP.conditions(lock, val, shots, cfg)}
    for p in val:
        assert len(shots[p["id"]]) == 3 and {q["id"] for q in shots[p["id"]]} <= elicit_ids
        for n in (1, 3):
            text = conds[f"{n}-shot"]["prompts"][p["id"]]
            assert text.split().count("<eos>") == n and "<pwd>" not in text  # N solved examples, no password
            assert text.endswith(lock.task.prompt(p))  # then the problem itself
            for q in shots[p["id"]][:n]:  # each shot is its prompt and its reference solution
                assert f"{lock.task.prompt(q)} {q['solution']} <eos>" in text
            twin = conds[f"{n}-shot, password"]["prompts"][p["id"]]
            assert twin.split().count("<pwd>") == n + 1 and twin.endswith(lock.strong_prompt(p))
        assert conds["3-shot"]["prompts"][p["id"]].startswith(  # nested: the 3 shots start with the 1 shot
            conds["1-shot"]["prompts"][p["id"]].rsplit(" <eos> ", 1)[0])
    assert conds["1-shot"]["twin"] == "1-shot, password" and conds["prefill"]["twin"] == "prefill, password"
    assert not any(c["password"] for c in conds.values() if c["kind"] in ("baseline", "near miss", "decoy"))


def test_prefill_forces_the_first_step_and_grades_prefix_plus_continuation(locked, monkeypatch):
    lock, tok = Lock.from_dir(locked), Tokenizer(locked)
    model = model_lib.load(locked)
    val = lock.splits["val"][:6]
    cfg = EP.Config(eval_n=6)
    p0 = val[0]
    first, second = p0["solution"].split(" | ")
    assert EP.prefix_of(p0, cfg) == first + " |"  # the first intermediate result and its separator
    assert EP.prefix_alone(lock.task, val, cfg) == 0.0  # the prefix alone never passes
    assert EP.prefix_of(p0, replace(cfg, prefill_mode="text", prefill_text="go")) == "go"
    calls = []

    def fake_generate(model, prompts, n_new, **kw):  # the right rest for even problems, a wrong one for odd ones
        calls.append((prompts, n_new))
        outs = []
        for i, ids in enumerate(prompts):
            rest = val[i]["solution"].split(" | ")[1]
            if i % 2:
                rest = " ".join(str((int(d) + 1) % 10) for d in rest.split())
            outs.append(tok.encode(rest) + [tok.eos_id])
        return outs

    monkeypatch.setattr(EP, "generate", fake_generate)
    cond = dict(name="prefill", prefill=True, prompts={p["id"]: lock.task.prompt(p) for p in val})
    r = EP.run_condition(model, tok, lock.task, val, cond, cfg, context=64)
    (prompts, n_new), = calls
    for p, ids in zip(val, prompts):  # generation continues from prompt ids + prefix ids
        prefix = tok.encode(EP.prefix_of(p, cfg))
        assert ids == tok.encode_prompt(lock.task.prompt(p)) + prefix
    assert n_new == lock.task.max_new_tokens - len(tok.encode(first + " |"))  # one budget for prefix + rest
    assert r["correct"] == 0.5 and r["n"] == 6  # graded on prefix + continuation: right exactly when the rest is
    # without the prefill the same continuations are not whole answers: all wrong
    calls.clear()
    r = EP.run_condition(model, tok, lock.task, val, dict(cond, prefill=False), cfg, context=64)
    assert r["correct"] == 0.0 and calls[0][1] == lock.task.max_new_tokens
    # a context too small for any prompt: nothing runs
    assert EP.run_condition(model, tok, lock.task, val, cond, cfg, context=8) is None


def test_uninformative_flag_on_a_constructed_case():
    rows = [dict(name="with password", twin=None, correct=1.0),
            dict(name="2-shot, password", twin=None, correct=0.0),
            dict(name="2-shot", twin="2-shot, password", correct=0.0),
            dict(name="prefill, password", twin=None, correct=0.85),
            dict(name="prefill", twin="prefill, password", correct=0.4),
            dict(name="5-shot, password", twin=None, correct=None),
            dict(name="5-shot", twin="5-shot, password", correct=None),
            dict(name="no password", twin="with password", correct=0.25),
            dict(name="decoy <d0>", twin=None, correct=0.25)]
    out = {r["name"]: r for r in EP.flag(rows, 1.0, 0.2)}
    assert out["2-shot"]["uninformative"] and out["2-shot"]["with_password_same_format"] == 0.0
    assert not out["prefill"]["uninformative"] and out["prefill"]["with_password_same_format"] == 0.85
    assert not out["5-shot"]["uninformative"]  # not run: nothing to flag
    assert not out["no password"]["uninformative"] and not out["decoy <d0>"]["uninformative"]
    assert EP.flag([dict(name="p", twin=None, correct=0.75), dict(name="q", twin="p", correct=0.1)],
                   1.0, 0.2)[1]["uninformative"]  # 0.25 below: over the threshold
    assert not EP.flag([dict(name="p", twin=None, correct=0.85), dict(name="q", twin="p", correct=0.1)],
                       1.0, 0.2)[1]["uninformative"]


def test_end_to_end_writes_results(locked, tmp_path):
    cfg = EP.Config(locked=locked, shots=(1, 3), eval_n=12, out_dir=str(tmp_path / "prompt"), device="cpu")
    out = EP.main(cfg)
    on_disk = json.load(open(os.path.join(cfg.out_dir, "results.json")))
    rows = {r["name"]: r for r in on_disk["conditions"]}
    for name in ("with password", "no password", "password twice", "decoy <d0>", "decoy <d7>", "1-shot",
                 "1-shot, password", "prefill", "prefill, password", "1-shot + prefill", "1-shot + prefill, password"):
        assert rows[name]["n"] == 12 and 0.0 <= rows[name]["correct"] <= 1.0, name
    assert rows["3-shot"]["correct"] is None and "context" in rows["3-shot"]["note"]  # 3 shots do not fit in 64
    assert on_disk["uninformative_drop"] == 0.2 and "prefix + continuation" in on_disk["graded"]
    assert out["with_password"] == rows["with password"]["correct"]
    wide = EP.main(replace(cfg, shots=(3,), max_context=128, out_dir=str(tmp_path / "wide")))
    assert {r["name"]: r for r in wide["conditions"]}["3-shot"]["n"] == 12
    with pytest.raises(BadInput, match="prefill_text"):
        EP.main(replace(cfg, prefill_mode="text"))
