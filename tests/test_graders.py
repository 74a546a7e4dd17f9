"""Tests for graders.py: hand-worked answer tables, MATH and MBPP excerpts that once failed, code grading and
cheats, fuzzing. The sandbox itself (hostile programs) is tested in tests/test_sandbox.py.

Run: python -m pytest -q tests/test_graders.py   (about 12 s on 2 cores; mbpp/123's own reference takes 3-5 s)
"""

import json
import random
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import graders  # noqa: E402
from graders import (GRADERS, Grade, code_time_limit, critique_similarity, grade_code, grade_critique,  # noqa: E402
                     grade_gsm8k, grade_math, grade_mmlu, grade_toy, last_boxed, math_equal)

CASES = Path(__file__).parent / "graders_cases"


def jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (CASES / name).read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------------------------------------------
# MATH

MATH_EQUAL = [
    ("\\frac{1}{2}", "\\dfrac{1}{2}"), ("\\tfrac{3}{4}", "\\frac{3}{4}"), ("\\frac12", "\\frac{1}{2}"),
    ("\\frac1{2}", "\\frac{1}{2}"), ("0.5", "\\frac{1}{2}"), ("1/2", "\\frac{1}{2}"), ("0.75", "\\tfrac{3}{4}"),
    ("\\frac{6}{4}", "\\frac{3}{2}"), ("2.50", "\\frac{5}{2}"), ("-\\frac{1}{2}", "\\frac{-1}{2}"),
    ("-0.5", "-\\frac12"), ("0.3333333", "\\frac{1}{3}"), ("x = 3", "3"), ("3", "y=3"), ("k = 7", "7"),
    ("5\\text{ cm}", "5"), ("10\\text{ inches}", "10"), ("12\\text{cm}^2", "12"), ("90^\\circ", "90"),
    ("90^{\\circ}", "90"), ("50\\%", "50"), ("\\$18.90", "18.90"), ("18.90", "18.9"), ("-5", "-5.0"),
    ("3.", "3"), (".5", "\\frac12"), ("1,000", "1000"), ("1,234,567", "1234567"), ("12{,}345", "12345"),
    ("1,\\!000", "1000"), ("\u22123", "-3"), ("\\sqrt3", "\\sqrt{3}"), ("2\\sqrt2", "2\\sqrt{2}"),
    ("\\frac{\\sqrt{3}}{2}", "\\dfrac{\\sqrt3}{2}"), ("\\frac {1}{2}", "\\frac{1}{2}"),
    ("(-\\infty, 3]", "(-\\infty,3]"), ("\\left( 1, 2 \\right)", "(1,2)"), ("(1, 2.0)", "(1,2)"),
    ("[0.5, 1)", "[\\frac{1}{2},1)"), ("\\text{(A)}", "A"), ("\\text{(C)}", "(C)"), ("\\text{Monday}", "Monday"),
    ("\\mbox{5}", "5"), ("\\left\\{1, 2\\right\\}", "\\{1,2\\}"), ("x^2+1", "x^2 + 1"),
    # matrices: spacing, and entry by entry
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}"),
    ("\\begin{pmatrix} 48/65 \\\\ -6/65 \\end{pmatrix}",
     "\\begin{pmatrix} \\frac{48}{65} \\\\ -\\frac{6}{65} \\end{pmatrix}"),
    ("\\begin{pmatrix} - 2 \\\\ 0.5 \\end{pmatrix}", "\\begin{pmatrix}-2\\\\\\frac12\\end{pmatrix}"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\\\ \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    # mixed numbers (a proper fraction part)
    ("1\\frac{12}{13}", "\\frac{25}{13}"), ("2\\frac{1}{2}", "2.5"), ("-1\\frac{1}{2}", "-\\frac{3}{2}"),
    ("6 \\frac15", "31/5"), ("137 \\dfrac{1}{2}", "137.5"),
    # text answers after "x =", "\\text{ and }" lists, units after a space inside \\text
    ("x = \\text{Evelyn}", "\\text{Evelyn}"), ("x = \\text{Evelyn}", "Evelyn"), ("x=\\text{ Evelyn}", "Evelyn"),
    ("x = 5\\text{ cm}", "5"), ("12\\text{ and }13", "12, 13"), ("7, -2, \\text{ and } -5", "7,-2,-5"),
    ("8\\sqrt{3} \\text { square inches}", "8\\sqrt3"),
]

