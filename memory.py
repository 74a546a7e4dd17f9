"""
memory.py: a rough estimate of training memory per device, printed by rank 0 at the start of every training script
(with what fits on 24 / 40 / 80 / 141 GB devices and, on CUDA, whether this run fits the device it has).
Every number comes from the part list in memory_estimate; tests/test_common.py checks them against a hand-worked
7B Llama. Not measured on a GPU yet (tools/gpu_check.py compares the estimate with a real step's peak).
"""
import math

import torch

from lora import lora_counts
from model import LOSS_CHUNK
from parallel import dist_rank_world, print0

GB = 1e9
DEVICE_GB = (24, 40, 80, 141)  # common accelerator sizes: RTX 4090 / A100-40 / A100-80, H100 / H200
# Bytes a token and layer that backward keeps: (a, b, c) per hidden unit, MLP unit and key/value unit (Llama's GQA
# width n_kv_head x head_dim; GPT-NeoX's q, k, v are in a), by family and compute mode:
#   fp32      fp32 weights, no autocast (CPU)
#   bf16      bf16 weights (--train_dtype=bf16)
#   autocast  fp32 weights, bf16 autocast (the GPU default): the residual stream and the norms stay fp32
# Measured with saved-tensor hooks over model.py's Blocks (tests/test_common.py measures them again); SDPA keeps no
# T x T scores. Llama: 4 saved values per MLP unit (gate, up, silu, product), NeoX 2 (fc output and its GELU).
SAVED = {"llama": {"fp32": (36, 16, 12), "bf16": (22, 8, 6), "autocast": (28, 8, 6)},
         "gpt_neox": {"fp32": (40, 8, 0), "bf16": (20, 4, 0), "autocast": (24, 4, 0)}}


def saved_bytes(arch, n_embd, mlp_dim, kv_dim, mode):
    """Activation bytes one token keeps in one layer (SAVED); mode: fp32, bf16 or autocast."""
    a, b, c = SAVED[arch][mode]
    return a * n_embd + b * mlp_dim + c * kv_dim


def shape_of(cfg):
    """memory_estimate's shape keywords for a model.Config: family, MLP width, key/value width."""
    return dict(arch=cfg.arch, mlp_dim=cfg.intermediate_size, kv_dim=cfg.n_kv_head * cfg.head_dim)


def memory_estimate(n_params, n_layer, n_embd, vocab, tokens, world=1, fsdp=False, optimizer="adamw",
                    train_dtype="fp32", cuda=True, grad_checkpoint=False, loss_chunk=LOSS_CHUNK,
                    lora_params=0, lora_act=0, arch="llama", mlp_dim=0, kv_dim=0):
    """Training memory per device in bytes, by part. tokens: one micro-batch on one device (sequences x length).
      weights, grads  n_params x 4 bytes (fp32) or 2 (bf16), divided by world under FSDP (also with gradient
                      accumulation: parallel.grad_sync reduce-scatters after every micro-batch); DDP adds its
                      all-reduce buckets, another copy of the gradients
      optimizer       fp32 weights: AdamW's two fp32 moments (8 bytes a parameter), Lion's one (4); bf16 weights:
                      the same AdamW moments, Lion's momentum in bf16 (2), plus the 2-byte compensation buffer
                      (common.compensated_add); divided by world under FSDP
      gathered        compute copies of weights: fp32 weights under bf16 autocast are cast once per forward (one
                      process, DDP: n_params x 2); FSDP all-gathers about two Blocks at a time (the one running and
                      the next, prefetched) plus the root's embeddings and head, which stay gathered
      activations     saved for backward: saved_bytes a token and layer (SAVED: for a 7B Llama 50 bytes a token
                      and hidden unit with bf16 weights, 56 under autocast; Korthikanti et al. 2022's 34 undercounts
                      SwiGLU and fp32 norms); with activation checkpointing one Block input a layer (in the weights'
                      dtype: the residual stream) plus one Block's worth, recomputed. mlp_dim and kv_dim default to
                      a 7B Llama's proportions (2.6875 x n_embd; n_embd) for Llama, 4 x n_embd for NeoX
      logits          the loss runs the output head over loss_chunk completion tokens at a time (fp32 logits, their
                      log-softmax and gradient: about 12 bytes a token and vocabulary entry); never (B, T, V)
    LoRA (lora_params > 0, the adapters' parameter count; lora.py): the n_params base weights are frozen (weights
    only: no gradients, optimizer state or DDP buckets for them); the adapters are fp32: 4 bytes each for weights,
    gradients and DDP buckets, AdamW's 8 (Lion's 4) of state, plus their bf16 cast under autocast; lora_act: the
    activation values a token and layer the LoRA path adds (the dropped inputs, kept for A's gradient, 2 bytes on
    GPU plus a 1-byte dropout mask each).
    Not counted: the CUDA context and allocator fragmentation (leave 10-20%), the KV cache of evaluation."""
    shard = world if fsdp else 1
    pb = {"fp32": 4, "bf16": 2}[train_dtype]
    cb = 2 if cuda else pb  # compute bytes: bf16 on GPU
    emb = vocab * n_embd * 2  # input embedding and output head (counted twice if tied: an upper bound)
    state = {("adamw", 4): 8, ("lion", 4): 4, ("adamw", 2): 8 + 2, ("lion", 2): 2 + 2}[(optimizer, pb)]
    if lora_params:  # frozen base in its dtype, fp32 adapters with gradients and optimizer state
        est = {"weights": n_params * pb + lora_params * 4, "grads": lora_params * 4,
               "optimizer": lora_params * {"adamw": 8, "lion": 4}[optimizer]}
    else:
        est = {"weights": n_params * pb / shard,
               "grads": n_params * pb / shard,
               "optimizer": n_params * state / shard}
    if world > 1 and not fsdp:
        est["ddp_buckets"] = lora_params * 4 if lora_params else n_params * pb
    if fsdp and world > 1:
        est["gathered"] = (2 * max(0, n_params - emb) / n_layer + emb) * cb
    elif cb != pb or (lora_params and cuda):
        est["gathered"] = n_params * cb * (cb != pb) + lora_params * cb * cuda
    mode = "bf16" if pb == 2 else "autocast" if cuda else "fp32"
    mlp_dim = mlp_dim or round(n_embd * (2.6875 if arch == "llama" else 4))
    per_layer = tokens * saved_bytes(arch, n_embd, mlp_dim, kv_dim or n_embd, mode) + tokens * lora_act * (cb + 1)
    est["activations"] = (tokens * n_embd * pb * n_layer + per_layer) if grad_checkpoint else per_layer * n_layer
    est["logits"] = min(tokens, loss_chunk) * vocab * 12
    est["total"] = sum(est.values())
    return est


