"""
Plumbing shared by the scripts (sampler.py's command line, train_lock.py, elicit_sft.py, elicit_rl.py): the
`--field=value` command-line parser for a Config dataclass, the tokenizer wrapper, JSONL files and atomic writes.
Nothing here knows about password locking; the experiments live in the scripts.
"""
import ast
import dataclasses
import json
import math
import os
import random
import sys
import typing

import numpy as np
import torch
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# Command line: one flat dataclass, `--field=value`, unknown keys rejected


def parse_cli(config_cls, argv=None):
    """Build `config_cls` from `--field=value` arguments. Values are parsed with ast.literal_eval when they look
    like Python literals (numbers, True/False/None, lists) and kept as strings otherwise, then type-checked against
    the field's annotation. `--help` prints every field with its default and exits."""
    argv = sys.argv[1:] if argv is None else argv
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    hints = typing.get_type_hints(config_cls)
    if any(a in ("-h", "--help") for a in argv):
        doc = (sys.modules[config_cls.__module__].__doc__ or "").strip()
        print(doc + "\n\nOptions (--field=value):")
        for name, f in fields.items():
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            print(f"  --{name}={default!r}  ({getattr(hints[name], '__name__', hints[name])})")
        raise SystemExit(0)
    kwargs = {}
    for arg in argv:
        if arg.startswith("--") and "=" not in arg and hints.get(arg[2:]) is bool:
            arg += "=True"  # a bare boolean flag: --quick means --quick=True
        if not arg.startswith("--") or "=" not in arg:
            raise SystemExit(f"error: expected --field=value, got {arg!r} (see --help)")
        key, val = arg[2:].split("=", 1)
        if key not in fields:
            raise SystemExit(f"error: unknown option --{key} (see --help for the {len(fields)} options)")
        kwargs[key] = _convert(key, val, hints[key])
    return config_cls(**kwargs)


def _convert(key, val, typ):
    try:
        parsed = ast.literal_eval(val)
    except (ValueError, SyntaxError):
        parsed = val
    allowed = typing.get_args(typ) or (typ,)  # Optional[int] / int | None -> (int, NoneType)
    if float in allowed and isinstance(parsed, int) and not isinstance(parsed, bool):
        parsed = float(parsed)
    if str in allowed and not isinstance(parsed, str) and not (type(None) in allowed and parsed is None):
        parsed = val  # a string field given something that looks like a number keeps its text
    origin = [typing.get_origin(a) or a for a in allowed]
    if not any(isinstance(parsed, o) for o in origin if isinstance(o, type)):
        raise SystemExit(f"error: --{key}={val!r} is not a valid {typ}")
    return parsed


def config_to_dict(cfg):
    return dataclasses.asdict(cfg)


# -----------------------------------------------------------------------------
# Tokenizer: a tokenizer.json read by the `tokenizers` package

EOS_NAMES = ("<eos>", "</s>", "<|endoftext|>", "<|end_of_text|>", "<|im_end|>", "<｜end▁of▁sentence｜>")


