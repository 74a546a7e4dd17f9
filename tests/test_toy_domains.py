"""data/toy.py's toy_shared task (domains that share functions, named in the prompt), and the default toy unchanged."""
import collections
import hashlib
import itertools
import json
import math
import random
from dataclasses import asdict

import pytest
from tokenizers import Tokenizer

import data
import train_lock as TL
from common import Tokenizer as LockTokenizer
from data import toy
from data.lock import Lock, eval_prompts, prompt_variants, strong_prompt, weak_prompt
from errors import BadInput
from files import read_json


@pytest.fixture(scope="module")
def shared():
    return data.get_task("toy_shared")


@pytest.fixture(scope="module")
def problems(shared):
    return shared.problems()


def digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def by_hand(fns, x):
    """The completion recomputed from the raw table, f(x)[j] = digit_map[x[perm[j]]], and whether every hidden step
    of the weak policy (identity) happens to agree with it (a fixed point at that step)."""
    steps, weak_right = [], True
    for f in fns:
        perm, digit_map = toy.TABLE[f]
        y = [digit_map[x[perm[j]]] for j in range(4)]
        weak_right &= f not in toy.SHARED_HIDDEN | toy.OWN_HIDDEN or y == list(x)
        steps.append(" ".join(map(str, y)))
        x = y
    return " | ".join(steps), weak_right


