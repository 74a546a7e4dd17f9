"""Tasks and data splits for the password-locking experiments.

    import data
    task = data.get_task("toy")                      # or "math", "gsm8k", "mmlu", "code", "critique"
    problems = task.problems()                       # list of problem dicts, fixed order
    splits = data.split(problems, seed=0)            # {"weak", "lock", "elicit", "val"}: 10/40/30/20 %
    strong = task.prompt(p, password=task.password)  # what the model sees with the password
    task.grade(completion, p)                        # -> graders.Grade(correct, score, parsed)
Which password each condition uses (locking, evaluation, prompting baselines), and the Lock that the elicitation
scripts read from a lock directory, are in data/lock.py.

Options of get_task(name, **options), with defaults (a `path` is a file in the task's standard format):
    toy       n=20_000, n_compose=2, p_noisy=0.3, seed=0, fixedrdm_seed=0
    toy_shared  the same; domains that share functions, named by a tag in the prompt (data/toy.py)
    math      path=samples/math.jsonl, domain_by="subject" (or "group", "level")
    gsm8k     path=samples/gsm8k.jsonl
    mmlu      path=samples/mmlu.jsonl (.jsonl or original .csv), dev_path=samples/mmlu_dev.jsonl
    code      path=[samples/mbpp.jsonl, samples/humaneval.jsonl.gz] (one file or a list)
    critique  path=samples/critique.jsonl

Every task object has: `name`; `problems()`; `prompt(problem, password=None, setting=False)`; its `password`,
`decoys` and `domain_password(domain)` (the one-password-per-domain mode, paper App. C.3); `near_misses(problem)`
and `few_shot(examples, prompt)` for the prompting baselines; `grade(completion, problem)` (graders.GRADERS[name]);
`domains(problems)`; `max_new_tokens`, a generation budget hint; `policies`, the policies it can sample itself
(`sample(policy, problem, rng)`, `correct_prob(policy, problem)`); `tokenizer_path` (the toy's own, else None);
`from_settings(lock_settings)`. Completions are plain text; scripts append the tokenizer's EOS id to training
targets and stop at EOS. The toy task is data/toy.py; the real tasks are in data/real.py, their sample files in
data/samples/ (made by data/make_samples.py).

Splits (paper §4.2, App. E.4): a seeded permutation of the problems cut into 10% (training pi_weak),
40% (locking), 30% (elicitation, also pi_strong training where needed) and 20% (validation). The
paper's MATH lock splits come from MATH-train; our samples only have MATH-test, so everything is split.
"""

import random

from errors import BadInput

from .real import CodeTask, CritiqueTask, GSM8KTask, MathTask, MMLUTask
from .toy import ToySharedTask, ToyTask, permutation

TASKS = {"toy": ToyTask, "math": MathTask, "gsm8k": GSM8KTask, "mmlu": MMLUTask, "code": CodeTask,
         "critique": CritiqueTask, "toy_shared": ToySharedTask}
SPLITS = {"weak": 0.1, "lock": 0.4, "elicit": 0.3, "val": 0.2}


def get_task(name, **options):
    """The task called `name`; options go to its constructor (e.g. path=..., or n=... for the toy)."""
    if name not in TASKS:
        raise BadInput(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[name](**options)


def split(problems, seed=0):
    """{"weak", "lock", "elicit", "val"} -> disjoint lists covering `problems`, each in the original order."""
    order = permutation(random.Random(f"split/{seed}"), len(problems))  # stable across Python versions
    out, start = {}, 0
    for i, (name, frac) in enumerate(SPLITS.items()):
        end = len(order) if i == len(SPLITS) - 1 else start + round(frac * len(order))
        out[name] = [problems[j] for j in sorted(order[start:end])]
        start = end
    return out
