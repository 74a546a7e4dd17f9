"""
memory.py: a rough estimate of training memory per device, printed by rank 0 at the start of every training script
(and, on CUDA, whether it fits the device).
"""
import math

import torch

from parallel import dist_rank_world, print0

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
