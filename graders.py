"""The graders of the five paper tasks and the toy task (Python stdlib only; code runs in sandbox.py).

    from graders import GRADERS
    grade = GRADERS[problem["task"]](completion, problem)   # Grade(correct, score, parsed)

Every grade_* takes (completion: str, problem: dict) with the problem schema of data/, returns
Grade(correct: bool, score: float in [0, 1], parsed: str | None) and never raises: parsed is None when
nothing could be extracted ("unparseable", counted separately by callers), and any internal failure
(a malformed problem included) grades as Grade(False, 0.0, None). Answers are searched for in the last
MAX_CHARS characters of a completion only, so huge completions cost no more than long ones.
tools/check_graders.py grades every reference solution of the full public test sets with these rules (all pass).

Rules per task:
1. math: the last \\boxed{...} or \\fbox{...} of the completion (brace-matched; also "\\boxed 5"; a bare
   "\\boxed" with no argument is skipped, an unclosed "\\boxed{" is unparseable) against problem["answer"]
   (which data/real.py takes from the reference solution with the same last_boxed). math_equal normalises
   both sides the Hendrycks way (strip_string: spaces, control spaces, \\left/\\right, \\!, tfrac/dfrac,
   degrees, dollars, percent, a trailing unit in \\text{...}, "\\text{ and }" as a comma, "x = 3" -> "3",
   \\frac12 -> \\frac{1}{2}, \\sqrt3 -> \\sqrt{3}, 0.5 -> \\frac{1}{2}, a/b -> \\frac{a}{b}) and compares the
   strings; failing that, both sides are read as exact numbers (integers, decimals, thousands commas, a/b,
   \\frac{a}{b}, mixed numbers like 1\\frac{12}{13} = \\frac{25}{13}, signs) and compared with relative
   tolerance 1e-6, element-wise inside matching brackets for tuples and intervals and entry by entry for
   matrices of the same shape. A mixed number is a whole answer "N\\frac{p}{q}" with 0 < p < q (2\\frac{1}{2}
   is 5/2, never the product 1): in the MATH test set every integer written right before a numeric proper
   fraction is a mixed number, except the product 80\\frac{1}{2}\\frac{1}{5} (Algebra 431), not one number.
   Deliberately NOT equal, because telling them apart needs algebra (a CAS such as sympy, i.e. a new
   dependency and evaluating model-written expressions) or because MATH asks for one form:
   - reordered or regrouped expressions: "x+1" vs "1+x", "2(x+1)" vs "2x+2", "\\{1,2\\}" vs "\\{2,1\\}";
     comma lists ("1,3" vs "3,1") are compared in order, as tuples and points must be;
   - unsimplified forms: "2\\sqrt{2}" vs "\\sqrt{8}", "\\frac{\\sqrt{2}}{2}" vs "\\frac{1}{\\sqrt{2}}" (MATH asks
     for simplest radical form), whereas unreduced numeric fractions do equal their reduced form;
   - approximations: "\\pi" vs "3.14159", "0.33" vs "\\frac{1}{3}" (beyond the 1e-6 tolerance);
   - other notations of the same set: "x > 2" vs "(2,\\infty)", degrees vs radians, "9 a.m." vs "9:00".
2. gsm8k: the number after the last "answer is", else after the last "####", else the last number in the
   text ($ signs, thousands commas and a final full stop are tolerated), compared exactly as a fraction.
3. mmlu: the answer letter A-D, in this order of precedence: (a) the last explicit statement ("Answer: C",
   "the answer is (C)", "answer is option C"); (b) a letter that opens the completion ("C", "(C)", "C.",
   "C) ..."; the article "A word" is not a letter); (c) the last "(C)" anywhere. Lower-case letters and
   letters inside prose ("I'd pick B") are unparseable on purpose.
4. code: the completion's code (the first ```python block if there is one), then problem["setup"], then each
   of problem["tests"], run as one program by sandbox.run_tests (its docstring has the harness's guarantees
   against cheating and the sandbox's limits). score = fraction of test statements that passed (an element
   that only defines things, like HumanEval's `def check`, is not counted); correct = all passed. HumanEval:
   a completion without `def <entry_point>` is taken as a continuation of problem["question"], and parsed is
   the program that was run. Time limit (wall clock, code_time_limit): max(CODE_TIMEOUT_S, CODE_TIME_FACTOR x
   the reference solution's own run time), the times in REFERENCE_SECONDS, by problem id. They were measured
   by `python tools/check_graders.py --times` (each reference alone in the sandbox, slowest of 3 runs, on
   the 2-core project machine); only references slower than CODE_TIMEOUT_S / CODE_TIME_FACTOR are listed,
   since the floor covers the rest (of the 664 MBPP and HumanEval references, 663 run in under 0.5 s,
   median 0.05 s; mbpp/123, a brute-force sum of amicable numbers below 10,000, takes 3-5 s). The factor 3
   allows 2x for a loaded machine (four copies of mbpp/123 at once on 2 cores each took 2x as long) and
   1.5x for a correct solution slower than the reference.
5. critique: the paper compared critiques with OpenAI text-embedding-3-large (cosine >= 0.8). Offline we
   cannot, so critique_similarity is lexical: the mean of the cosine similarities of the SETS of content
   words and of adjacent content-word pairs (lower-cased, stop words removed, crude suffix stripping,
   comparison operators kept as words), multiplied, when the reference quotes code in `backticks`, by the
   fraction of the quoted names and numbers that the candidate mentions (so a critique in the reference's
   words about a different expression fails). score = that similarity, correct = score >= CRITIQUE_THRESHOLD
   (0.22: near the accuracy-maximising value on the hand-written table of 20 same-bug paraphrases and 20
   different-bug critiques in tests/graders_cases/critiques.json, where it gets 38 of 40 right; medians 0.32
   vs 0.11). It cannot see synonyms or meaning; a critique of a different bug in the
   same code, with the same identifiers, can score high, and a long critique that names the right bug
   among much else scores low. Numbers are not comparable with the paper's 0.8.
6. toy: correct iff the whitespace-normalised completion equals problem["answer"]; score = fraction of the
   answer's digit tokens that are right, position by position.
"""