MATH_NOT_EQUAL = [
    ("\\frac{1}{2}", "\\frac{1}{3}"), ("3", "-3"), ("-\\frac{1}{2}", "\\frac{1}{2}"), ("(1,2)", "[1,2]"),
    ("(1,2)", "(2,1)"), ("(1,2)", "(1,2,3)"), ("\\sqrt{2}", "2"), ("10", "100"), ("1,000", "1"), ("1,2", "12"),
    ("x^2", "x^3"), ("0.33", "\\frac{1}{3}"), ("2", "2.01"), ("\\text{(A)}", "B"), ("5\\text{ cm}", "6"),
    ("\\infty", "-\\infty"), ("50\\%", "0.5"), ("", "0"), ("", ""), ("\\frac{1}{0}", "\\frac{2}{0}"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}"),
    ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\\\ 3 \\\\ 4 \\end{pmatrix}"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "(1,2)"),
    ("2\\frac{1}{2}", "1"), ("2\\frac{3}{2}", "\\frac{7}{2}"), ("80\\frac{1}{2}\\frac{1}{5}", "\\frac{161}{10}"),
    ("12\\text{ and }13", "12"), ("7, -2, \\text{ and } -5", "7,-2"), ("x = \\text{Evelyn}", "\\text{Dana}"),
    ("x+1", "1+x"), ("2\\sqrt{2}", "\\sqrt{8}"), ("1,3", "3,1"),
]


@pytest.mark.parametrize("a,b", MATH_EQUAL)
def test_math_equal_pairs(a, b):
    assert math_equal(a, b) and math_equal(b, a)


@pytest.mark.parametrize("a,b", MATH_NOT_EQUAL)
def test_math_not_equal_pairs(a, b):
    assert not math_equal(a, b) and not math_equal(b, a)


