"""
parallel.py: torchrun plumbing. torchrun sets RANK / LOCAL_RANK / WORLD_SIZE; a plain `python script.py` is rank 0
of 1, and then every helper here is a no-op or the plain call, so one-process numbers do not depend on this file.
  ddp   every rank holds the whole model, optimizer state and gradients; gradients are all-reduced (averaged).
  fsdp  each transformer Block, then the root (embeddings, final norm, head), is sharded over the ranks with FSDP2
        fully_shard: parameters, gradients and optimizer state are split 1/world a rank; a Block's parameters are
        all-gathered just before it runs and freed after; gradients are reduce-scattered (averaged).
Precision: fp32 weights, gradients and optimizer state everywhere. On CUDA the forward runs in bf16: under
torch.autocast (DDP and one process), and under FSDP also MixedPrecisionPolicy(param_dtype=bf16,
reduce_dtype=fp32): parameters are all-gathered in bf16, gradients reduced in fp32 into the fp32 shards. CPU: fp32.
Also here: full checkpoints and optimizer state from a sharded model, and the one-rank copy used for sampling.
"""
import contextlib
import datetime
import os
import shutil

import torch
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

import model as model_lib

# -----------------------------------------------------------------------------
# Ranks and collectives


DIST_TIMEOUT = datetime.timedelta(minutes=60)  # a collective may wait while rank 0 writes a 7B checkpoint (~27 GB)


def setup_dist(device):
    """(rank, world, device). Under torchrun, joins the process group, one GPU a rank. On CUDA the group has two
    backends, "cpu:gloo,cuda:nccl": CUDA tensors (FSDP, DDP) go through NCCL, and the few small CPU collectives
    (loss sums, gathered evaluation results) through gloo; NCCL alone refuses CPU tensors."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend, timeout=DIST_TIMEOUT)
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
# DDP or FSDP2, activation checkpointing, full checkpoints from a sharded model

PARALLEL = ("ddp", "fsdp")


def is_fsdp(model):
    return isinstance(model, FSDPModule)


def prepare_model(model, parallel="ddp", grad_checkpoint=False, device="cpu"):
    """Set activation checkpointing and, for --parallel=fsdp under torchrun, shard the model in place (each Block,
    then the root). DDP wrapping happens per training run (ddp_wrap). Returns the model."""
    if parallel not in PARALLEL:
        raise SystemExit(f"error: --parallel={parallel!r}: use ddp or fsdp")
    model.grad_checkpoint = grad_checkpoint
    if parallel == "fsdp" and dist_rank_world()[1] > 1:
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
            if str(device).startswith("cuda") else MixedPrecisionPolicy()
        for block in model.h:
            fully_shard(block, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
    return model


TRAIN_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def load_model(path, device, parallel="ddp", grad_checkpoint=False, train_dtype="fp32"):
    """model.load(path) in the training dtype (fp32, or bf16 weights with compensated updates: common.make_optimizer),
    prepared for training. Under FSDP only rank 0 reads the checkpoint (into CPU memory): every rank builds the model
    on the meta device and shards it, and rank 0 sends each rank its shards."""
    dtype = TRAIN_DTYPES[train_dtype]
    if parallel != "fsdp" or dist_rank_world()[1] == 1:
        return prepare_model(model_lib.load(path, device=device, dtype=dtype), parallel, grad_checkpoint, device)
    cfg = model_lib._read_config(path)
    with torch.device("meta"):
        model = model_lib.GPT(cfg).to(dtype)
    prepare_model(model, parallel, grad_checkpoint, device)
    model.to_empty(device=device)
    model.inv_freq = model_lib.rope_inv_freq(cfg).to(device)  # a non-persistent buffer: not in the checkpoint
    load_full_state(model, model_lib.load(path).state_dict() if dist_rank_world()[0] == 0 else {})
    return model.eval()


def full_state(model):
    """Every weight, unsharded, in CPU memory (under FSDP rank 0's; {} on the other ranks, and every rank must call
    it): a copy to start each elicitation run from that costs no accelerator memory."""
    if is_fsdp(model):
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def load_full_state(model, sd):
    """Copy a full state dict (from full_state) into the model; under FSDP rank 0's dict is sent to every rank."""
    if is_fsdp(model):
        # (a shallow copy: set_model_state_dict puts this rank's shards into the dict it is given)
        set_model_state_dict(model, dict(sd), options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    else:
        model.load_state_dict(sd)


def plain_model(model, dtype=None):
    """A model that one rank can run alone (sampling, evaluation): the model itself, DDP's inner module, or under
    FSDP an unsharded copy on every rank (every rank must call it), in `dtype` (None: bf16 on GPU, else the
    weights' own). The copy is gathered one tensor at a time and cast before the next, so it costs the full
    weights in that dtype (14 GB for 7B in bf16) plus one fp32 tensor, never a full fp32 copy."""
    model = getattr(model, "module", model)
    if not is_fsdp(model):
        return model
    p0 = next(model.parameters())
    dtype = dtype or (torch.bfloat16 if p0.is_cuda else p0.dtype)
    sd = {n: p.full_tensor().detach().to(dtype) for n, p in model.named_parameters()}  # all-gather per tensor
    return model_lib.from_state(model.config, sd)


def save_model(model, path, tokenizer_path=None):
    """Write an HF checkpoint directory (model.save, plus tokenizer.json) from rank 0. Every rank must call it:
    under FSDP the full weights are first gathered into rank 0's CPU memory, so the files are the usual ones."""
    model = getattr(model, "module", model)
    if is_fsdp(model):
        sd = full_state(model)
        if dist_rank_world()[0] == 0:
            model = model_lib.from_state(model.config, sd)
    if dist_rank_world()[0] == 0:
        model_lib.save(model, path)
        if tokenizer_path:
            shutil.copy(tokenizer_path, os.path.join(path, "tokenizer.json"))
    barrier()


def optimizer_state(model, opt):
    """The optimizer's state dict; under FSDP gathered in full into rank 0's CPU memory (keys: parameter names)."""
    if is_fsdp(model):
        return get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return opt.state_dict()


def load_optimizer_state(model, opt, state):
    """Load what optimizer_state saved (under FSDP rank 0's full state is sent to every rank; others pass {})."""
    fsdp_state = any(isinstance(k, str) for k in state.get("state", {}))  # FSDP's keys are parameter names
    if is_fsdp(model) != fsdp_state and state.get("state"):
        raise SystemExit(f"error: --resume: the optimizer state was saved with --parallel="
                         f"{'fsdp' if fsdp_state else 'ddp'}; resume with the same --parallel")
    if is_fsdp(model):
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
    """Context for one backward. DDP all-reduces gradients only when sync, so micro-batches accumulate locally and
    sync once per optimizer step. FSDP reduce-scatters after every micro-batch instead: skipping it would keep
    full unsharded fp32 gradients between syncs (28 GB at 7B on every rank); the sharded ones accumulate, at the
    price of one reduce-scatter per micro-batch."""
    if not sync and isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()
