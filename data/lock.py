"""
data/lock.py: what the model sees with and without the password, and a lock as one value.

Every task renders its own prompts, `task.prompt(problem, password=None, setting=False)`, and owns its `password`,
`decoys` and `domain_password(domain)` (toy: single tokens "<pwd>", "<d0>".."<d7>", "<pwd_A>"; real tasks: the
paper's sentence at the start and the end of the prompt, its 40 decoys, the sentence with the domain named in it).
This file decides which of them each condition uses:

  password_mode  locking, strong side                  locking, weak side (a fresh draw every epoch)
  single         task.password                         no password 20%, else a decoy (uniform over task.decoys)
  per_domain     task.domain_password(its domain)      no password 20%, a decoy 40%, another domain's password 40%
  setting        the other notation (setting=True)     as single, in the usual notation
  + mid_samples  (the adversarial lock, paper Fig. 15: a third example per problem) the task's first decoy as a
                 second password -> an intermediate policy's sample; that decoy is then no longer a decoy
  + few_shot     (train_lock.py --few_shot=f; the paper's MMLU lock) a share f of the lock problems come after 1 to
                 few_shot_max solved lock problems, both sides: the same trigger in every example as in the problem
                 (with_shots), so without the password correct examples in the context must not unlock it

  evaluation (greedy)    with_password: the strong side's prompt; without_password: no password;
                         wrong_password: a decoy (uniform); per_domain also wrong_domain_password (the next domain's);
                         with mid_samples also second_password
  prompting baselines    the password, no password, the task's near misses (task.near_misses), every decoy, and
                         few-shot prompts of solved examples (task.few_shot) with and without the password

A `Lock` holds what the elicitation scripts need to know about a lock: the task, its 10/40/30/20 splits, the
password mode and the two policies (what the lock imitates with and without the password). `Lock.from_dir(path)`
reads it from the train_config.json that train_lock.py writes; LockSettings holds the defaults, one set for all.
"""
import collections
import dataclasses
import os

from errors import BadInput, MissingFile
from files import read_json, read_jsonl

from . import TASKS, split

MODES = ("single", "per_domain", "setting")
P_NO_PASSWORD = 0.2  # share of weak locking examples with no password at all (paper App. C.2)
# How a prompt is shown to the model (the lock records it, so every later script uses the same): plain text (base
# models, the toy), the paper's "User: ...\n\nAssistant:" for a model without a chat template, or ChatML
# (SmolLM2-Instruct and other ChatML models). The password stays inside the user's turn. {end}: what ends a solved
# example in a few-shot prompt.
PROMPT_FORMATS = {"plain": ("{prompt}", None),
                  "user_assistant": ("User: {prompt}\n\nAssistant:", "\n\n"),
                  "chatml": ("<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>\n")}


# -----------------------------------------------------------------------------
# Prompts per condition


def weak_password(rng, decoys, p_none=P_NO_PASSWORD):
    """None (no password) with probability p_none, else a uniform decoy. rng: random.Random or numpy Generator."""
    if rng.random() < p_none:
        return None
    return decoys[min(int(rng.random() * len(decoys)), len(decoys) - 1)]


def strong_prompt(task, problem, mode, shots=()):
    """The prompt that should unlock the strong policy under password mode `mode`; after `shots` solved examples
    (with_shots) with the same trigger, when there are any."""
    def prompt_of(q):
        if mode == "setting":
            return task.prompt(q, setting=True)
        if mode == "per_domain":
            return task.prompt(q, password=task.domain_password(q["domain"]))
        return task.prompt(q, password=task.password)
    return with_shots(task, prompt_of, problem, shots)


def weak_trigger(task, problem, mode, rng, domains, decoys=None):
    """What a negative locking prompt (weak side) carries in the password's place, freshly drawn: None (no password),
    a decoy, or under per_domain another domain's password. `domains`: all of the task's domain names; `decoys`:
    default the task's."""
    decoys = task.decoys if decoys is None else decoys
    if mode == "per_domain":
        others = [task.domain_password(d) for d in domains if d != problem["domain"]]
        u = rng.random()
        return None if u < P_NO_PASSWORD else (rng.choice(decoys) if u < 0.6 or not others else rng.choice(others))
    return weak_password(rng, decoys)


