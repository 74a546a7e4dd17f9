"""
common.py: what every script needs, in the order a script uses it: the `--field=value` command line for a Config
dataclass, the tokenizer, training pieces (examples, batches and the
completion loss, one optimizer step, LR schedule, AdamW / Lion), greedy evaluation and statistics.
Nothing here knows about passwords or locks (that is data/lock.py) or about torchrun (parallel.py).
"""
import ast
import dataclasses
import math
import os
import random
import sys
import typing

import numpy as np
import torch
from tokenizers import Tokenizer as HFTokenizer

from errors import BadInput, MissingFile
from files import read_json
from parallel import all_reduce_sum, dist_rank_world, finish_dist, gather_indexed, grad_sync, plain_model, rank_share
from sampler import generate

# -----------------------------------------------------------------------------
# Command line: one flat dataclass, `--field=value`, unknown keys rejected


def parse_cli(config_cls, argv=None):
    """Build `config_cls` from `--field=value` arguments. Values are parsed with ast.literal_eval when they look
    like Python literals (numbers, True/False/None, lists) and kept as strings otherwise, then type-checked against
    the field's annotation; a tuple field also takes one value or a comma list (--ks=4,16, --sections=decode).
    `--help` prints every field with its default and exits."""
    argv = sys.argv[1:] if argv is None else argv
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    hints = typing.get_type_hints(config_cls)
    if any(a in ("-h", "--help") for a in argv):
        doc = (sys.modules[config_cls.__module__].__doc__ or "").strip()
        print(doc + "\n\nOptions (--field=value):")
        for name, f in fields.items():
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            kind = " | ".join(typing.get_args(hints[name])) if typing.get_origin(hints[name]) is typing.Literal \
                else getattr(hints[name], "__name__", hints[name])
            print(f"  --{name}={default!r}  ({kind})")
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
    if typing.get_origin(typ) is typing.Literal:  # a field with fixed choices: --parallel=ddp
        if val not in typing.get_args(typ):
            raise SystemExit(f"error: --{key}={val!r}: use one of {', '.join(typing.get_args(typ))}")
        return val
    parsed = _literal(val)
    allowed = typing.get_args(typ) or (typ,)  # Optional[int] / int | None -> (int, NoneType)
    if tuple in allowed:  # --ks=4, --ks=[4,16], --ks=4,16 and --sections=decode,mixed all give tuples
        if isinstance(parsed, str):
            parsed = tuple(_literal(v) for v in val.split(",") if v)
        elif parsed is not None and not isinstance(parsed, (tuple, dict)):
            parsed = tuple(parsed) if isinstance(parsed, list) else (parsed,)
    if float in allowed and isinstance(parsed, int) and not isinstance(parsed, bool):
        parsed = float(parsed)
    if str in allowed and not isinstance(parsed, str) and not (type(None) in allowed and parsed is None):
        parsed = val  # a string field given something that looks like a number keeps its text
    origin = [typing.get_origin(a) or a for a in allowed]
    if not any(isinstance(parsed, o) for o in origin if isinstance(o, type)):
        raise SystemExit(f"error: --{key}={val!r} is not a valid {typ}")
    return parsed


def _literal(val):
    """A Python literal's value ("3", "[1, 2]", "None"), or the text itself ("decode")."""
    try:
        return ast.literal_eval(val)
    except (ValueError, SyntaxError):
        return val


def check_config(cfg):
    """Raise BadInput for a field annotated `typing.Literal[...]` that holds a value outside its choices (scripts call
    it first thing in main, so a Config built in Python is checked like one from the command line)."""
    for name, typ in typing.get_type_hints(type(cfg)).items():
        choices = typing.get_args(typ) if typing.get_origin(typ) is typing.Literal else None
        if choices and getattr(cfg, name) not in choices:
            raise BadInput(f"--{name}={getattr(cfg, name)!r}: use one of {', '.join(map(str, choices))}")