def fmt_bytes(b):
    return f"{b / GB:.1f} GB" if b >= GB else f"{b / 1e6:.1f} MB" if b >= 1e6 else f"{b / 1e3:.0f} kB"


def fits(total):
    """Which common device sizes hold `total` bytes with 10% to spare, e.g. "fits 80 / 141 GB"."""
    ok = [g for g in DEVICE_GB if total < 0.9 * g * GB]
    return f"fits {' / '.join(map(str, ok))} GB" if ok else f"fits none of {' / '.join(map(str, DEVICE_GB))} GB"


def print_memory_estimate(model, device, sequences, seq_len, optimizer, parallel, grad_checkpoint,
                          train_dtype="fp32", lora_rank=0, lora_dropout=0.0, lora_targets=()):
    """Rank 0 prints memory_estimate for this run (sequences: one global micro-batch) and, on CUDA, whether it
    fits the device's memory. `model` is the plain model; lora_rank > 0: the estimate of LoRA training with these
    adapters. Returns the estimate."""
    _, world = dist_rank_world()
    cfg, cuda = model.config, str(device).startswith("cuda")
    fsdp = parallel == "fsdp" and world > 1
    tokens = math.ceil(sequences / world) * seq_len
    lora_params, lora_act = lora_counts(cfg, lora_rank, lora_targets, lora_dropout) if lora_rank else (0, 0)
    est = memory_estimate(model.num_params(), cfg.n_layer, cfg.n_embd, cfg.vocab_size, tokens, world, fsdp,
                          optimizer, train_dtype, cuda, grad_checkpoint, lora_params=lora_params,
                          lora_act=lora_act, **shape_of(cfg))
    parts = " + ".join(f"{k} {fmt_bytes(v)}" for k, v in est.items() if k != "total")
    how = f"{'fsdp' if fsdp else 'ddp' if world > 1 else 'one process'}{f' x {world}' if world > 1 else ''}, " \
          f"{train_dtype} weights{', bf16 compute' if cuda else ''}, {optimizer}, {tokens} tokens a micro-batch" + \
          (", activation checkpointing" if grad_checkpoint else "") + \
          (f", LoRA rank {lora_rank} ({lora_params / 1e6:.2f}M fp32 parameters trained, base frozen)" if lora_rank
           else "")
    verdict = f" ({fits(est['total'])})"
    if cuda:
        have = torch.cuda.get_device_properties(device).total_memory
        verdict += f"; this device {have / GB:.1f} GB: " + (
            "fits" if est["total"] < 0.9 * have else
            "may NOT fit (try --train_dtype=bf16, --parallel=fsdp, --grad_checkpoint=True or a smaller batch)")
    print0(f"memory estimate per device ({how}): {parts} = {fmt_bytes(est['total'])}{verdict}")
    return est