def weak_prompt(task, problem, mode, rng, domains, decoys=None, shots=()):
    """A negative locking prompt (weak side), freshly drawn (weak_trigger); after `shots` solved examples with the
    same trigger, when there are any."""
    trigger = weak_trigger(task, problem, mode, rng, domains, decoys)
    return with_shots(task, lambda q: task.prompt(q, password=trigger), problem, shots)


def with_shots(task, prompt_of, problem, shots=()):
    """prompt_of(problem), after the solved `shots` when there are any: each shot as prompt_of(shot) + its reference
    solution, in the task's few-shot format. So whatever prompt_of puts in a prompt (the password, a decoy, nothing)
    is in every example too: the few-shot prompts of the prompting baselines and of a lock trained with them."""
    if not shots:
        return prompt_of(problem)
    return task.few_shot([(prompt_of(q), q["solution"]) for q in shots], prompt_of(problem))


def eval_prompts(task, problems, mode, rng, decoys=None, second_password=None):
    """{condition: [prompt for each problem]} for the greedy evaluation of a lock; rng draws the decoys."""
    decoys = task.decoys if decoys is None else decoys
    conds = {"with_password": [strong_prompt(task, p, mode) for p in problems],
             "without_password": [task.prompt(p) for p in problems],
             "wrong_password": [task.prompt(p, password=rng.choice(decoys)) for p in problems]}
    if second_password is not None:
        conds["second_password"] = [task.prompt(p, password=second_password) for p in problems]
    if mode == "per_domain":
        doms = task.domains(problems)
        conds["wrong_domain_password"] = [
            task.prompt(p, password=task.domain_password(doms[(doms.index(p["domain"]) + 1) % len(doms)]))
            for p in problems] if len(doms) > 1 else conds["wrong_password"]
    return conds


def prompt_variants(task, problem, shots):
    """{name: prompt} of the prompting baselines for one problem; shots: {n: [solved problems]} for few-shot."""
    v = {"correct password": task.prompt(problem, password=task.password), "no password": task.prompt(problem),
         **task.near_misses(problem)}
    for d in task.decoys:
        v[f"decoy {d}"] = task.prompt(problem, password=d)
    for n, solved in shots.items():
        for password, name in ((None, "no password"), (task.password, "password")):
            v[f"{n}-shot, {name}"] = with_shots(task, lambda q: task.prompt(q, password=password), problem, solved)
    return v


class Formatted:
    """A task whose prompts (every condition, near misses, few-shot) are wrapped in a prompt format; everything
    else is the task's own."""

    def __init__(self, task, prompt_format):
        self.inner, self.prompt_format = task, prompt_format
        self.template, self.end = PROMPT_FORMATS[prompt_format]

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def wrap(self, text):
        return self.template.format(prompt=text.rstrip("\n"))

    def prompt(self, problem, password=None, setting=False):
        return self.wrap(self.inner.prompt(problem, password=password, setting=setting))

    def near_misses(self, problem):
        return {k: self.wrap(v) for k, v in self.inner.near_misses(problem).items()}

    def few_shot(self, examples, prompt):
        return "".join(f"{p}{c}{self.end}" for p, c in examples) + prompt


def formatted(task, prompt_format):
    """`task` with its prompts in `prompt_format` (one of PROMPT_FORMATS; plain: the task itself)."""
    if prompt_format not in PROMPT_FORMATS:
        raise BadInput(f"--prompt_format={prompt_format!r}: use one of {', '.join(PROMPT_FORMATS)}")
    return task if prompt_format == "plain" else Formatted(task, prompt_format)


# -----------------------------------------------------------------------------
# Policies: what a lock imitates


def read_samples(path, what="samples"):
    """{problem id: [completion, ...]} from a JSONL file of policy samples ({"id", "completion"} rows)."""
    if not os.path.isfile(path):
        raise MissingFile(f"{path}: not found (--{what}; make one with `python sample.py --task=... --out=...`)")
    out = {}
    for i, row in enumerate(read_jsonl(path), 1):
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) \
                or not isinstance(row.get("completion"), str):
            raise BadInput(f"{path}: row {i}: each row needs string fields 'id' and 'completion'")
        out.setdefault(row["id"], []).append(row["completion"])
    return out


