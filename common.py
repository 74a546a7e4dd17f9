"""
Plumbing shared by the scripts (sampler.py's command line, train_lock.py, elicit_sft.py, elicit_rl.py): the
`--field=value` command-line parser for a Config dataclass, the tokenizer wrapper, JSONL files and atomic writes;
torchrun plumbing (DDP or FSDP2, the shared training step, sharded evaluation, full checkpoints from a sharded
model), a training-memory estimate, and the training pieces (batches, loss, LR schedule, AdamW / Lion).
Nothing here knows about password locking; the experiments live in the scripts.
"""
import ast
import contextlib
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


def same_config(stored, cfg, ignore=()):
    """Whether a run recorded with the config dict `stored` (read from JSON) is the run that the dataclass `cfg`
    describes. A field missing from `stored` (an option added after that run was made) matches when `cfg` holds the
    field's default, which is what the older code did; fields in `ignore` are not compared."""
    for f in dataclasses.fields(cfg):
        if f.name in ignore:
            continue
        default = None if f.default is dataclasses.MISSING else f.default
        mine = json.loads(json.dumps(getattr(cfg, f.name)))
        if stored.get(f.name, json.loads(json.dumps(default))) != mine:
            return False
    return True


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


def finish_dist():
    """Leave the process group, all ranks together: a rank that tears gloo down while another is still writing its
    files was seen to abort at exit ("terminate called without an active exception", about 1 launch in 20)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def rank_share(batch):
    """(this rank's share of a global batch, weight): every world-th item, starting at this rank. A rank left with
    nothing (a last batch smaller than the world) gets the first item with weight 0, so that it still runs the
    forward and backward that DDP and FSDP wait for on every rank; the caller multiplies its loss by the weight."""
    rank, world = dist_rank_world()
    mine = batch[rank::world]
    return (mine, 1.0) if mine else (batch[:1], 0.0)


def gather_indexed(mine, n):
    """[value for index 0 .. n-1] on every rank from each rank's list of (index, value)."""
    if dist_rank_world()[1] > 1:
        parts = [None] * dist_rank_world()[1]
        torch.distributed.all_gather_object(parts, mine)
        mine = [x for part in parts for x in part]
    out = [None] * n
    for i, v in mine:
        out[i] = v
    return out


# -----------------------------------------------------------------------------
# Many processes: DDP or FSDP2 (fully_shard), activation checkpointing, full checkpoints from a sharded model.
# One process: every helper here is a no-op or the plain call, so one-process numbers do not depend on this code.
#   ddp   every rank holds the whole model, optimizer state and gradients; gradients are all-reduced (averaged).
#   fsdp  each transformer Block, then the root (embeddings, final norm, head), is sharded over the ranks with
#         fully_shard: parameters, gradients and optimizer state are split 1/world a rank; a Block's parameters are
#         all-gathered just before it runs and freed after; gradients are reduce-scattered (averaged).
# Precision: fp32 weights, gradients and optimizer state everywhere. On CUDA the forward runs in bf16: under
# torch.autocast (DDP and one process), and under FSDP also MixedPrecisionPolicy(param_dtype=bf16,
# reduce_dtype=fp32): parameters are all-gathered in bf16, gradients reduced in fp32 into the fp32 shards. CPU: fp32.

PARALLEL = ("ddp", "fsdp")


def is_fsdp(model):
    from torch.distributed.fsdp import FSDPModule
    return isinstance(model, FSDPModule)


def prepare_model(model, parallel="ddp", grad_checkpoint=False, device="cpu"):
    """Set activation checkpointing and, for --parallel=fsdp under torchrun, shard the model in place (each Block,
    then the root). DDP wrapping happens per training run (ddp_wrap). Returns the model."""
    if parallel not in PARALLEL:
        raise SystemExit(f"error: --parallel={parallel!r}: use ddp or fsdp")
    model.grad_checkpoint = grad_checkpoint
    if parallel == "fsdp" and dist_rank_world()[1] > 1:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if str(device).startswith("cuda") else MixedPrecisionPolicy()
        for block in model.h:
            fully_shard(block, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
    return model


def load_model(path, device, parallel="ddp", grad_checkpoint=False):
    """model.load(path), prepared for training. Under FSDP only rank 0 reads the checkpoint (into CPU memory): every
    rank builds the model on the meta device and shards it, and rank 0 sends each rank its shards."""
    import model as model_lib
    if parallel != "fsdp" or dist_rank_world()[1] == 1:
        return prepare_model(model_lib.load(path, device=device), parallel, grad_checkpoint, device)
    cfg = model_lib.Config.from_hf(json.load(open(os.path.join(path, "config.json"))))
    with torch.device("meta"):
        model = model_lib.GPT(cfg)
    prepare_model(model, parallel, grad_checkpoint, device)
    model.to_empty(device=device)
    model.inv_freq = model_lib.rope_inv_freq(cfg).to(device)  # a non-persistent buffer: not in the checkpoint
    load_full_state(model, model_lib.load(path).state_dict() if dist_rank_world()[0] == 0 else {})
    return model.eval()


def full_state(model):
    """Every weight, unsharded: a copy on the model's device, or under FSDP in rank 0's CPU memory ({} on the
    other ranks; every rank must call it)."""
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.clone() for k, v in model.state_dict().items()}


def load_full_state(model, sd):
    """Copy a full state dict (from full_state) into the model; under FSDP rank 0's dict is sent to every rank."""
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
        # (a shallow copy: set_model_state_dict puts this rank's shards into the dict it is given)
        set_model_state_dict(model, dict(sd), options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    else:
        model.load_state_dict(sd)


def plain_model(model):
    """A model that one rank can run alone (sampling, evaluation): the model itself, DDP's inner module, or under
    FSDP an unsharded copy gathered on every rank (every rank must call it; the copy costs the full weights)."""
    import model as model_lib
    model = getattr(model, "module", model)
    if not is_fsdp(model):
        return model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    with torch.device("meta"):
        copy = model_lib.GPT(model.config)
    copy.load_state_dict(sd, assign=True)
    if model.config.tie_embeddings:
        copy.lm_head.weight = copy.wte.weight
    copy.inv_freq = model.inv_freq.clone()
    return copy.eval()


def save_model(model, path, tokenizer_path=None):
    """Write an HF checkpoint directory (model.save, plus tokenizer.json) from rank 0. Every rank must call it:
    under FSDP the full weights are first gathered into rank 0's CPU memory, so the files are the usual ones."""
    import model as model_lib
    model = getattr(model, "module", model)
    if is_fsdp(model):
        sd = full_state(model)
        if dist_rank_world()[0] == 0:
            with torch.device("meta"):
                copy = model_lib.GPT(model.config)
            copy.load_state_dict(sd, assign=True)
            model = copy
    if dist_rank_world()[0] == 0:
        model_lib.save(model, path)
        if tokenizer_path:
            import shutil
            shutil.copy(tokenizer_path, os.path.join(path, "tokenizer.json"))
    barrier()


def optimizer_state(model, opt):
    """The optimizer's state dict; under FSDP gathered in full into rank 0's CPU memory (keys: parameter names)."""
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
        return get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return opt.state_dict()


def load_optimizer_state(model, opt, state):
    """Load what optimizer_state saved (under FSDP rank 0's full state is sent to every rank; others pass {})."""
    fsdp_state = any(isinstance(k, str) for k in state.get("state", {}))  # FSDP's keys are parameter names
    if is_fsdp(model) != fsdp_state and state.get("state"):
        raise SystemExit(f"error: --resume: the optimizer state was saved with --parallel="
                         f"{'fsdp' if fsdp_state else 'ddp'}; resume with the same --parallel")
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
        set_optimizer_state_dict(model, opt, state,
                                 options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    else:
        opt.load_state_dict(state)


def ddp_wrap(model):
    """The module to train: DDP around the model under torchrun, unless it is FSDP-sharded (or one process)."""
    if dist_rank_world()[1] == 1 or is_fsdp(model):
        return model
    return torch.nn.parallel.DistributedDataParallel(model)


def grad_sync(model, sync):
    """Context for one backward: gradients are all-reduced (DDP) or reduce-scattered (FSDP) only when sync, so
    micro-batches accumulate locally and sync once per optimizer step."""
    if is_fsdp(model):
        model.set_requires_gradient_sync(sync)
    elif not sync and isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


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


# -----------------------------------------------------------------------------
# Memory estimate (rough; printed by rank 0 at the start of every training script)

GB = 1e9


def memory_estimate(n_params, n_layer, n_embd, vocab, tokens, world=1, fsdp=False, optimizer="adamw",
                    param_bytes=4, compute_bytes=4, grad_checkpoint=False, grad_accum=1):
    """Training memory per device in bytes, by part. tokens: one micro-batch on one device (sequences x length).
      weights, grads  n_params x param_bytes (fp32: 4), divided by world under FSDP; FSDP with grad_accum > 1
                      keeps unsharded gradients between syncs, so full size then; DDP adds its all-reduce buckets,
                      another copy of the gradients
      optimizer       fp32 state: AdamW 2 moments (8 bytes a parameter), Lion 1 (4); divided by world under FSDP
      gathered        compute copies of weights: bf16 autocast casts every weight once per forward (one process,
                      DDP: n_params x 2); FSDP all-gathers about two Blocks at a time (the one running and the next,
                      prefetched) plus the root's embeddings and head, which stay gathered through the forward
      activations     saved for backward: about 17 values a token, hidden unit and layer (34 bytes in bf16, with
                      SDPA's flash / memory-efficient kernels keeping no T x T scores; Korthikanti et al. 2022);
                      with activation checkpointing one Block input a layer plus one Block's worth, recomputed
      logits          fp32 logits, log-softmax and their gradient: about 12 bytes a token and vocabulary entry
    Not counted: the CUDA context and allocator fragmentation (leave 10-20%), the KV cache of evaluation."""
    shard = world if fsdp else 1
    emb = vocab * n_embd * 2  # input embedding and output head (counted twice if tied: an upper bound)
    est = {"weights": n_params * param_bytes / shard,
           "grads": n_params * param_bytes / (1 if fsdp and grad_accum > 1 else shard),
           "optimizer": n_params * 4 * {"adamw": 2, "lion": 1}[optimizer] / shard}
    if world > 1 and not fsdp:
        est["ddp_buckets"] = n_params * param_bytes
    if fsdp and world > 1:
        est["gathered"] = (2 * max(0, n_params - emb) / n_layer + emb) * compute_bytes
    elif compute_bytes != param_bytes:
        est["gathered"] = n_params * compute_bytes
    per_layer = tokens * n_embd * 17 * compute_bytes
    est["activations"] = (tokens * n_embd * compute_bytes * n_layer + per_layer) if grad_checkpoint \
        else per_layer * n_layer
    est["logits"] = tokens * vocab * 12
    est["total"] = sum(est.values())
    return est


def fmt_bytes(b):
    return f"{b / GB:.1f} GB" if b >= GB else f"{b / 1e6:.1f} MB" if b >= 1e6 else f"{b / 1e3:.0f} kB"


def print_memory_estimate(model, device, sequences, seq_len, optimizer, parallel, grad_checkpoint, grad_accum=1):
    """Rank 0 prints memory_estimate for this run (sequences: one global micro-batch) and, on CUDA, whether it
    fits the device's memory. Returns the estimate."""
    _, world = dist_rank_world()
    cfg, cuda = model.config, str(device).startswith("cuda")
    fsdp = parallel == "fsdp" and world > 1
    tokens = math.ceil(sequences / world) * seq_len
    est = memory_estimate(model.num_params(), cfg.n_layer, cfg.n_embd, cfg.vocab_size, tokens, world, fsdp,
                          optimizer, 4, 2 if cuda else 4, grad_checkpoint, grad_accum)
    parts = " + ".join(f"{k} {fmt_bytes(v)}" for k, v in est.items() if k != "total")
    how = f"{'fsdp' if fsdp else 'ddp' if world > 1 else 'one process'}{f' x {world}' if world > 1 else ''}, " \
          f"{'bf16 compute' if cuda else 'fp32'}, {optimizer}, {tokens} tokens a micro-batch" + \
          (", activation checkpointing" if grad_checkpoint else "")
    verdict = ""
    if cuda:
        have = torch.cuda.get_device_properties(device).total_memory
        verdict = f" of {have / GB:.1f} GB: " + ("fits" if est["total"] < 0.9 * have else
                                                  "may NOT fit (try --parallel=fsdp, --grad_checkpoint=True or a "
                                                  "smaller batch)")
    print0(f"memory estimate per device ({how}): {parts} = {fmt_bytes(est['total'])}{verdict}")
    return est


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
    """bf16 autocast on GPU: matmuls in bf16, weights, gradients and optimizer state stay fp32 (the model casts its
    logits to fp32 and RMSNorm computes in fp32); plain fp32 on CPU. Used around every training forward."""
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
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if "exp_avg" not in self.state[p]:
                    self.state[p]["exp_avg"] = torch.zeros_like(p)  # (a DTensor shard under FSDP)
                m = self.state[p]["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_((m * b1 + p.grad * (1 - b1)).sign_(), alpha=-group["lr"])
                m.mul_(b2).add_(p.grad, alpha=1 - b2)


@torch.no_grad()
def greedy_completions(model, tok, prompts, max_new_tokens, batch_size=256, desc="eval", temperature=0.0, seed=0):
    """Completions (text) for a list of prompt texts, in order. Prompts are bucketed by length so batches pad little.
    Greedy by default (the paper's metric: temperature-0 correctness).
    Under torchrun every rank runs a share and all get every completion back (every rank must call it). Greedy: the
    prompts are dealt out one by one (balanced; greedy output does not depend on the batching). Sampling
    (temperature > 0): each rank runs whole batches of the one-process order with that batch's seed (seed + the
    batch's first position), so N processes draw exactly the samples one process draws with the same batch_size;
    with fewer batches than ranks some ranks idle (use a smaller batch_size)."""
    from tqdm import tqdm

    from sampler import generate
    model = plain_model(model)  # sample with the raw model, not its DDP wrapper; under FSDP an unsharded copy
    rank, world = dist_rank_world()
    enc = [tok.encode_prompt(p) for p in prompts]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    if temperature > 0:
        batches = [(s, order[s:s + batch_size]) for s in range(0, len(order), batch_size)][rank::world]
    else:
        share = order[rank::world]
        batches = [(s, share[s:s + batch_size]) for s in range(0, len(share), batch_size)]
    mine = []
    stop = (tok.eos_id,) if tok.eos_id is not None else ()
    was_training = model.training
    model.eval()
    for s, idx in tqdm(batches, desc=desc, leave=False, disable=rank != 0 or len(order) <= 4 * batch_size):
        gen = generate(model, [enc[i] for i in idx], max_new_tokens, temperature=temperature, stop_ids=stop,
                       seed=seed + s, vocab_size=tok.vocab_size, pad_id=tok.pad_id)
        mine += [(i, tok.decode(ids)) for i, ids in zip(idx, gen)]
    model.train(was_training)
    return gather_indexed(mine, len(enc))


def mean_se(xs):
    """Mean and standard error of the mean (sample sd / sqrt(n)); SE 0 for a single value."""
    xs = [float(x) for x in xs]
    m = sum(xs) / len(xs)
    se = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs)) if len(xs) > 1 else 0.0
    return m, se


def score(problems, grades):
    """Mean correctness and per-domain means (dicts of floats) for parallel lists of problems and Grades."""
    per = {}
    for p, g in zip(problems, grades):
        per.setdefault(p["domain"], []).append(float(g.correct))
    mean = sum(sum(v) for v in per.values()) / max(1, len(problems))
    return mean, {d: sum(v) / len(v) for d, v in sorted(per.items())}