class Tokenizer:
    """Encode prompt and completion separately and join the ids; never re-tokenise the joined text, because BPE
    merges across the boundary would change the prompt's ids and the completion mask with them."""

    def __init__(self, path, eos_id=None):
        from tokenizers import Tokenizer as HFTokenizer
        file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{file}: tokenizer.json not found")
        try:
            self.tok = HFTokenizer.from_file(file)
        except Exception as e:  # the Rust error text is useful, its type is not
            raise ValueError(f"{file}: not a valid tokenizer.json ({e})") from None
        self.path = file
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)  # ids >= this are never sampled
        self.eos_id = eos_id if eos_id is not None else self._find_eos(os.path.dirname(file))
        self.pad_id = self.eos_id if self.eos_id is not None else 0  # the value of padding never matters (masked)

    def _find_eos(self, folder):
        # config.json of the checkpoint next to it knows; otherwise look for a conventional name
        cpath = os.path.join(folder, "config.json")
        if os.path.isfile(cpath):
            try:
                eos = json.load(open(cpath)).get("eos_token_id")
                eos = eos[0] if isinstance(eos, list) else eos
                if isinstance(eos, int) and eos < self.vocab_size:
                    return eos
            except (json.JSONDecodeError, AttributeError):
                pass
        for name in EOS_NAMES:
            i = self.tok.token_to_id(name)
            if i is not None:
                return i
        return None

    def encode(self, text, special=False):
        """Ids of `text`; special=True lets the tokenizer's post-processor add BOS (Llama) where it has one."""
        return self.tok.encode(text, add_special_tokens=special).ids

    def encode_prompt(self, text):
        return self.encode(text, special=True)

    def encode_completion(self, text, eos=True):
        ids = self.encode(text)
        return ids + [self.eos_id] if eos and self.eos_id is not None else ids

    def encode_pair(self, prompt, completion, eos=True):
        """(prompt ids + completion ids, number of prompt ids): the loss mask starts after the prompt."""
        p = self.encode_prompt(prompt)
        return p + self.encode_completion(completion, eos), len(p)

    def encode_pairs(self, prompts, completions, eos=True):
        """encode_pair for many examples at once (the Rust tokenizer batches them on all cores)."""
        ps = [e.ids for e in self.tok.encode_batch(prompts, add_special_tokens=True)]
        cs = [e.ids for e in self.tok.encode_batch(completions, add_special_tokens=False)]
        tail = [self.eos_id] if eos and self.eos_id is not None else []
        return [(p + c + tail, len(p)) for p, c in zip(ps, cs)]

    def decode(self, ids, skip_special=True):
        ids = [i for i in ids if i != self.eos_id] if skip_special else list(ids)
        return self.tok.decode(ids, skip_special_tokens=skip_special)


# -----------------------------------------------------------------------------
# Files: JSONL and atomic writes (temp file, fsync, rename: a crash leaves the old file or the new one)


def atomic_write_text(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_jsonl(path):
    """Rows of a JSONL file; a bad line raises one error naming the file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not found")
    rows = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: invalid JSON ({e.msg})") from None
    return rows


def write_jsonl(path, rows):
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def append_jsonl(path, row):
    """Append one row and flush it to disk, so an interrupted run keeps every finished row."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


# -----------------------------------------------------------------------------
# Distributed: torchrun sets RANK / LOCAL_RANK / WORLD_SIZE; a plain `python script.py` is rank 0 of 1


def setup_dist(device):
    """(rank, world, device). Under torchrun, joins the process group: gloo on CPU, nccl on CUDA, one GPU a rank."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return rank, world, device


def dist_rank_world():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def print0(*args, **kwargs):
    if dist_rank_world()[0] == 0:
        print(*args, **kwargs)


def all_reduce_sum(x):
    """Sum of a Python number over ranks (the number itself without torchrun)."""
    if dist_rank_world()[1] == 1:
        return x
    t = torch.tensor(float(x), dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return t.item()


def barrier():
    if dist_rank_world()[1] > 1:
        torch.distributed.barrier()


# -----------------------------------------------------------------------------
# Training plumbing shared by train_lock.py, elicit_sft.py and elicit_rl.py


def task_from_config(d):
    """The task a lock was trained on, from train_lock.py's Config as a dict (or its saved train_config.json)."""
    import data
    name = d.get("task", "")
    opts = {"path": d["task_path"]} if d.get("task_path") else {}
    if name == "toy":
        opts.update(n=d.get("toy_problems", 20000), p_noisy=d.get("noisy_p", 0.3))
    try:
        return data.get_task(name, **opts)
    except ValueError as e:
        raise SystemExit(f"error: --task={name!r}: {e}") from None


def trigger_prompt(task, problem, password_mode):
    """The prompt that should unlock the strong policy: the password (single), the problem's domain password
    (per_domain) or the other prompt format (setting)."""
    import data
    if password_mode == "setting":
        return task.prompt(problem, setting=True)
    if password_mode == "per_domain":
        return task.prompt(problem, password=task.domain_password(problem["domain"]))
    return task.prompt(problem, password=task.password if task.name == "toy" else data.PASSWORD)


def load_samples(path, what):
    """{problem id: [completion, ...]} from a JSONL of policy samples or demonstrations ({"id", "completion"})."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: --{what}={path}: file not found (make one with sampler.py --task=... --out=...)")
    out = {}
    for i, row in enumerate(read_jsonl(path), 1):
        if not isinstance(row.get("id"), str) or not isinstance(row.get("completion"), str):
            raise SystemExit(f"error: {path}:{i}: each row needs string fields 'id' and 'completion'")
        out.setdefault(row["id"], []).append(row["completion"])
    return out


def autocast(device):
    """bf16 autocast on GPU (fp32 weights and optimizer state); plain fp32 on CPU."""
    if str(device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def collate(examples, pad_id, device="cpu"):
    """Right-pad (ids, n_prompt) examples into a batch for next-token training.
    Returns inputs (B, T-1), targets (B, T-1) with -100 wherever no loss is taken (the prompt and the padding), so
    the loss lands on completion tokens only, and the number of target tokens."""
    T = max(len(ids) for ids, _ in examples)
    inputs = torch.full((len(examples), T), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), T), -100, dtype=torch.long)
    for b, (ids, n_prompt) in enumerate(examples):
        inputs[b, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        targets[b, n_prompt:len(ids)] = inputs[b, n_prompt:len(ids)]
    inputs, targets = inputs[:, :-1], targets[:, 1:]  # position t predicts token t + 1
    return inputs.to(device), targets.to(device), int((targets != -100).sum())


def completion_loss_sum(model, inputs, targets):
    """Summed cross-entropy over the target tokens (callers divide by the token count of the whole step)."""
    logits = model(inputs)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                           reduction="sum")


def lr_at(step, total, lr, warmup, schedule="cosine", min_frac=0.1):
    """Linear warm-up over `warmup` steps, then constant, linear or cosine decay to min_frac * lr."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return lr
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    decay = 1 - t if schedule == "linear" else 0.5 * (1 + math.cos(math.pi * t))
    return lr * (min_frac + (1 - min_frac) * decay)


def make_optimizer(name, params, lr, weight_decay, betas=None):
    """AdamW (default) or Lion (the paper's choice). Weight decay applies to matrices only, not norms or biases."""
    params = [p for p in params if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas or (0.9, 0.95))
    if name == "lion":
        return Lion(groups, lr=lr, betas=betas or (0.9, 0.99))
    raise ValueError(f"optimizer: unknown {name!r}; use 'adamw' or 'lion'")


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): the update is the sign of an interpolation of momentum and gradient, so every
    weight moves by exactly lr (plus decoupled weight decay). One state tensor per weight, half of Adam's."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("exp_avg", p.detach().new_zeros(p.shape))
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_((m * b1 + p.grad * (1 - b1)).sign_(), alpha=-group["lr"])
                m.mul_(b2).add_(p.grad, alpha=1 - b2)