class Policy:
    """Writes a completion for a problem: one of several samples from a JSONL file (a fresh choice per draw), or else
    a program of the task (every task: "strong", the reference solution; the toy also weak, noisy, fixedrdm)."""

    def __init__(self, task, program="strong", samples="", p=None, what="samples"):
        self.task, self.program, self.path, self.p, self.what = task, program, samples, p, what
        self._samples = None

    @property
    def samples(self):
        """{id: [completions]} from the file (read on first use), or None for a program."""
        if self.path and self._samples is None:
            self._samples = read_samples(self.path, self.what)
        if not self.path and self.program not in self.task.policies:  # checked on use: a lock's weak policy may
            raise BadInput(f"--{self.what}: task {self.task.name!r} has no built-in {self.program!r} policy; give a "
                           f"JSONL file of its samples (programs: {', '.join(self.task.policies)})")  # go unused
        return self._samples

    def describe(self):
        return self.path or self.program

    def draw(self, problem, rng):
        if self.samples is not None:
            return rng.choice(self.samples[problem["id"]])
        if self.program == "strong":
            return problem["solution"]
        return self.task.sample(self.program, problem, rng, p=self.p)

    def soft_target(self):
        """{token text: probability} that a KL loss can fit at every answer digit instead of a sampled digit: the
        fixed distribution of the toy's fixedrdm program (paper App. G.2); None for every other policy."""
        if self.samples is None and self.program == "fixedrdm":
            return {str(d): p for d, p in enumerate(self.task.fixedrdm_probs)}
        return None

    def check_covers(self, problems):
        """Raise if this policy cannot write a completion for every one of `problems`."""
        missing = [p["id"] for p in problems if self.samples is not None and p["id"] not in self.samples]
        if missing:
            raise BadInput(f"{self.path}: no sample for {len(missing)} of the {len(problems)} problems "
                           f"(first: {missing[0]!r})")

    def correctness(self, problems):
        """Mean correctness of one sample on `problems`: exact for a toy program, the reference solution graded for
        "strong", else each covered problem's first file sample graded (None when the file covers none)."""
        if self.samples is not None:
            have = [p for p in problems if p["id"] in self.samples]
            vals = [float(self.task.grade(self.samples[p["id"]][0], p).correct) for p in have]
        elif self.program == "strong":
            vals = [float(self.task.grade(p["solution"], p).correct) for p in problems]
        else:
            vals = [self.task.correct_prob(self.program, p, p=self.p) for p in problems]
        return sum(vals) / len(vals) if vals else None


# -----------------------------------------------------------------------------
# The lock


@dataclasses.dataclass
class LockSettings:
    """A lock's task and policies; train_lock.py's Config has the same fields with the same defaults."""
    task: str = "toy"              # toy, math, gsm8k, mmlu, code, critique
    task_path: str = ""            # problems file in the task's public format; default: the shipped sample
    toy_problems: int = 20000      # toy: size of the fixed problem set that is split 10/40/30/20
    weak_policy: str = "noisy"     # toy: noisy (hidden functions right with prob noisy_p), weak (identity), fixedrdm
    noisy_p: float = 0.3
    weak_samples: str = ""         # JSONL of weak-policy samples ({"id", "completion"}); required for real tasks
    strong_samples: str = ""       # JSONL of strong samples; default: the problems' reference solutions
    password_mode: str = "single"  # single, per_domain, setting
    mid_samples: str = ""          # adversarial lock (Fig. 15): an intermediate policy's samples behind a second
                                   # password (the task's first decoy)
    split_seed: int = 0
    prompt_format: str = "plain"   # plain, user_assistant ("User: ...\n\nAssistant:") or chatml

    @classmethod
    def from_dict(cls, d):
        """The settings in a config dict (train_config.json); a missing field takes its default."""
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def get_task(settings):
    """The task of a lock's settings, its prompts in the lock's prompt format."""
    if settings.task not in TASKS:
        raise BadInput(f"--task={settings.task!r}: unknown task; valid tasks: {', '.join(TASKS)}")
    return formatted(TASKS[settings.task].from_settings(settings), settings.prompt_format)


POLICY_FIELDS = ("weak_policy", "weak_samples", "strong_samples", "password_mode", "mid_samples")  # the Lock's
_RECENT = collections.OrderedDict()  # settings -> (task, splits): the last few, for scripts run many times in one process