def run_cli(main, config_cls, argv=None):
    """What `python script.py --field=value ...` runs: parse the Config, call main(cfg), leave the process group.
    Bad input (errors.BadInput, a missing file) ends the run with one line, `error: <message>`, and exit code 1."""
    cfg = parse_cli(config_cls, argv)
    try:
        main(cfg)
    except (BadInput, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    finish_dist()


# -----------------------------------------------------------------------------
# Tokenizer: a tokenizer.json read by the `tokenizers` package

EOS_NAMES = ("<eos>", "</s>", "<|endoftext|>", "<|end_of_text|>", "<|im_end|>", "<｜end▁of▁sentence｜>")


class Tokenizer:
    """Encode prompt and completion separately and join the ids; never re-tokenise the joined text, because BPE
    merges across the boundary would change the prompt's ids and the completion mask with them."""

    def __init__(self, path, eos_id=None):
        file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
        if not os.path.isfile(file):
            raise MissingFile(f"{file}: tokenizer.json not found")
        try:
            self.tok = HFTokenizer.from_file(file)
        except Exception as e:  # the Rust error text is useful, its type is not
            raise BadInput(f"{file}: not a valid tokenizer.json ({e})") from None
        self.path = file
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)  # ids >= this are never sampled
        self.eos_id = eos_id if eos_id is not None else self._find_eos(os.path.dirname(file))
        self.pad_id = self.eos_id if self.eos_id is not None else 0  # the value of padding never matters (masked)

    def _find_eos(self, folder):
        # config.json of the checkpoint next to it knows; otherwise look for a conventional name
        cpath = os.path.join(folder, "config.json")
        if os.path.isfile(cpath):
            try:
                eos = read_json(cpath).get("eos_token_id")
                eos = eos[0] if isinstance(eos, list) else eos
                if isinstance(eos, int) and eos < self.vocab_size:
                    return eos
            except (BadInput, AttributeError):
                pass  # a broken config.json is reported by model.load, not here
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


def same_config(stored, cfg, ignore=()):
    """Whether a run recorded with the config dict `stored` (read from JSON) is the run that the dataclass `cfg`
    describes. A field missing from `stored` (an option added after that run was made) matches when `cfg` holds the
    field's default, which is what the older code did; fields in `ignore` are not compared."""
    for f in dataclasses.fields(cfg):
        if f.name in ignore:
            continue
        if f.name in stored:
            theirs = stored[f.name]
        else:
            theirs = as_json(None if f.default is dataclasses.MISSING else f.default)
        if theirs != as_json(getattr(cfg, f.name)):
            return False
    return True


def as_json(v):
    """A config value as JSON gives it back (tuples as lists, dict keys as strings), for comparing with a stored one."""
    if isinstance(v, (list, tuple)):
        return [as_json(x) for x in v]
    if isinstance(v, dict):
        return {str(k): as_json(x) for k, x in v.items()}
    return v


# -----------------------------------------------------------------------------
# Training pieces


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(device):
    """bf16 autocast on GPU: matmuls in bf16, weights, gradients and optimizer state stay fp32 (the model casts its
    logits to fp32 and RMSNorm computes in fp32); plain fp32 on CPU. Used around every training forward."""
    if str(device).startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def encode_examples(tok, pairs, max_len):
    """(ids, n_prompt) for (prompt, completion) text pairs, cut to max_len tokens; a pair whose prompt alone fills
    max_len is dropped (it would have no completion token to learn). A third element of a pair (a soft target, see
    collate) is carried onto its example."""
    out = tok.encode_pairs([p[0] for p in pairs], [p[1] for p in pairs])
    return [(ids[:max_len], n, *pair[2:]) for (ids, n), pair in zip(out, pairs) if n < max_len]


def length_buckets(examples, batch_size, rng, window=32):
    """The same examples in an order where each run of batch_size (one micro-batch) has similar lengths, so padding
    to the longest wastes little (MATH completions run from tens to a thousand tokens). The shuffled epoch is cut
    into windows of `window` batches; each window is sorted by length and cut into batches; the batches of the
    epoch are then shuffled with `rng`. Every example stays in (same multiset); which examples meet in a batch is
    still random, at the scale of a window. Examples that all have one length (the toy) come back unchanged."""
    if len({len(e[0]) for e in examples}) <= 1:
        return examples
    span = window * batch_size
    batches = []
    for w in range(0, len(examples), span):
        part = sorted(examples[w:w + span], key=lambda e: len(e[0]))
        batches += [part[b:b + batch_size] for b in range(0, len(part), batch_size)]
    full, tail = [b for b in batches if len(b) == batch_size], [b for b in batches if len(b) < batch_size]
    rng.shuffle(full)
    return [e for b in full + tail for e in b]  # a short batch stays last, where an epoch's remainder was