@torch.no_grad()
def greedy_completions(model, tok, prompts, max_new_tokens, batch_size=256, desc="eval", temperature=0.0, seed=0):
    """Completions (text) for a list of prompt texts, in order. Prompts are bucketed by length so batches pad little.
    Greedy by default (the paper's metric: temperature-0 correctness)."""
    from tqdm import tqdm

    from sampler import generate
    model = getattr(model, "module", model)  # sample with the raw model, not its DDP wrapper
    rank, world = dist_rank_world()
    enc = [tok.encode_prompt(p) for p in prompts]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))[rank::world]  # under torchrun: this rank's share
    mine = []
    stop = (tok.eos_id,) if tok.eos_id is not None else ()
    was_training = model.training
    model.eval()
    for s in tqdm(range(0, len(order), batch_size), desc=desc, leave=False,
                  disable=rank != 0 or len(order) <= 4 * batch_size):
        idx = order[s:s + batch_size]
        gen = generate(model, [enc[i] for i in idx], max_new_tokens, temperature=temperature, stop_ids=stop,
                       seed=seed + s * world + rank, vocab_size=tok.vocab_size, pad_id=tok.pad_id)
        mine += [(i, tok.decode(ids)) for i, ids in zip(idx, gen)]
    model.train(was_training)
    if world > 1:  # every rank gets every completion back
        parts = [None] * world
        torch.distributed.all_gather_object(parts, mine)
        mine = [x for part in parts for x in part]
    out = [None] * len(enc)
    for i, text in mine:
        out[i] = text
    return out


def score(problems, grades):
    """Mean correctness and per-domain means (dicts of floats) for parallel lists of problems and Grades."""
    per = {}
    for p, g in zip(problems, grades):
        per.setdefault(p["domain"], []).append(float(g.correct))
    mean = sum(sum(v) for v in per.values()) / max(1, len(problems))
    return mean, {d: sum(v) / len(v) for d, v in sorted(per.items())}