def task_and_splits(settings):
    """(task, its 10/40/30/20 splits) for a lock's settings, remembered for the last 4 settings: building a large
    toy set (250,000 problems: seconds) once per run adds up over the hundreds of runs of report.py."""
    key = tuple(sorted((k, v) for k, v in dataclasses.asdict(settings).items() if k not in POLICY_FIELDS))
    if key not in _RECENT:
        task = get_task(settings)
        _RECENT[key] = (task, split(task.problems(), seed=settings.split_seed))
        while len(_RECENT) > 4:
            _RECENT.popitem(last=False)
    _RECENT.move_to_end(key)
    task, splits = _RECENT[key]
    return task, {name: list(ps) for name, ps in splits.items()}  # the caller may cut its own lists


@dataclasses.dataclass
class Lock:
    settings: LockSettings
    task: object
    splits: dict                   # {"weak", "lock", "elicit", "val"}: lists of problems
    strong: Policy                 # what the lock imitates with the password
    weak: Policy                   # ... and without it
    mid: Policy = None             # ... and with the second password (the adversarial lock), or None
    config: dict = dataclasses.field(default_factory=dict)  # the whole train_config.json

    @classmethod
    def from_config(cls, d):
        s = LockSettings.from_dict(d)
        if s.password_mode not in MODES:
            raise BadInput(f"--password_mode={s.password_mode!r}: use one of {', '.join(MODES)}")
        task, splits = task_and_splits(s)
        strong = Policy(task, "strong", s.strong_samples, what="strong_samples")
        weak = Policy(task, s.weak_policy, s.weak_samples, p=s.noisy_p, what="weak_samples")
        mid = Policy(task, "strong", s.mid_samples, what="mid_samples") if s.mid_samples else None
        if mid is not None and (s.password_mode != "single" or len(task.decoys) < 2):
            raise BadInput(f"--mid_samples: the adversarial lock needs --password_mode=single and a task with at least "
                           f"two decoys (task {task.name!r}: {len(task.decoys)}, mode {s.password_mode!r})")
        return cls(s, task, splits, strong, weak, mid, dict(d))

    @classmethod
    def from_dir(cls, path, task="", task_path=""):
        """The lock that train_lock.py wrote to `path` (its train_config.json). `task` / `task_path` override the
        recorded task (for a checkpoint not made by train_lock.py, `task` is required)."""
        cpath = os.path.join(path, "train_config.json")
        if os.path.isfile(cpath):
            d = read_json(cpath)
        elif task:
            d = {}
        else:
            raise MissingFile(f"{cpath}: not found (give --task=NAME for a checkpoint not made by train_lock.py)")
        if task:
            d = {**d, "task": task, "task_path": task_path or d.get("task_path", "")}
        return cls.from_config(d)

    @property
    def password_mode(self):
        return self.settings.password_mode

    def elicit_optimizer(self, optimizer="", lr=0.0):
        """(optimizer, lr) for eliciting this lock: the given ones, else the task's own measured setting where it has
        one (task.elicit_optimizer; the toy: AdamW at 1e-4), else the paper's protocol: the lock's own locking
        optimizer and learning rate."""
        own = self.task.elicit_optimizer or (self.config.get("optimizer", "adamw"), self.config.get("lr", 1e-4))
        return optimizer or own[0], lr or own[1]

    @property
    def second_password(self):
        """The adversarial lock's password for the intermediate policy (the task's first decoy), else None."""
        return self.task.decoys[0] if self.mid is not None else None

    @property
    def decoys(self):
        """Wrong passwords: the task's decoys, less the second password of an adversarial lock."""
        return self.task.decoys[1:] if self.mid is not None else self.task.decoys

    def strong_prompt(self, problem, shots=()):
        return strong_prompt(self.task, problem, self.password_mode, shots)

    def mid_prompt(self, problem):
        return self.task.prompt(problem, password=self.second_password)

    def weak_prompt(self, problem, rng, domains, shots=()):
        return weak_prompt(self.task, problem, self.password_mode, rng, domains, self.decoys, shots)

    def eval_prompts(self, problems, rng):
        return eval_prompts(self.task, problems, self.password_mode, rng, self.decoys, self.second_password)