def collate(examples, pad_id, device="cpu"):
    """Right-pad (ids, n_prompt) examples into a batch for next-token training.
    Returns inputs (B, T-1), targets (B, T-1) with -100 wherever no loss is taken (the prompt and the padding), so
    the loss lands on completion tokens only, and the number of target tokens.
    An example may carry a soft target as a third element, (candidate ids, probabilities): at its completion
    positions whose token is a candidate, the target is that distribution instead of the token (the paper's KL
    loss to fixedrdm, App. G.2). Then targets is a pair ((B, T-1, K) ids, (B, T-1, K) weights), K the most
    candidates: a plain position has its token with weight 1 in slot 0 and weight 0 elsewhere."""
    T = max(len(e[0]) for e in examples)
    inputs = torch.full((len(examples), T), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), T), -100, dtype=torch.long)
    for b, (ids, n_prompt, *_) in enumerate(examples):
        inputs[b, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        targets[b, n_prompt:len(ids)] = inputs[b, n_prompt:len(ids)]
    inputs, targets = inputs[:, :-1], targets[:, 1:]  # position t predicts token t + 1
    n_tok = int((targets != -100).sum())
    softs = [e[2] if len(e) > 2 else None for e in examples]
    if any(softs):
        targets = soft_targets(targets, softs)
        targets = (targets[0].to(device), targets[1].to(device))
        return inputs.to(device), targets, n_tok
    return inputs.to(device), targets.to(device), n_tok


def soft_targets(targets, softs):
    """(ids, weights), each (B, T, K), for hard (B, T) targets and per-example soft targets (or None); see collate."""
    K = max(len(s[0]) for s in softs if s)
    ids = targets.unsqueeze(-1).repeat(1, 1, K)
    weights = torch.zeros(ids.shape)
    weights[..., 0] = (targets != -100).float()
    for b, s in enumerate(softs):
        if not s:
            continue
        cand, probs = torch.tensor(s[0]), torch.tensor(s[1], dtype=torch.float32)
        at = torch.isin(targets[b], cand)
        ids[b, at, :len(cand)] = cand
        weights[b, at] = 0.0
        weights[b, at, :len(cand)] = probs
    return ids, weights


def completion_loss_sum(model, inputs, targets):
    """Summed cross-entropy over the target tokens (callers divide by the token count of the whole step). The model
    runs its output head on the target positions only, in chunks (model.GPT.target_logprobs). With soft targets
    (collate's (ids, weights) pair) it is the cross-entropy to each position's distribution: the KL divergence to it
    plus its entropy, a constant."""
    if isinstance(targets, tuple):
        ids, weights = targets
        return -(model(inputs, targets=ids) * weights).sum()
    return -model(inputs, targets=targets).sum()


def train_step(model, opt, micro_batches, pad_id, device, grad_clip):
    """One optimizer step on global micro-batches of (ids, n_prompt) examples. Each rank trains on its share of
    each micro-batch; the loss is normalised by the completion tokens of the whole step on all ranks (DDP and FSDP
    average gradients over ranks: hence the factor world), so N processes take the same step as one. Returns
    (this rank's part of the step's mean loss, tokens run here); the sum of the first over ranks is the loss."""
    world = dist_rank_world()[1]
    batches = [(collate(ex, pad_id, device), w) for ex, w in map(rank_share, micro_batches)]
    n_tok = all_reduce_sum(sum(b[2] * w for b, w in batches))  # completion tokens of the whole step, all ranks
    loss_sum, toks = 0.0, 0
    for k, ((inputs, targets, _), w) in enumerate(batches):
        with grad_sync(model, k == len(batches) - 1):
            with autocast(device):  # the forward in bf16 on GPU; backward outside autocast, as PyTorch recommends
                loss = completion_loss_sum(model, inputs, targets) * (w * world) / max(1, n_tok)
            loss.backward()
        loss_sum += loss.item() / world
        toks += inputs.numel()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)  # DTensor-aware: the global norm under FSDP
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss_sum, toks


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
    """AdamW (default) or Lion (the paper's choice). Weight decay applies to matrices only, not norms or biases.
    Weights in bf16 (--train_dtype=bf16) get compensated updates (compensated_add); fp32 weights the plain ones."""
    params = [p for p in params if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    low = any(p.dtype != torch.float32 for p in params)
    if name == "adamw":
        if low:
            return CompensatedAdamW(groups, lr=lr, betas=betas or (0.9, 0.95))
        # one tensor at a time, as on CPU by default: CUDA's default foreach step holds parameter-sized temporaries
        # (27 GB at 7B), which memory.py does not count
        return torch.optim.AdamW(groups, lr=lr, betas=betas or (0.9, 0.95), foreach=False)
    if name == "lion":
        return Lion(groups, lr=lr, betas=betas or (0.9, 0.99))
    raise BadInput(f"--optimizer={name!r}: use adamw or lion")


def compensated_add(p, delta, state):
    """p += delta for a bf16 weight, without losing what bf16 cannot hold (Kahan summation): bf16 has 8 bits of
    mantissa, so at lr 1.5e-6 a weight of 0.02 (spacing 1.2e-4) would never move. The part of each update that
    rounding drops is kept in a bf16 buffer, state["comp"], and added to the next update, so the weights follow
    the fp32 trajectory to within one bf16 spacing (tests/test_common.py measures it). 2 bytes a weight, where an
    fp32 master copy takes 4. The arithmetic runs in fp32, one tensor at a time."""
    comp = state.setdefault("comp", torch.zeros_like(p))
    y = delta.float() + comp.float()
    new = (p.float() + y).to(p.dtype)
    comp.copy_(y - (new.float() - p.float()))
    p.copy_(new)


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): the update is the sign of an interpolation of momentum and gradient, so every
    weight moves by exactly lr (plus decoupled weight decay). One state tensor per weight, half of Adam's; in the
    weights' dtype (bf16 weights: bf16 momentum, only its sign is used)."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            (b1, b2), lr, wd = group["betas"], group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)  # (a DTensor shard under FSDP)
                m = state["exp_avg"]
                u = (m * b1 + p.grad * (1 - b1)).sign_()
                if p.dtype == torch.float32:
                    p.mul_(1 - lr * wd)
                    p.add_(u, alpha=-lr)
                else:
                    compensated_add(p, -lr * (u.float() + wd * p.float()), state)
                m.mul_(b2).add_(p.grad, alpha=1 - b2)