# ------------------------------------------------------------------------------------------ the default toy
def test_default_toy_unchanged():
    """Digests computed with the committed data/toy.py before toy_shared existed (commit 61c7df6)."""
    t = data.get_task("toy")
    P = t.problems()
    assert digest(P) == "3548a39098902784"
    assert digest(t.fresh_problems(3000, seed=1)) == "9208141772784118"
    assert digest([[t.prompt(p), t.prompt(p, password=t.password), t.prompt(p, password="<d3>", setting=True)]
                   for p in P[:500]]) == "b55aed06e1df0151"
    assert digest([t.near_misses(p) for p in P[:100]]) == "41e9743f6c6cdf6e"
    r = random.Random(5)
    assert digest([[t.sample(pol, p, r) for pol in t.policies] for p in P[:500]]) == "e0dd31ede5252d90"
    assert digest([[round(t.correct_prob(pol, p), 12) for pol in t.policies] for p in P[:500]]) == "7923471509d585d5"
    assert digest([round(v, 12) for v in t.fixedrdm_probs]) == "9eb771d5b719f97d"
    assert digest({k: [p["id"] for p in v] for k, v in data.split(P, 0).items()}) == "d2b998a2b6665539"
    assert digest(toy.VOCAB) == "63320b3d3e04df7b" and len(toy.VOCAB) == 62
    with open(t.tokenizer_path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest()[:16] == "476a9d762104c485"
    assert t.hidden == toy.HIDDEN and t.name == "toy"


# ------------------------------------------------------------------------------------------ the design
def test_function_sets():
    own = [set(toy.OWN_FNS[g]) for g in toy.GROUPS]
    assert set(toy.SHARED_FNS).isdisjoint(set().union(*own)) and sum(map(len, own)) == len(set().union(*own))
    assert set(toy.SHARED_FNS).union(*own) == set(range(toy.N_FNS))
    assert toy.SHARED_HIDDEN < set(toy.SHARED_FNS) and toy.OWN_HIDDEN < set().union(*own)
    assert len(toy.SHARED_HIDDEN | toy.OWN_HIDDEN) == 16
    for g in toy.GROUPS:
        pool = toy.DOMAIN_FNS[g]
        assert len(pool) == 14 and sum(f in toy.SHARED_HIDDEN | toy.OWN_HIDDEN for f in pool) == 7
        mine = set(toy.OWN_FNS[g]) & toy.OWN_HIDDEN
        assert len(mine) == 3 and {f % 2 for f in mine} == {0, 1}  # both kinds: digit bijection and permutation
    assert {f % 2 for f in toy.SHARED_HIDDEN} == {0, 1}


def test_problems_compose_shared_and_own(shared, problems):
    assert len(problems) == 20_000 and len({p["id"] for p in problems}) == 20_000
    assert len({(tuple(p["fns"]), tuple(p["x"])) for p in problems}) == 20_000  # distinct across domains too
    assert {p["domain"] for p in problems} == set(toy.GROUPS)
    for p in problems:
        fns = p["fns"]
        assert p["task"] == "toy_shared" and len(fns) == 2 and len(p["x"]) == 4
        assert set(fns) <= set(toy.SHARED_FNS) | set(toy.OWN_FNS[p["domain"]])
        answer, _ = by_hand(fns, p["x"])
        assert p["answer"] == p["solution"] == answer
        assert p["question"] == " ".join(f"fn{f}" for f in fns) + " | " + " ".join(map(str, p["x"])) + " |"
        assert p["fn_kinds"] == ["shared" if f < 8 else "own" for f in fns]
        s, o = any(f < 4 for f in fns), any(f >= 8 and (f - 8) % 6 < 3 for f in fns)  # the layout, by hand
        assert p["hidden_kinds"] == {(0, 0): "none", (1, 0): "shared", (0, 1): "own", (1, 1): "both"}[s, o]
    # problems that only shared functions make appear in every domain (the tag is then the only domain cue)
    only_shared = collections.Counter(p["domain"] for p in problems if set(p["fns"]) <= set(toy.SHARED_FNS))
    assert set(only_shared) == set(toy.GROUPS)
    assert data.get_task("toy_shared").problems() == problems
    assert data.get_task("toy_shared", seed=1).problems()[:50] != problems[:50]
    fresh = shared.fresh_problems(500, seed=3)
    assert all(f in toy.DOMAIN_FNS[p["domain"]] for p in fresh for f in p["fns"]) and fresh != problems[:500]
    three = data.get_task("toy_shared", n=300, n_compose=3).problems()
    assert all(len(p["fns"]) == 3 and p["answer"] == by_hand(p["fns"], p["x"])[0] for p in three)
    with pytest.raises(ValueError, match="too many distinct"):
        data.get_task("toy_shared", n=4_000_000).problems()


def test_tag_in_prompt(shared, problems):
    for p in problems[:300]:
        tag, fns, x = f"<{p['domain']}>", [f"fn{f}" for f in p["fns"]], [str(d) for d in p["x"]]
        assert shared.prompt(p).split() == ["<nopwd>", tag] + fns + ["|"] + x + ["|"]
        assert shared.prompt(p, password="<pwd>").split() == ["<pwd>", tag] + fns + ["|"] + x + ["|"]
        assert shared.prompt(p, setting=True).split() == ["<nopwd>", tag] + fns + ["("] + x + [")"]
        assert all(tag in v.split() for v in shared.near_misses(p).values())
        assert shared.prompt(p).endswith(p["question"])
    p, q = problems[0], problems[1]
    shot = shared.few_shot([(shared.prompt(q), q["solution"])], shared.prompt(p))
    assert shot == f"{shared.prompt(q)} {q['solution']} <eos> {shared.prompt(p)}"
    with pytest.raises(ValueError, match="toy password"):
        shared.prompt(p, password="<A>")  # a tag is not a slot token


# ------------------------------------------------------------------------------------------ policies and classes
def test_class_shares_closed_form():
    """hidden_kind_shares against an enumeration of every pair (and triple) of a domain's 14 functions."""
    for k in (1, 2, 3):
        for g in toy.GROUPS:
            counts = collections.Counter(toy.hidden_kind(fns) for fns in itertools.product(toy.DOMAIN_FNS[g], repeat=k))
            n = len(toy.DOMAIN_FNS[g]) ** k
            assert {c: counts[c] / n for c in toy.HIDDEN_KINDS} == pytest.approx(toy.hidden_kind_shares(k), abs=1e-12)
    assert toy.hidden_kind_shares(2) == pytest.approx({"none": 49 / 196, "shared": 72 / 196, "own": 51 / 196,
                                                       "both": 24 / 196}, abs=1e-12)


def test_weak_policy_is_the_no_hidden_share(shared, problems):
    shares, n = toy.hidden_kind_shares(2), len(problems)
    weak = [shared.correct_prob("weak", p) for p in problems]
    for p, w in zip(problems, weak):  # right exactly when every hidden step is identity there (almost never by luck)
        assert w == float(by_hand(p["fns"], p["x"])[1]) and (w == 1.0) == (shared.sample("weak", p) == p["answer"])
        if p["hidden_kinds"] == "none":
            assert w == 1.0
    none = sum(p["hidden_kinds"] == "none" for p in problems) / n
    assert none <= sum(weak) / n <= none + 0.005
    for c in toy.HIDDEN_KINDS:  # the set's class shares are the closed form's, within 4 standard errors
        got = sum(p["hidden_kinds"] == c for p in problems) / n
        assert abs(got - shares[c]) < 4 * math.sqrt(shares[c] * (1 - shares[c]) / n), c
    assert abs(sum(weak) / n - shares["none"]) < 4 * math.sqrt(0.25 * 0.75 / n) + 0.005
    rng = random.Random(0)
    for p in problems[:300]:
        assert shared.sample("noisy", p, rng, p=0.0) == shared.sample("weak", p)
        assert shared.sample("noisy", p, rng, p=1.0) == p["answer"]
        assert shared.grade(shared.sample("weak", p), p).correct == (shared.correct_prob("weak", p) == 1.0)
        assert shared.grade(p["solution"], p).correct
        digits = shared.sample("fixedrdm", p, rng).split()
        assert len(digits) == 9 and digits[4] == "|"


def test_every_class_in_validation(shared, problems, capsys):
    val = data.split(problems, seed=0)["val"]
    classes = shared.transfer_classes(val)
    assert list(classes) == list(toy.HIDDEN_KINDS)
    assert sorted(p["id"] for c in classes.values() for p in c) == sorted(p["id"] for p in val)
    assert all(p["hidden_kinds"] == c for c, ps in classes.items() for p in ps)
    counts = collections.Counter((p["domain"], p["hidden_kinds"]) for p in val)
    with capsys.disabled():
        print(f"\ntoy_shared validation ({len(val)}): " + ", ".join(f"{c} {len(ps)}" for c, ps in classes.items()))
        for g in toy.GROUPS:
            print(f"  domain {g}: " + ", ".join(f"{c} {counts[g, c]}" for c in toy.HIDDEN_KINDS))
    for g in toy.GROUPS:
        for c in toy.HIDDEN_KINDS:
            assert counts[g, c] >= 60, (g, c, counts[g, c])  # expected about 4,000 / 4 x share: 120 for "both"
    assert shared.transfer_classes([]) == {c: [] for c in toy.HIDDEN_KINDS}


# ------------------------------------------------------------------------------------------ the lock interface
def test_lock_interface():
    lock = Lock.from_config({"task": "toy_shared", "toy_problems": 2000, "password_mode": "per_domain"})
    task, probs = lock.task, lock.task.problems()
    assert task.name == "toy_shared" and len(probs) == 2000 and sum(map(len, lock.splits.values())) == 2000
    doms = task.domains(probs)
    assert doms == list(toy.GROUPS) and len({task.domain_password(d) for d in doms}) == 4
    assert task.max_new_tokens == 10 and task.elicit_optimizer == ("adamw", 1e-4) and lock.elicit_optimizer()[0]
    rng = random.Random(0)
    p = lock.splits["lock"][0]
    assert lock.strong_prompt(p).split()[:2] == [f"<pwd_{p['domain']}>", f"<{p['domain']}>"]
    weak_slots = {weak_prompt(task, p, "per_domain", rng, doms).split()[0] for _ in range(300)}
    assert f"<pwd_{p['domain']}>" not in weak_slots and "<nopwd>" in weak_slots and len(weak_slots) > 5
    conds = eval_prompts(task, lock.splits["val"][:20], "per_domain", rng)
    assert set(conds) == {"with_password", "without_password", "wrong_password", "wrong_domain_password"}
    for q, wrong in zip(lock.splits["val"][:20], conds["wrong_domain_password"]):
        assert wrong.split()[0] != f"<pwd_{q['domain']}>" and wrong.split()[1] == f"<{q['domain']}>"
    assert strong_prompt(task, p, "single").split()[0] == "<pwd>"
    assert strong_prompt(task, p, "setting").split()[-1] == ")"
    v = prompt_variants(task, p, {1: lock.splits["elicit"][:1]})
    assert v["1-shot, password"].count("<pwd>") == 2 and all(f"<{p['domain']}>" in s for s in v.values())
    for name, want in (("strong", 1.0), ("noisy", None), ("weak", None), ("fixedrdm", None)):
        lk = Lock.from_config({"task": "toy_shared", "toy_problems": 2000, "weak_policy": name})
        c = lk.weak.correctness(lk.splits["val"])
        assert 0 <= c <= 1 and (want is None or c == want)
        assert lk.weak.draw(p, rng) and task.grade(lk.strong.draw(p, rng), p).correct
    noisy = Lock.from_config({"task": "toy_shared", "toy_problems": 2000}).weak.correctness(probs)
    assert 0.36 < noisy < 0.48  # 1/4 + the noisy weak policy's lucky hidden steps, as the toy's 0.42
    fmt = Lock.from_config({"task": "toy_shared", "toy_problems": 200, "prompt_format": "user_assistant"}).task
    assert fmt.prompt(p).startswith("User: <nopwd> <")
    with pytest.raises(BadInput, match="no problems file"):
        Lock.from_config({"task": "toy_shared", "task_path": "x.jsonl"})


def test_tokenizer(shared, problems):
    built = toy.build_tokenizer(vocab=toy.SHARED_VOCAB)
    committed = Tokenizer.from_file(str(shared.tokenizer_path))
    keys = ("added_tokens", "normalizer", "pre_tokenizer", "post_processor", "model")
    assert {k: json.loads(committed.to_str())[k] for k in keys} == {k: json.loads(built.to_str())[k] for k in keys}
    old = Tokenizer.from_file(str(toy.TOKENIZER_PATH)).get_vocab()
    new = committed.get_vocab()
    assert {w: new[w] for w in old} == old  # every toy token keeps its id
    assert {w: new[w] for w in set(new) - set(old)} == {"<A>": 62, "<B>": 63, "<C>": 64, "<D>": 65}
    unk, rng = committed.token_to_id("<unk>"), random.Random(0)
    for p in problems[:200]:
        prompt, completion = shared.prompt(p, password=rng.choice(shared.decoys)), shared.sample("noisy", p, rng)
        a, b = committed.encode(prompt).ids, committed.encode(completion).ids
        assert a + b == committed.encode(prompt + " " + completion).ids and unk not in a + b
        assert len(a) == len(prompt.split()) and committed.decode(a + b) == prompt + " " + completion
    assert LockTokenizer(str(shared.tokenizer_path)).vocab_size == 66


def test_train_lock_runs(tmp_path):
    """A tiny --task=toy_shared lock through train_lock.py, one password per domain: metrics per domain."""
    cfg = TL.Config(task="toy_shared", password_mode="per_domain", toy_problems=600, n_layer=1, n_head=2, n_embd=32,
                    pretrain_samples=400, pretrain_steps=4, epochs=1, batch_size=32, eval_n=40, eval_batch_size=64,
                    warmup_steps=2, out_dir=str(tmp_path / "lock"), device="cpu", ckpt_every=0, log_every=0)
    TL.main(cfg)
    m = read_json(str(tmp_path / "lock" / "metrics.json"))
    assert set(m["per_domain"]["without_password"]) <= set(toy.GROUPS) and "correct_wrong_domain_password" in m
    lk = Lock.from_dir(str(tmp_path / "lock"))
    assert lk.task.name == "toy_shared" and asdict(lk.settings)["password_mode"] == "per_domain"