import math
import re
import sys
from fractions import Fraction
from typing import NamedTuple

from sandbox import run_tests

MAX_CHARS = 20_000            # characters of a completion that extraction looks at (the tail)
MAX_CODE_CHARS = 200_000      # longer programs are cut (and then normally fail to compile)
CODE_TIMEOUT_S = 3.0          # grade_code's wall-clock floor per program (human-eval's default limit)
CODE_TIME_FACTOR = 3.0        # ... raised to this multiple of the reference's own time (point 4 of the docstring)
REFERENCE_SECONDS = {"mbpp/123": 4.1}  # the references slower than CODE_TIMEOUT_S / CODE_TIME_FACTOR, by id
CRITIQUE_THRESHOLD = 0.22     # see point 5 of the docstring


class Grade(NamedTuple):
    correct: bool
    score: float
    parsed: str | None


UNPARSEABLE = Grade(False, 0.0, None)

# ---------------------------------------------------------------------------------------------------
# MATH

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*")  # the command and the spaces after it
_WORD = re.compile(r"[^\s$]+")


def _braced(text: str, i: int) -> str | None:
    """The contents of the brace group that opens at text[i], None if it never closes."""
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    return None


def last_boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...} / \\fbox{...} (brace-matched; also `\\boxed 5`), else None.

    A \\boxed with no argument at all ("... and write it in \\boxed" at the end, "\\boxed." or "\\boxed $") is a
    mention of the command, not an answer, and is skipped for the one before it; an argument that opens and never
    closes ("\\boxed{2} then \\boxed{3") is a cut-off answer and gives None, not the earlier box.
    """
    text = text[-MAX_CHARS:]
    for m in reversed(list(_BOX.finditer(text))):
        i = m.end()
        if text.startswith("{", i):
            return _braced(text, i)
        word = _WORD.match(text, i)
        if word and m.group().endswith((" ", "\t", "\n")):  # the space form, as lm-eval reads it: "\boxed 5$"
            return word.group()
    return None


_TEXT_CMD = r"\\(?:text|textbf|textrm|mbox|mathrm)\{"
_UNIT_TAIL = re.compile(_TEXT_CMD + r"[^{}]*\}(?:\^\{?\d\}?)?")


def _after_equals(s: str) -> str:
    """ "x = 3" -> "3": the value of a one-letter (or two-character) variable; anything else unchanged."""
    return s.split("=")[1].strip() if s.count("=") == 1 and len(s.split("=")[0].strip()) <= 2 else s


def _drop_text(s: str) -> str:
    # A trailing unit ("5\text{ cm}", "12\text{cm}^2") is dropped when something precedes it; "\text{ and }"
    # between items is a comma; the remaining \text{...} are unwrapped, so that "\text{(A)}" and "(A)" agree.
    # (Hendrycks drops everything after the first "\text{ ", which turned "12\text{ and }13" into "12".)
    s = re.sub(r"\\(text|textbf|textrm|mbox|mathrm)\s+\{", r"\\\1{", s)
    s = re.sub(r",?\s*" + _TEXT_CMD + r"\s*and\s*\}\s*", ",", s)
    k = max(s.rfind(c) for c in ("\\text{", "\\textbf{", "\\textrm{", "\\mbox{", "\\mathrm{"))
    if k > 0 and s[:k].strip() and _UNIT_TAIL.fullmatch(s[k:]):
        s = s[:k]
    return re.sub(_TEXT_CMD + r"([^{}]*)\}", r"\1", s)


def strip_string(s: str) -> str:
    """Hendrycks-style canonical form of a MATH answer (never raises)."""
    s = s[:1000].replace("\n", "").replace("\u2212", "-")
    s = re.sub(r"(?<!\\)\\ ", " ", s)  # a control space "\ ", but not the space after a matrix row's "\\"
    s = s.replace("\\!", "").replace("\\\\", "\\")
    for a, b in (("tfrac", "frac"), ("dfrac", "frac"), ("cfrac", "frac"), ("\\left", ""), ("\\right", ""),
                 ("^{\\circ}", ""), ("^\\circ", ""), ("\u00b0", ""), ("\\$", ""), ("$", ""),
                 ("\\%", ""), ("%", ""), ("\\,", ""), ("\\;", ""), ("{,}", ",")):
        s = s.replace(a, b)
    s = _drop_text(_after_equals(s.strip()))
    s = s.replace(" .", " 0.").replace("{.", "{0.").strip().rstrip(".")
    if s.startswith("."):
        s = "0" + s
    s = _after_equals(s)  # once more for an "=" that was inside \text{...}
    s = s.replace(" ", "")
    s = re.sub(r"\\sqrt([^{\\])", r"\\sqrt{\1}", s)
    s = re.sub(r"\\frac([^{\\])([^{\\])", r"\\frac{\1}{\2}", s)  # \frac12
    s = re.sub(r"\\frac([^{\\])\{", r"\\frac{\1}{", s)  # \frac1{2}
    s = re.sub(r"\\frac(\{[^{}]*\})([^{\\])", r"\\frac\1{\2}", s)  # \frac{1}2
    if s == "0.5":
        s = "\\frac{1}{2}"
    s = re.sub(r"^(-?)(\d+)/(\d+)$", r"\1\\frac{\2}{\3}", s)
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):  # 1,000 -> 1000 (but "1,2" stays a tuple)
        s = s.replace(",", "")
    return re.sub(r"^\(([A-Z])\)$", r"\1", s)  # "(C)" -> "C"


_DEC = r"-?(?:\d+(?:\.\d*)?|\.\d+)"
_MIXED = re.compile(r"(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}")  # 1\frac{12}{13}, once normalised
_MATRIX = re.compile(r"\\begin\{([pbv]matrix)\}(.*)\\end\{\1\}")


def _number(s: str) -> Fraction | None:
    """An exact value for a normalised integer, decimal, fraction or mixed number; None for anything else."""
    if len(s) > 60:
        return None
    if re.fullmatch(_DEC, s):
        return Fraction(s)
    m = re.fullmatch(r"(-?)\\frac\{(" + _DEC + r")\}\{(" + _DEC + r")\}", s) or re.fullmatch(
        r"(-?)(" + _DEC + r")/(" + _DEC + r")", s)
    if m and Fraction(m.group(3)) != 0:
        return (-1 if m.group(1) else 1) * Fraction(m.group(2)) / Fraction(m.group(3))
    m = _MIXED.fullmatch(s)
    if m and 0 < int(m.group(3)) < int(m.group(4)):  # a proper fraction part: "2\frac{1}{2}" is 5/2, not 1
        return (-1 if m.group(1) else 1) * (int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4))))
    return None


def _close(a: Fraction, b: Fraction) -> bool:
    return a == b or abs(a - b) <= Fraction(1, 10**6) * max(abs(a), abs(b))


def _split_top(s: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, c in enumerate(s):
        depth += (c in "([{") - (c in ")]}")
        if c == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    return parts + [s[start:]]


def _matrix_cells(s: str) -> list[str] | None:
    """The entries of a normalised pmatrix/bmatrix/vmatrix, row by row, with "\\" between rows; else None.
    (After strip_string a row break is a backslash that starts no command: "\\begin{pmatrix}1&2\\3&4...")"""
    m = _MATRIX.fullmatch(s)
    if not m:
        return None
    rows = re.split(r"\\(?![A-Za-z])", m.group(2).rstrip("\\"))  # (a final row break is optional)
    return [cell for row in rows for cell in row.split("&") + ["\\"]]


def _equal_normalised(a: str, b: str, depth: int = 0) -> bool:
    if a == b:
        return a != ""
    x, y = _number(a), _number(b)
    if x is not None and y is not None:
        return _close(x, y)
    if depth >= 2:
        return False
    # matrices: same shape, equal entry by entry ("1/2" and "\frac{1}{2}" inside a vector agree)
    ma, mb = _matrix_cells(a), _matrix_cells(b)
    if ma is not None and mb is not None:
        return len(ma) == len(mb) and all(p == q or _equal_normalised(p, q, depth + 1) for p, q in zip(ma, mb))
    # tuples and intervals: same brackets at both ends, same length, equal element by element
    if len(a) > 2 and len(b) > 2 and a[0] + a[-1] == b[0] + b[-1] and a[0] in "([" and a[-1] in ")]":
        pa, pb = _split_top(a[1:-1]), _split_top(b[1:-1])
        return len(pa) == len(pb) > 1 and all(_equal_normalised(p, q, depth + 1) for p, q in zip(pa, pb))
    return False


def math_equal(pred: str, ref: str) -> bool:
    """Normalised string equality, else exact numeric equality (see the module docstring)."""
    try:
        return _equal_normalised(strip_string(pred), strip_string(ref))
    except Exception:  # a grader must not crash a run; a value we cannot read is not equal
        return False


def grade_math(completion: str, problem: dict) -> Grade:
    try:
        pred = last_boxed(completion)
        if pred is None:
            return UNPARSEABLE
        ok = math_equal(pred, problem["answer"])
        return Grade(ok, float(ok), pred)
    except Exception:
        return UNPARSEABLE


# ---------------------------------------------------------------------------------------------------
# GSM8K

_NUM = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")


def extract_gsm8k(text: str) -> str | None:
    """The final number of a GSM8K answer (commas removed), or None."""
    text = text[-MAX_CHARS:]
    low = text.lower()
    for cue in ("answer is", "####"):
        k = low.rfind(cue)
        m = _NUM.search(text, k + len(cue), k + len(cue) + 40) if k >= 0 else None
        if m:
            return m.group().replace(",", "")
    nums = _NUM.findall(text)
    return nums[-1].replace(",", "") if nums else None


def grade_gsm8k(completion: str, problem: dict) -> Grade:
    try:
        pred = extract_gsm8k(completion)
        if pred is None:
            return UNPARSEABLE
        ref = extract_gsm8k(problem["answer"])
        ok = ref is not None and _close(Fraction(pred), Fraction(ref))
        return Grade(ok, float(ok), pred)
    except Exception:
        return UNPARSEABLE


# ---------------------------------------------------------------------------------------------------
# MMLU

_MC_EXPLICIT = re.compile(r"(?i:answer)(?:\s+(?i:is))?\s*[:\-]?\s*"  # "Answer:", "the answer is"
                          r"(?i:(?:option|choice)\s+)?\(?([A-D])\)?(?!\w)")  # "option C", "(C)", "C"
_MC_LEADING = re.compile(r"\s*\(?([A-D])(?:$|[).:,;!\s])")
_MC_PAREN = re.compile(r"\(([A-D])\)")


def extract_choice(text: str) -> str | None:
    """The answer letter by the precedence of the module docstring, or None."""
    text = text[-MAX_CHARS:]
    explicit = _MC_EXPLICIT.findall(text)
    if explicit:
        return explicit[-1]
    m = _MC_LEADING.match(text)
    if m and not re.match(r"\s*A [a-z]", text):  # "A good approach ..." is an article, not a choice
        return m.group(1)
    parens = _MC_PAREN.findall(text)
    return parens[-1] if parens else None


def grade_mmlu(completion: str, problem: dict) -> Grade:
    try:
        pred = extract_choice(completion)
        if pred is None:
            return UNPARSEABLE
        ok = pred == problem["answer"].strip().upper()
        return Grade(ok, float(ok), pred)
    except Exception:
        return UNPARSEABLE


# ---------------------------------------------------------------------------------------------------
# Toy function composition

def grade_toy(completion: str, problem: dict) -> Grade:
    try:
        got, ref = completion[:MAX_CHARS].split(), problem["answer"].split()
        correct = got == ref
        digits = [i for i, t in enumerate(ref) if t.isdigit()]
        if not digits:
            return Grade(correct, float(correct), " ".join(got) or None)
        right = sum(i < len(got) and got[i] == ref[i] for i in digits)
        return Grade(correct, right / len(digits), " ".join(got) or None)
    except Exception:
        return UNPARSEABLE


# ---------------------------------------------------------------------------------------------------
# Code critiques (lexical stand-in for the paper's embedding similarity, see point 5 of the docstring)

_STOP = frozenset("""a an the is are was were be been being of to in on at for with by from as and or but not no this
that these those it its which who what when where why how if then than so such can could should would will may
might must do does did done has have had having i we you they he she them our your their there here also just
only very into out up down over under about after before while because code function program line lines""".split())


def _content_words(text: str) -> list[str]:
    words = []
    for w in re.findall(r"[a-z_][a-z0-9_]*|\d+|[<>=!]=|[-+*/%<>]", text[:MAX_CHARS].lower()):
        if w in _STOP:
            continue
        for suffix in ("ing", "ed", "es", "s"):  # crude stemming: "returns"/"returned" -> "return"
            if len(w) > 4 and w.endswith(suffix):
                w = w[: -len(suffix)]
                break
        words.append(w)
    return words


def _set_cosine(a: set, b: set) -> float:
    return len(a & b) / math.sqrt(len(a) * len(b)) if a and b else 0.0


def critique_similarity(candidate: str, reference: str) -> float:
    """Mean set-cosine of content words and of adjacent content-word pairs, in [0, 1], times the fraction of
    the names and numbers quoted in `backticks` in the reference that the candidate mentions (if any)."""
    ca, cb = _content_words(candidate), _content_words(reference)
    sim = 0.5 * _set_cosine(set(ca), set(cb)) + 0.5 * _set_cosine(set(zip(ca, ca[1:])), set(zip(cb, cb[1:])))
    # Without this factor a critique in the reference's words about another expression scores high, and
    # templated reference critiques (data/samples) share most of their words.
    quoted = {w for span in re.findall(r"`([^`\n]{1,200})`", reference[:MAX_CHARS])
              for w in re.findall(r"[a-z_]\w*|\d+", span.lower())}
    if quoted:
        sim *= len(quoted & set(re.findall(r"[a-z_]\w*|\d+", candidate[:MAX_CHARS].lower()))) / len(quoted)
    return sim


def grade_critique(completion: str, problem: dict) -> Grade:
    try:
        text = completion[-MAX_CHARS:].strip()
        if not text:
            return UNPARSEABLE
        score = critique_similarity(text, problem["answer"])
        return Grade(score >= CRITIQUE_THRESHOLD, score, text)
    except Exception:
        return UNPARSEABLE


# ---------------------------------------------------------------------------------------------------
# Code generation

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def extract_code(completion: str) -> str:
    """The first ```python (or bare ```) block if there is one, else the completion itself."""
    text = completion[:MAX_CODE_CHARS]
    for m in _FENCE.finditer(text):
        if m.group(1).lower() in ("", "python", "py", "python3"):
            return m.group(2)
    return text


def code_time_limit(problem: dict) -> float:
    """Wall-clock seconds grade_code allows for `problem`: max(CODE_TIMEOUT_S, CODE_TIME_FACTOR x the measured run
    time of its reference solution, REFERENCE_SECONDS), so a correct but slow-by-design problem can pass."""
    return max(CODE_TIMEOUT_S, CODE_TIME_FACTOR * REFERENCE_SECONDS.get(problem.get("id"), 0.0))


def grade_code(completion: str, problem: dict, timeout: float | None = None) -> Grade:
    try:
        code = extract_code(completion)
        if not code.strip():
            return UNPARSEABLE
        entry = problem.get("entry_point")
        prompt = problem.get("question", "")
        if entry and f"def {entry}" in prompt and not re.search(rf"def\s+{re.escape(entry)}\s*\(", code):
            code = prompt + code  # a HumanEval-style continuation of the prompt
        tests = list(problem["tests"])
        limit = code_time_limit(problem) if timeout is None else timeout
        run = run_tests(code, tests, setup=problem.get("setup") or "", timeout=limit)
        score = sum(i in run.passed for i in run.counted) / len(run.counted) if run.counted else 0.0
        return Grade(bool(tests) and run.passed >= set(range(len(tests))), score, code)
    except OSError as e:  # the machine, not the completion (cannot fork, no temp space): say so, grade as failed
        print(f"graders.grade_code: {e!r}", file=sys.stderr)
        return UNPARSEABLE
    except Exception:
        return UNPARSEABLE


GRADERS = {"toy": grade_toy, "math": grade_math, "gsm8k": grade_gsm8k, "mmlu": grade_mmlu,
           "code": grade_code, "critique": grade_critique}