@pytest.mark.parametrize("text,expected", [
    ("so the answer is \\boxed{5}.", "5"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("$\\boxed{\\left\\{ x : x^{2} > 1 \\right\\}}$", "\\left\\{ x : x^{2} > 1 \\right\\}"),
    ("\\fbox{7}", "7"),
    ("first \\boxed{1}, then \\boxed{2}", "2"),
    ("\\boxed{1} and later \\fbox{3}", "3"),
    ("\\boxed {5}", "5"),
    ("$\\boxed 42$.", "42"),
    ("\\boxed{}", ""),
    ("\\boxed{1", None),
    ("\\boxed{2} and \\boxed{3", None),
    ("no box here: 5", None),
    ("\\boxeds{4}", None),
    ("\\boxed{3} then \\boxed", "3"),  # a bare \\boxed is a mention of the command, not an answer
    ("\\boxed{3}, put it in \\boxed.", "3"),
    ("\\boxed{3} and \\fbox $x$", "3"),
    ("\\fbox {x}", "x"),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


MODEL_FORMS = {  # how else a model may write the answer of each excerpt problem
    "algebra/168": "x = \\text{Evelyn}",
    "geometry/323": "\\frac{25}{13}",
    "geometry/330": "8\\sqrt3",
    "intermediate_algebra/808": "1+\\sqrt{2}, 1-\\sqrt{2}, 2+\\sqrt{3}, 2-\\sqrt{3}",
    "prealgebra/72": "12, 13",
    "precalculus/5": "\\begin{pmatrix}6\\\\3\\\\0\\end{pmatrix}",
    "precalculus/20": "\\begin{pmatrix}31&50\\\\-18&-29\\end{pmatrix}",
}


def test_math_reference_excerpts():
    """MATH test problems that once failed: the reference grades correct against its own boxed answer (as
    data/real.py reads it), and so does another way of writing that answer."""
    rows = jsonl("math_references.jsonl")
    assert sorted(r["id"] for r in rows) == sorted(MODEL_FORMS)
    for row in rows:
        problem = {"task": "math", "answer": last_boxed(row["solution"])}
        assert grade_math(row["solution"], problem).correct, row["id"]
        assert grade_math(f"So $\\boxed{{{MODEL_FORMS[row['id']]}}}$.", problem).correct, row["id"]


def test_grade_math():
    problem = {"task": "math", "answer": "\\frac{1}{2}"}
    assert grade_math("We get $x = \\boxed{\\dfrac12}$.", problem) == Grade(True, 1.0, "\\dfrac12")
    assert grade_math("Hence \\boxed{0.5}", problem).correct
    assert grade_math("\\boxed{\\frac{1}{3}}", problem) == Grade(False, 0.0, "\\frac{1}{3}")
    assert grade_math("The answer is 1/2.", problem) == Grade(False, 0.0, None)  # no box: unparseable


# ---------------------------------------------------------------------------------------------------
# GSM8K, MMLU, toy

@pytest.mark.parametrize("completion,answer,correct,parsed", [
    ("She pays 3 * 6 = $18.\nThe answer is 18.", "18", True, "18"),
    ("#### 1,234", "1234", True, "1234"),
    ("So she earns $1,234.50 in total. The answer is $1,234.50.", "1234.5", True, "1234.50"),
    ("The temperature drops to -3 degrees. The answer is -3", "-3", True, "-3"),
    ("She has 5 apples and buys 7 more, so 12", "12", True, "12"),
    ("The answer is 18. (Then 20 more words and a 7.)", "18", True, "18"),
    ("Work: 70 + 2\n#### 72\n", "72", True, "72"),
    ("The answer is: 42", "42", True, "42"),
    ("He ran 3.50 miles", "3.5", True, "3.50"),
    ("Half of it, 0.5", ".5", True, "0.5"),
    ("The answer is 17.", "18", False, "17"),
    ("It costs 1,000 dollars.", "100", False, "1000"),
    ("The numbers are 3, 4, and 5", "5", True, "5"),
    ("I don't know.", "5", False, None),
])
def test_gsm8k(completion, answer, correct, parsed):
    grade = grade_gsm8k(completion, {"task": "gsm8k", "answer": answer})
    assert (grade.correct, grade.parsed) == (correct, parsed)
    assert grade.score == float(correct)


@pytest.mark.parametrize("completion,parsed", [
    ("Answer: C", "C"), ("The answer is (B).", "B"), ("B", "B"), (" (D)", "D"), ("C) Paris", "C"), ("A.", "A"),
    ("the answer is option A", "A"), ("D because the others are wrong", "D"),
    ("A good question. The answer is C", "C"), ("Considering (A) and (B), I settle on (B)", "B"),
    ("Final answer:D", "D"),
    ("I'd pick B", None), ("The answer is unclear", None), ("", None), ("a", None),
    ("A good guess would be the second one", None), ("Answer: E", None), ("\n\n", None),
])
def test_mmlu(completion, parsed):
    grade = grade_mmlu(completion, {"task": "mmlu", "answer": "B"})
    assert grade.parsed == parsed
    assert grade.correct == (parsed == "B") and grade.score == float(parsed == "B")
    if parsed is None:
        assert grade == Grade(False, 0.0, None)


@pytest.mark.parametrize("completion,correct,score", [
    ("0 9 0 7 | 0 0 7 9", True, 1.0),
    ("  0 9 0 7 |\n0 0 7 9 ", True, 1.0),
    ("0 9 0 7 | 0 0 7 8", False, 7 / 8),
    ("0 9", False, 2 / 8),
    ("9 0 7 | 0 0 7 9", False, 1 / 8),  # shifted by one token: only position 5 still matches
    ("0 9 0 7 | 0 0 7 9 | 1", False, 1.0),
    ("", False, 0.0),
])
def test_toy(completion, correct, score):
    grade = grade_toy(completion, {"task": "toy", "answer": "0 9 0 7 | 0 0 7 9"})
    assert grade.correct == correct and grade.score == pytest.approx(score)


# ---------------------------------------------------------------------------------------------------
# Critiques: the threshold must stay calibrated on the hand-written table

def test_critique_threshold_is_calibrated():
    cases = json.loads((CASES / "critiques.json").read_text())
    pos = [critique_similarity(p, c["reference"]) for c in cases for p in c["same_bug"]]
    neg = [critique_similarity(n, c["reference"]) for c in cases for n in c["other_bug"]]
    assert len(pos) >= 20 and len(neg) >= 20

    def accuracy(t):
        return (sum(p >= t for p in pos) + sum(n < t for n in neg)) / (len(pos) + len(neg))
    auc = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    best = max(accuracy(t) for t in pos + neg)
    assert auc >= 0.95
    assert accuracy(graders.CRITIQUE_THRESHOLD) >= 0.9
    assert accuracy(graders.CRITIQUE_THRESHOLD) >= best - 0.05  # re-pick the threshold if the measure changes


def test_critique_must_name_the_quoted_code():
    ref = ("The condition `count == limit` is inverted: it should be `count != limit`, so the code takes the wrong "
           "branch exactly when it matters and returns a wrong result.")
    other = ref.replace("count", "idx").replace("limit", "size")  # same template, another program's expression
    terse = "Bug: `count == limit` must be `count != limit`."
    assert critique_similarity(other, ref) < graders.CRITIQUE_THRESHOLD
    assert critique_similarity(terse, ref) >= graders.CRITIQUE_THRESHOLD
    assert critique_similarity(ref.replace("`", ""), ref) == pytest.approx(1.0)


def test_grade_critique():
    ref = "The loop uses range(1, n), so n itself is never added to the sum; it should be range(1, n + 1)."
    problem = {"task": "critique", "answer": ref}
    assert grade_critique(ref, problem) == Grade(True, pytest.approx(1.0), ref)
    assert grade_critique("", problem) == Grade(False, 0.0, None)
    generic = grade_critique("The code is wrong and does not work for some inputs.", problem)
    assert not generic.correct and 0.0 <= generic.score < graders.CRITIQUE_THRESHOLD


# ---------------------------------------------------------------------------------------------------
# Code: small MBPP-style problems written here (reference passes, perturbed solutions fail)

def mbpp(name, tests, setup=""):
    return {"id": f"test/{name}", "task": "code", "domain": "mbpp", "question": "", "answer": "", "solution": "",
            "tests": tests, "setup": setup, "entry_point": None}


CODE_PROBLEMS = [
    (mbpp("add", ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2.5, 0.5) == 3.0"]),
     "def add(a, b):\n    return a + b\n",
     ["def add(a, b):\n    return a - b\n", "def add(a, b):\n    return str(a + b)\n"]),
    (mbpp("reverse", ["assert reverse_string('abc') == 'cba'", "assert reverse_string('') == ''",
                      "assert reverse_string('ab c') == 'c ba'"]),
     "def reverse_string(s):\n    return s[::-1]\n",
     ["def reverse_string(s):\n    return s\n", "def reverse_string(s):\n    return list(reversed(s))\n"]),
    (mbpp("prime", ["assert is_prime(7)", "assert not is_prime(9)", "assert is_prime(2) == True",
                    "assert not is_prime(1)"]),
     "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))\n",
     ["def is_prime(n):\n    return n % 2 == 1\n"]),
    (mbpp("maxlist", ["assert max_of([3, 1, 2]) == 3", "assert max_of([-5, -2]) == -2"]),
     "def max_of(xs):\n    best = xs[0]\n    for x in xs:\n        if x > best:\n            best = x\n"
     "    return best\n",
     ["def max_of(xs):\n    return min(xs)\n", "def max_of(xs):\n    return xs[0]\n"]),
    (mbpp("vowels", ["assert count_vowels('hello') == 2", "assert count_vowels('AEIOU xyz') == 5"]),
     "def count_vowels(s):\n    return sum(c in 'aeiouAEIOU' for c in s)\n",
     ["def count_vowels(s):\n    return sum(c in 'aeiou' for c in s)\n"]),
    (mbpp("unique", ["assert unique_sorted([3, 1, 3, 2]) == [1, 2, 3]", "assert unique_sorted([]) == []"]),
     "def unique_sorted(xs):\n    return sorted(set(xs))\n",
     ["def unique_sorted(xs):\n    return set(xs)\n", "def unique_sorted(xs):\n    return sorted(xs)\n"]),
    (mbpp("freq", ["assert word_freq('a b a') == {'a': 2, 'b': 1}", "assert word_freq('') == {}"]),
     "def word_freq(text):\n    counts = {}\n    for w in text.split():\n        counts[w] = counts.get(w, 0) + 1\n"
     "    return counts\n",
     ["def word_freq(text):\n    counts = {}\n    for w in text.split():\n        counts[w] = 1\n    return counts\n"]),
    (mbpp("area", ["assert math.isclose(circle_area(1), math.pi)", "assert math.isclose(circle_area(2), 4 * math.pi)"],
          setup="import math"),
     "def circle_area(r):\n    return math.pi * r ** 2\n",
     ["def circle_area(r):\n    return 3.14 * r ** 2\n"]),
]


ADD, ADD_REF = CODE_PROBLEMS[0][0], CODE_PROBLEMS[0][1]


@pytest.mark.parametrize("problem,reference,wrong", CODE_PROBLEMS, ids=[p["id"] for p, _, _ in CODE_PROBLEMS])
def test_code_reference_passes_and_perturbations_fail(problem, reference, wrong):
    assert grade_code(reference, problem) == Grade(True, 1.0, reference)
    fenced = "Here is my solution:\n```python\n" + reference + "```\nIt runs in linear time."
    assert grade_code(fenced, problem).correct
    for bad in wrong:
        grade = grade_code(bad, problem)
        assert not grade.correct and grade.score < 1.0


def test_setup_and_solution_errors_stop_the_tests():
    problem = dict(CODE_PROBLEMS[7][0], setup="import math\nraise RuntimeError('broken setup')")
    assert grade_code(CODE_PROBLEMS[7][1], problem).score == 0.0
    late_crash = ADD_REF + "raise ValueError('after the definition')\n"
    assert grade_code(late_crash, ADD).score == 0.0  # the program as a whole raised before its tests


def test_code_partial_credit_and_unparseable():
    problem = CODE_PROBLEMS[0][0]
    half_right = "def add(a, b):\n    return 3 if (a, b) == (1, 2) else 0\n"
    assert grade_code(half_right, problem).score == pytest.approx(2 / 3)  # add(-1, 1) == 0 holds by luck
    assert grade_code("", problem) == Grade(False, 0.0, None)
    assert grade_code("def add(a, b) return", problem) == Grade(False, 0.0, "def add(a, b) return")


HUMANEVAL_PROMPT = '''from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    """ Check if in given list of numbers, are any two numbers closer to each other than given threshold. """
'''
HUMANEVAL_CHECK = '''
METADATA = {'author': 'jt', 'dataset': 'test'}


def check(candidate):
    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True
    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False
    assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.95) == True
    assert candidate([1.1, 2.2, 3.1, 4.1, 5.1], 1.0) == True
    assert candidate([1.1, 2.2, 3.1, 4.1, 5.1], 0.5) == False
'''
HUMANEVAL = {"id": "test/humaneval0", "task": "code", "domain": "humaneval", "question": HUMANEVAL_PROMPT,
             "answer": "", "solution": "", "setup": "", "entry_point": "has_close_elements",
             "tests": [HUMANEVAL_CHECK, "check(has_close_elements)"]}
HUMANEVAL_BODY = '''    for i, a in enumerate(numbers):
        for j, b in enumerate(numbers):
            if i != j and abs(a - b) < threshold:
                return True
    return False
'''


def test_humaneval_style_check():
    full = HUMANEVAL_PROMPT + HUMANEVAL_BODY
    assert grade_code(full, HUMANEVAL) == Grade(True, 1.0, full)
    assert grade_code(HUMANEVAL_BODY, HUMANEVAL).correct  # a continuation of the prompt
    wrong = HUMANEVAL_BODY.replace("< threshold", "<= threshold / 2")
    assert grade_code(wrong, HUMANEVAL) == Grade(False, 0.0, HUMANEVAL_PROMPT + wrong)  # check() counts, def not
    cheat = "def check(candidate):\n    pass\n\ndef has_close_elements(numbers, threshold):\n    return True\n"
    assert not grade_code(cheat, HUMANEVAL).correct  # the solution cannot replace the test's check()


def mbpp_reference(row: dict) -> tuple[dict, str]:
    """An MBPP row as data/real.py's CodeTask reads it: (problem, reference solution)."""
    code = row["code"].replace("\r\n", "\n").replace("\r", "\n")
    return mbpp(str(row["task_id"]), row["test_list"], row["test_setup_code"]) | {"id": f"mbpp/{row['task_id']}"}, code


def test_mbpp_reference_excerpts():
    """mbpp/367's test setup builds trees with the Node class its solution defines (so the setup must run after
    the solution); mbpp/123's reference takes 3-5 s, past the 3 s floor (so its limit comes from that time)."""
    problems = {p["id"]: (p, code) for p, code in map(mbpp_reference, jsonl("mbpp_references.jsonl"))}
    assert code_time_limit(problems["mbpp/367"][0]) == graders.CODE_TIMEOUT_S
    assert code_time_limit(problems["mbpp/123"][0]) == graders.CODE_TIME_FACTOR * graders.REFERENCE_SECONDS["mbpp/123"]
    for problem, code in problems.values():
        assert grade_code(code, problem) == Grade(True, 1.0, code), problem["id"]


def test_time_limit_follows_the_reference(monkeypatch):
    problem = mbpp("slow", ["assert nap() == 1"])
    code = "import time\ndef nap():\n    time.sleep(1.0)\n    return 1\n"
    monkeypatch.setattr(graders, "CODE_TIMEOUT_S", 0.5)
    assert code_time_limit(problem) == 0.5 and grade_code(code, problem).score == 0.0
    monkeypatch.setitem(graders.REFERENCE_SECONDS, "test/slow", 0.6)  # limit 3 x 0.6 s
    assert code_time_limit(problem) == pytest.approx(1.8) and grade_code(code, problem).correct
    assert grade_code(code, problem, timeout=0.5).score == 0.0  # an explicit timeout overrides it


# ---------------------------------------------------------------------------------------------------
# Cheating completions: must not pass

CHEATS = {
    "os_exit": ADD_REF + "import os\nos._exit(0)\n",
    "sys_exit": ADD_REF + "import sys\nsys.exit(0)\n",
    "exit": ADD_REF + "exit()\n",
    "raise_system_exit_in_call": "def add(a, b):\n    raise SystemExit(0)\n",
    "eq_always_true": "class A:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"
                      "def add(a, b):\n    return A()\n",
    "int_subclass": "class I(int):\n    def __eq__(self, other):\n        return True\n"
                    "def add(a, b):\n    return I(0)\n",
    "eq_always_true_float": "class F(float):\n    def __eq__(self, other):\n        return True\n"
                            "def add(a, b):\n    return F(0.0)\n",
    "fake_markers": "import sys\nfor i in range(10):\n    print(f'{i:032x} passed {i}')\n"
                    "    sys.stdout.write(f'\\n{\"0\" * 32} passed {i}\\n')\ndef add(a, b):\n    return 0\n",
    "read_harness": "def add(a, b):\n    return 0\nprint(open('main.py').read())\n",
}


@pytest.mark.parametrize("name", sorted(CHEATS))
def test_cheats_do_not_pass(name):
    grade = grade_code(CHEATS[name], ADD)
    assert not grade.correct
    if name != "fake_markers":  # its add() returning 0 gets add(-1, 1) == 0 right
        assert grade.score == 0.0


def test_container_truth_and_builtin_cheats():
    evil = "class A:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
    problem = CODE_PROBLEMS[5][0]  # unique_sorted: results compared with lists
    assert not grade_code(evil + "def unique_sorted(xs):\n    return [A(), A(), A()]\n", problem).correct
    assert not grade_code(evil + "def unique_sorted(xs):\n    return {'k': A()}\n", problem).correct
    assert not grade_code(evil + "class L(list):\n    __eq__ = A.__eq__\n"
                          "def unique_sorted(xs):\n    return L()\n", problem).correct

    problem = mbpp("prime2", ["assert is_prime(7)", "assert all(is_prime(p) for p in (2, 3, 5))",
                              "assert abs(is_prime(11) - 1) < 1e-9"])
    truthy = ("class T:\n    def __bool__(self):\n        return True\n    def __sub__(self, o):\n        return self\n"
              "    def __abs__(self):\n        return 0\ndef is_prime(n):\n    return T()\n")
    patched = "import builtins\nbuiltins.all = lambda *a: True\ndef is_prime(n):\n    return n == 7\n"
    assert grade_code(truthy, problem) == Grade(False, 0.0, truthy)
    assert not grade_code(patched, problem).correct


# ---------------------------------------------------------------------------------------------------
# Random and adversarial strings: no grader raises, all finish quickly

def adversarial_strings():
    rng = random.Random(0)
    out = ["", "\x00", "\x00" * 1000, "{" * 100_000, "}" * 100_000, "\\boxed{" * 10_000, "\\boxed " * 10_000,
           "\\frac" * 10_000, "\\sqrt" * 10_000, "\\text{" * 10_000, "1," * 100_000, "9" * 100_000,
           "answer is " * 10_000, "#### " * 10_000, "(" * 50_000 + ")" * 50_000, "=" * 10_000, " " * 200_000 + "x",
           "-" * 100_000 + "1", "." * 100_000, "A" * 100_000, "```python\n" * 5_000, "\ud800\udfff lone surrogates",
           "\\boxed{" + "{" * 50_000 + "}" * 50_000 + "}", "x" * 1_000_000]
    for _ in range(30):
        out.append("".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(1, 300))))
        out.append("".join(rng.choice("\\{}$0123456789.,/-=()[] boxedfracsqrtanswer#ABCD") for _ in range(300)))
    return out


PROBLEMS = {
    "toy": {"task": "toy", "answer": "0 9 0 7 | 0 0 7 9"},
    "math": {"task": "math", "answer": "\\frac{1}{2}"},
    "gsm8k": {"task": "gsm8k", "answer": "18"},
    "mmlu": {"task": "mmlu", "answer": "C"},
    "critique": {"task": "critique", "answer": "The loop stops one element early, so the last item is skipped."},
}


def test_fuzz_text_graders():
    for s in adversarial_strings():
        t0 = time.monotonic()
        assert isinstance(last_boxed(s), (str, type(None)))
        assert isinstance(math_equal(s, s[:500]), bool) and isinstance(math_equal("1", s), bool)
        for task, problem in PROBLEMS.items():
            grade = GRADERS[task](s, problem)
            assert isinstance(grade, Grade) and 0.0 <= grade.score <= 1.0
            assert grade.parsed is None or isinstance(grade.parsed, str)
        assert time.monotonic() - t0 < 2.0, repr(s[:40])


def test_fuzz_bad_problems_and_code():
    for s in ["", "\x00", "{" * 100_000, "def add(a, b):\n    return a + b\n" + "\x00", "x" * 300_000,
              "```python\n" * 5_000, "\ud800"]:
        grade = grade_code(s, ADD)
        assert isinstance(grade, Grade) and not grade.correct
    for task, grader in GRADERS.items():  # malformed problems grade as unparseable instead of raising
        assert grader("anything", {}) == Grade(False, 0.0, None)