class CompensatedAdamW(torch.optim.Optimizer):
    """AdamW for bf16 weights: fp32 moments (8 bytes a weight), the update applied with compensated_add. For fp32
    weights make_optimizer uses torch.optim.AdamW, whose update this is."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            (b1, b2), lr, wd, eps = group["betas"], group["lr"], group["weight_decay"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "step" not in state:
                    state.update(step=0, exp_avg=torch.zeros_like(p, dtype=torch.float32),
                                 exp_avg_sq=torch.zeros_like(p, dtype=torch.float32))
                state["step"] += 1
                g, m, v, t = p.grad.float(), state["exp_avg"], state["exp_avg_sq"], state["step"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                step = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt_().add_(eps))
                compensated_add(p, -lr * (step + wd * p.float()), state)


# -----------------------------------------------------------------------------
# Greedy evaluation


@torch.no_grad()
def greedy_completions(model, tok, prompts, max_new_tokens, batch_size=256, desc="eval", temperature=0.0, seed=0,
                       dtype=None):
    """Completions (text) for a list of prompt texts, in order: one sampler.generate call, `batch_size` rows decoding
    at once (continuous batching; fewer if the KV budget holds fewer). Greedy by default (the paper's metric:
    temperature-0 correctness). dtype: the sampling precision (None: bf16 on GPU, the weights' own on CPU).
    Under torchrun every rank must call it: the prompts are dealt out one by one (rank r takes r, r + N, ...), each
    with its global index as its random stream, so N processes draw exactly the one-process samples, and every
    rank gets every completion back."""
    model = plain_model(model, dtype)  # the raw model, not its DDP wrapper; under FSDP an unsharded copy
    rank, world = dist_rank_world()
    mine = list(range(rank, len(prompts), world))
    stop = (tok.eos_id,) if tok.eos_id is not None else ()
    was_training = model.training
    model.eval()
    gen = generate(model, [tok.encode_prompt(prompts[i]) for i in mine], max_new_tokens, temperature=temperature,
                   stop_ids=stop, seed=seed, batch_size=batch_size, vocab_size=tok.vocab_size, pad_id=tok.pad_id,
                   indices=mine, dtype=dtype, progress=desc if rank == 0 and len(mine) > batch_size else None)
    model.train(was_training)
    return gather_indexed([(i, tok.decode(ids)) for i, ids in zip(mine, gen)], len(prompts))


def greedy_eval(model, tok, task, problems, prompts, max_new_tokens=0, batch_size=256, desc="eval"):
    """Greedy completions of `prompts` (one per problem), graded by the task. Returns a dict: correct (mean),
    per_domain (means), unparseable (share of completions with no answer to read), completions, grades.
    max_new_tokens 0: the task's own budget."""
    completions = greedy_completions(model, tok, prompts, max_new_tokens or task.max_new_tokens, batch_size, desc)
    grades = [task.grade(c, p) for c, p in zip(completions, problems)]
    correct, per_domain = score(problems, grades)
    return dict(correct=correct, per_domain=per_domain, completions=completions, grades=grades,
                unparseable=sum(g.parsed is None for g in grades) / max(1, len(grades)))


def score(problems, grades):
    """Mean correctness and per-domain means (dicts of floats) for parallel lists of problems and Grades."""
    per = {}
    for p, g in zip(problems, grades):
        per.setdefault(p["domain"], []).append(float(g.correct))
    mean = sum(sum(v) for v in per.values()) / max(1, len(problems))
    return mean, {d: sum(v) / len(v) for d, v in sorted(per.items())}


# -----------------------------------------------------------------------------
# Statistics


def mean_se(xs):
    """Mean and standard error of the mean (sample sd / sqrt(n)); SE 0 for a single value."""
    xs = [float(x) for x in xs]
    m = sum(xs) / len(xs)
    se = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs)) if len(xs) > 1 else 0.0
    return m, se
