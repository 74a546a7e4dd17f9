"""
elicit_rl.py: try to unlock a password-locked model with RL-style methods that only see a grader's reward, never a
demonstration or the password (paper section 6, Fig. 5). Four methods:

  expert_iteration  each round: sample one completion (temperature 1, no password) for `samples_per_round`
                    elicitation problems from the current model, keep the best `n_keep` by reward (ties broken at
                    random), fine-tune the current model on them for `sft_steps` steps.
  filtering         the same selection and fine-tuning, but the samples come from the lock's weak policy.
  dpo               two samples per problem from the initial locked model, once; a pair where the rewards differ
                    (better = chosen); loss -log sigmoid(beta * margin), margin = (log pi(c) - log ref(c)) -
                    (log pi(r) - log ref(r)) with log-probs summed over completion tokens; the reference is the
                    initial locked model, fixed; each round is one epoch over the pairs.
  iterated_dpo      each round samples fresh pairs from the current model on `dpo_problems` problems; the
                    reference is the model at the start of the round; one epoch per round.
Simplifications: (1) a fresh optimizer each round (the lock's kind, or --optimizer); (2) reference log-probs are
computed once per round under no_grad and stored with the pairs, so only one model is ever in memory;
(3) --continuous=True ranks expert iteration by the grader's score and weights each DPO pair by its reward gap,
instead of binary correctness.

The x-axis is samples generated and graded. After each round: greedy correctness without the password on the
validation split; for DPO also chosen and rejected log-probs, margin, pair accuracy and the share of problems that
gave a valid pair.

Commands (after `python train_lock.py`, which locks with the noisy weak policy):
  python elicit_rl.py --method=expert_iteration          # writes runs/rl/expert_iteration/results.jsonl
  python elicit_rl.py --method=filtering
  python elicit_rl.py --method=dpo
  python elicit_rl.py --method=iterated_dpo
  python elicit_rl.py --method=expert_iteration --locked=runs/lock_weak --out_dir=runs/rl/ei_weak
  python elicit_rl.py --locked=runs/sft/models/k8_s0_e1024 --lock_config=runs/lock   # SFT on a few samples, then RL
                                       # (after python elicit_sft.py --ks=8 --save=True, which writes that model)
  torchrun --standalone --nproc_per_node=2 elicit_rl.py --method=expert_iteration --eval_batch_size=320
  torchrun --standalone --nproc_per_node=8 elicit_rl.py --method=iterated_dpo --locked=runs/lock_math_7b \\
      --parallel=fsdp --grad_checkpoint=True --eval_batch_size=64     # 7B on 8 GPUs
  python elicit_rl.py --method=expert_iteration --lora_rank=16 --sft_lr=1e-3 --out_dir=runs/rl/ei_lora   # LoRA
Rounds resume: run the same command again after an interruption. out_dir/model/ holds the latest model.

LoRA (--lora_rank > 0; lora.py): one set of rank-r adapters on --lora_targets (fp32; A drawn from --seed, B zero)
is trained through all rounds, the base weights frozen; each round's optimizer (fresh, as above) holds only the
adapters (toy: expert iteration needs --sft_lr=1e-3 with LoRA to keep up with full fine-tuning at 1e-4; at 1e-4
it is 2-3 rounds behind). Sampling, evaluation and the DPO reference log-probs run the model with its adapters
(plain DPO's reference is the initial model: the adapters are zero then, so it is the frozen base; no copy is kept).
out_dir/model/ is the merged model (a normal HF checkpoint, merged on CPU); out_dir/lora_adapters.safetensors holds
the adapters, from which a run resumes exactly (base from --locked). Not with --parallel=fsdp.

Many processes: as in train_lock.py (see its docstring): the SFT steps and DPO batches are split over ranks with the
one-process loss (SFT: normalised by all ranks' completion tokens; DPO: the mean over the whole batch of pairs),
gradients sync once a step; --parallel=ddp|fsdp, --grad_checkpoint=True, bf16 compute on GPU with fp32 weights and
optimizer state (the DPO reference log-probs too, so the policy starts equal to its reference; or --train_dtype=bf16:
bf16 weights, compensated updates), a memory estimate at start; rank 0 writes. Sampling deals the prompts out one
by one (rank r takes r, r + N, ...), each drawing from its own random stream (seed, its global index), so N
processes draw exactly the samples of one process (tested). Under FSDP, sampling and evaluation run on an unsharded
copy of the model on each rank (bf16 on GPU, gathered tensor by tensor).
"""
import contextlib
import os
import random
import time
from dataclasses import asdict, dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from tqdm import tqdm

import model as model_lib
from common import (Tokenizer, autocast, check_config, collate, encode_examples, greedy_completions, greedy_eval,
                    make_optimizer, run_cli, seed_everything, train_step)
from data.lock import Lock
from errors import BadInput, MissingFile
from files import append_jsonl, read_json, read_jsonl, write_json
from lora import add_lora, check_options, load_adapters, merged, sampling_context, save_adapters
from memory import print_memory_estimate
from parallel import (all_reduce_sum, ddp_wrap, dist_rank_world, gather_indexed, is_fsdp, load_model, print0,
                      rank_share, save_model, setup_dist)

METHODS = ("expert_iteration", "filtering", "dpo", "iterated_dpo")


@dataclass
class Config:
    method: Literal["expert_iteration", "filtering", "dpo", "iterated_dpo"] = "expert_iteration"
    locked: str = "runs/lock"          # the locked checkpoint (train_lock.py output) or any HF checkpoint
    lock_config: str = ""              # the train_lock.py out_dir whose train_config.json names the task and splits;
                                       # default: --locked (set it when --locked is, e.g., an elicit_sft.py model)
    out_dir: str = ""                  # default runs/rl/<method>
    rounds: int = 15
    seed: int = 0
    continuous: bool = False           # rank / weight by the grader's continuous score instead of correctness
    # expert iteration and filtering (paper: 640 samples, keep 64, 50 rounds)
    samples_per_round: int = 640
    n_keep: int = 64
    sft_steps: int = 40
    sft_lr: float = 0.0                # 0: the lock's (Lock.elicit_optimizer: its locking lr; toy 1e-4)
    # DPO
    dpo_problems: int = 550            # problems sampled twice per round (plain DPO: once, at the start)
    beta: float = 0.1
    dpo_lr: float = 0.0                # 0: the lock's, as for sft_lr
    dpo_pairs_per_batch: int = 32
    optimizer: Literal["", "adamw", "lion"] = ""  # "": the lock's locking optimizer (toy: adamw)
    temperature: float = 1.0
    batch_size: int = 32
    max_len: int = 1024                # training sequences (prompt + completion tokens) are cut to this
    eval_n: int = 1000
    eval_batch_size: int = 500
    max_new_tokens: int = 0
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    parallel: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: ddp (whole model on every rank) or fsdp (sharded)
    grad_checkpoint: bool = False      # activation checkpointing: recompute each Block in backward (less memory)
    train_dtype: Literal["fp32", "bf16"] = "fp32"      # bf16: bf16 weights, gradients, Lion state, compensated updates
    lora_rank: int = 0                 # > 0: train LoRA adapters of this rank (base frozen); 0: full fine-tuning
    lora_alpha: float = 16.0           # LoRA scale alpha / rank
    lora_dropout: float = 0.05         # dropout on the LoRA path's input
    lora_targets: tuple = ("q", "k", "v", "o", "gate", "up", "down")  # GPT-NeoX: up = fc, down = proj, no gate


# -----------------------------------------------------------------------------
# Sampling, rewards, selection, pairs


def sample(model, tok, lock, cfg, problems, seed):
    """One completion per problem at cfg.temperature, without the password."""
    with sampling_context(model):
        return greedy_completions(model, tok, [lock.task.prompt(p) for p in problems],
                                  cfg.max_new_tokens or lock.task.max_new_tokens, cfg.eval_batch_size,
                                  temperature=cfg.temperature, seed=seed)


def evaluate(model, tok, lock, cfg, val):
    """(greedy correctness without the password, per domain) on the validation problems."""
    with sampling_context(model):
        r = greedy_eval(model, tok, lock.task, val, [lock.task.prompt(p) for p in val], cfg.max_new_tokens,
                        cfg.eval_batch_size)
    return r["correct"], r["per_domain"]


def rewards_of(task, problems, completions, continuous):
    grades = [task.grade(c, p) for c, p in zip(completions, problems)]
    return [g.score if continuous else float(g.correct) for g in grades]


def select_top(n, rewards, rng):
    """Indices of the n highest rewards; ties are broken uniformly at random (shuffle, then a stable sort)."""
    idx = list(range(len(rewards)))
    rng.shuffle(idx)
    idx.sort(key=lambda i: -rewards[i])
    return idx[:n]


def make_pairs(problems, comp_a, comp_b, rew_a, rew_b):
    """(problem, chosen, rejected, reward gap) where the two samples' rewards differ; equal rewards give no pair."""
    pairs = []
    for p, a, b, ra, rb in zip(problems, comp_a, comp_b, rew_a, rew_b):
        if ra != rb:
            pairs.append((p, a, b, ra - rb) if ra > rb else (p, b, a, rb - ra))
    return pairs


# -----------------------------------------------------------------------------
# DPO pieces


def sequence_logprobs(model, inputs, targets):
    """Summed log-probability of the target tokens of each row: (B,). Prompt and padding (-100) count zero; the head
    runs on the target positions only, in chunks (model.GPT.target_logprobs)."""
    return model(inputs, targets=targets).sum(-1)


def dpo_loss(pi_c, pi_r, ref_c, ref_r, beta, weight=None):
    """-log sigmoid(beta * [(pi_c - ref_c) - (pi_r - ref_r)]), mean over pairs (optionally weighted)."""
    margin = beta * ((pi_c - ref_c) - (pi_r - ref_r))
    losses = -F.logsigmoid(margin)
    if weight is not None:
        losses = losses * weight
    return losses.mean(), margin


def encode_pairs_batch(tok, task, pairs, cfg):
    """One right-padded batch of [chosen...; rejected...] sequences, cut to max_len."""
    prompts = [task.prompt(p) for p, _, _, _ in pairs]
    ex = tok.encode_pairs(prompts + prompts, [c for _, c, _, _ in pairs] + [r for _, _, r, _ in pairs])
    inputs, targets, _ = collate([(ids[:cfg.max_len], n) for ids, n in ex], tok.pad_id, cfg.device)
    return inputs, targets


@torch.no_grad()
def reference_logprobs(model, tok, task, pairs, cfg):
    """(chosen, rejected) summed log-probs of every pair under the model as it is now. Under torchrun each rank
    scores its share of every batch and every rank gets all of them back."""
    model.eval()
    mine = []
    for s in range(0, len(pairs), cfg.dpo_pairs_per_batch):
        ids, w = rank_share(list(range(s, min(s + cfg.dpo_pairs_per_batch, len(pairs)))))
        chunk = [pairs[i] for i in ids]
        with autocast(cfg.device):  # as in training, so that the policy starts equal to its reference
            lp = sequence_logprobs(model, *encode_pairs_batch(tok, task, chunk, cfg))
        if w:
            mine += zip(ids, zip(lp[:len(chunk)].tolist(), lp[len(chunk):].tolist()))
    if is_fsdp(model):  # FSDP2 leaves the root gathered after a forward (it expects a backward); without this the
        model.reshard()  # next training step silently drops the root's gradients (embeddings, final norm, head)
    return gather_indexed(mine, len(pairs))


def sampled_pairs(model, tok, lock, cfg, problems, seeds):
    """Two samples per problem from `model` (seeds: one per sample set), the pairs whose rewards differ, and their
    reference log-probs under `model`."""
    a, b = (sample(model, tok, lock, cfg, problems, s) for s in seeds)
    pairs = make_pairs(problems, a, b, rewards_of(lock.task, problems, a, cfg.continuous),
                       rewards_of(lock.task, problems, b, cfg.continuous))
    return pairs, reference_logprobs(model, tok, lock.task, pairs, cfg) if pairs else []


def dpo_epoch(model, tok, task, pairs, refs, cfg, rng):
    """One pass over the pairs; returns the logged means. Under torchrun each rank takes its share of every batch
    of pairs, and the loss is scaled so that the step is the one-process step (the mean over the whole batch)."""
    world = dist_rank_world()[1]
    train_model = ddp_wrap(model)  # DDP under torchrun (FSDP models are already sharded)
    opt = make_optimizer(cfg.optimizer, train_model.parameters(), cfg.dpo_lr, 0.0)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    model.train()
    logs = {"chosen_logp": 0.0, "rejected_logp": 0.0, "margin": 0.0, "pair_accuracy": 0.0, "loss": 0.0}
    for s in range(0, len(order), cfg.dpo_pairs_per_batch):
        batch = order[s:s + cfg.dpo_pairs_per_batch]
        ids, w = rank_share(batch)
        chunk = [pairs[i] for i in ids]
        with autocast(cfg.device):
            lp = sequence_logprobs(train_model, *encode_pairs_batch(tok, task, chunk, cfg))
        pi_c, pi_r = lp[:len(chunk)], lp[len(chunk):]
        ref_c = torch.tensor([refs[i][0] for i in ids], device=cfg.device)
        ref_r = torch.tensor([refs[i][1] for i in ids], device=cfg.device)
        weight = torch.tensor([pairs[i][3] for i in ids], device=cfg.device) if cfg.continuous else None
        loss, margin = dpo_loss(pi_c, pi_r, ref_c, ref_r, cfg.beta, weight)
        (loss * (w * len(ids) * world / len(batch))).backward()  # DDP / FSDP average over ranks: the batch mean
        torch.nn.utils.clip_grad_norm_(train_model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        n = len(ids) * w / len(order)  # this rank's share of the epoch's pairs; the logs are summed over ranks
        logs["chosen_logp"] += pi_c.mean().item() * n
        logs["rejected_logp"] += pi_r.mean().item() * n
        logs["margin"] += margin.mean().item() * n
        logs["pair_accuracy"] += (margin > 0).float().mean().item() * n
        logs["loss"] += loss.item() * n
    model.eval()
    return {k: all_reduce_sum(v) for k, v in logs.items()}


# -----------------------------------------------------------------------------
# Expert iteration / filtering fine-tuning


def sft_steps(model, tok, task, kept, cfg, rng):
    """`sft_steps` steps on batches drawn from the kept samples; under torchrun each rank trains on its share of
    every batch (common.train_step). Returns the mean loss."""
    examples = encode_examples(tok, [(task.prompt(p), c) for p, c in kept], cfg.max_len)
    train_model = ddp_wrap(model)  # DDP under torchrun (FSDP models are already sharded)
    opt = make_optimizer(cfg.optimizer, train_model.parameters(), cfg.sft_lr, 0.0)
    model.train()
    total = 0.0
    for step in range(cfg.sft_steps):
        batch = [examples[rng.randrange(len(examples))] for _ in range(cfg.batch_size)]  # the same on every rank
        total += train_step(train_model, opt, [batch], tok.pad_id, cfg.device, 1.0)[0]
    model.eval()
    return all_reduce_sum(total) / max(1, cfg.sft_steps)


# -----------------------------------------------------------------------------
# One round of each method


def selection_round(model, tok, lock, cfg, pool, rnd, rng):
    """Expert iteration (samples of the current model) or filtering (samples of the lock's weak policy): keep the
    n_keep best by reward and fine-tune on them."""
    probs = [rng.choice(pool) for _ in range(cfg.samples_per_round)]
    if cfg.method == "filtering":
        comps = [lock.weak.draw(p, rng) for p in probs]
    else:
        comps = sample(model, tok, lock, cfg, probs, cfg.seed * 100_003 + rnd)
    rew = rewards_of(lock.task, probs, comps, cfg.continuous)
    top = select_top(cfg.n_keep, rew, rng)
    loss = sft_steps(model, tok, lock.task, [(probs[i], comps[i]) for i in top], cfg, rng)
    return dict(sft_loss=loss, samples_generated=rnd * cfg.samples_per_round, mean_reward=sum(rew) / len(rew),
                kept_mean_reward=sum(rew[i] for i in top) / len(top), kept_correct=sum(rew[i] > 0 for i in top))


def dpo_round(model, tok, lock, cfg, pool, rnd, rng, fixed):
    """Iterated DPO: fresh pairs from the current model (the reference: the model at the start of the round); plain
    DPO: the fixed pairs of the initial locked model (`fixed`: (pairs, refs, n problems)). One epoch over them."""
    if cfg.method == "iterated_dpo":
        probs = rng.sample(pool, min(cfg.dpo_problems, len(pool)))
        seeds = (cfg.seed * 100_003 + 2 * rnd, cfg.seed * 100_003 + 2 * rnd + 1)
        (pairs, refs), n_problems = sampled_pairs(model, tok, lock, cfg, probs, seeds), len(probs)
        samples = rnd * 2 * n_problems
    else:
        pairs, refs, n_problems = fixed
        samples = 2 * n_problems
    row = dict(samples_generated=samples, n_pairs=len(pairs), valid_pair_share=len(pairs) / n_problems)
    if pairs:
        row.update(dpo_epoch(model, tok, lock.task, pairs, refs, cfg, rng))
    return row


def fixed_dpo_pairs(cfg, tok, lock, pool, model, path, resumed):
    """Plain DPO's pairs and reference log-probs: two samples per problem from the initial locked model, once. They
    are written to `path`, so that a resumed run reads them back instead of loading the initial model again (a run
    resumed from before they were saved reads the initial model from --locked)."""
    if resumed and not os.path.isfile(path):
        model = model_lib.load(cfg.locked, device=cfg.device)
    if os.path.isfile(path):
        d, by_id = read_json(path), {p["id"]: p for p in pool}
        return [(by_id[i], c, r, gap) for i, c, r, gap in d["pairs"]], [tuple(x) for x in d["refs"]], d["n_problems"]
    probs = random.Random(f"dpo/{cfg.seed}").sample(pool, min(cfg.dpo_problems, len(pool)))
    pairs, refs = sampled_pairs(model, tok, lock, cfg, probs, (cfg.seed * 7919 + 1, cfg.seed * 7919 + 2))
    if dist_rank_world()[0] == 0:
        write_json(path, {"pairs": [(p["id"], c, r, gap) for p, c, r, gap in pairs], "refs": refs,
                          "n_problems": len(probs)})
    return pairs, refs, len(probs)


# -----------------------------------------------------------------------------
# Main


def load_lock(cfg):
    path = cfg.lock_config or cfg.locked
    if not os.path.isfile(os.path.join(path, "train_config.json")):
        raise MissingFile(f"{os.path.join(path, 'train_config.json')}: not found (run `python train_lock.py` first, "
                          "or point --lock_config at its out_dir)")
    return Lock.from_dir(path)


def print_summary(cfg, rows, n_val, out_dir):
    dpo = "dpo" in cfg.method
    print0(f"\n{cfg.method} on {cfg.locked} ({n_val} validation problems, greedy, no password) | {out_dir}")
    print0(f"{'round':>5s} {'samples':>8s} {'correct':>8s}" + ("  pairs  margin  pair_acc" if dpo
                                                               else "  kept_correct"))
    for r in rows:
        extra = (f"  {r.get('n_pairs', 0):5d}  {r.get('margin', 0.0):6.2f}  {r.get('pair_accuracy', 0.0):8.2f}"
                 if dpo else f"  {r.get('kept_correct', 0):12d}")
        print0(f"{r['round']:5d} {r['samples_generated']:8d} {r['correct_without_password']:8.3f}" +
               (extra if r["round"] else ""))


def setup(cfg):
    """The lock, the config as given, and the config with the optimizer, lrs and device resolved (the rows record the
    config as given; summary.json has the resolved one)."""
    check_config(cfg)
    check_options(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets, cfg.parallel)
    lock, given = load_lock(cfg), asdict(cfg)
    optimizer, sft_lr = lock.elicit_optimizer(cfg.optimizer, cfg.sft_lr)
    device = setup_dist(cfg.device)[2]  # under torchrun: this process's device
    cfg = replace(cfg, optimizer=optimizer, sft_lr=sft_lr, dpo_lr=cfg.dpo_lr or lock.elicit_optimizer()[1],
                  out_dir=cfg.out_dir or os.path.join("runs", "rl", cfg.method), device=device)
    return lock, given, cfg


def lora_fields(cfg):
    """The LoRA options every row records (None when off), so that a resumed run can check them."""
    on = bool(cfg.lora_rank)
    return dict(lora_alpha=cfg.lora_alpha if on else None, lora_dropout=cfg.lora_dropout if on else None,
                lora_rank=cfg.lora_rank, lora_targets=list(cfg.lora_targets) if on else None)


def rounds_done(cfg, lora):
    """The rows of the rounds already in out_dir/results.jsonl (resume), after checking they were run with the same
    LoRA options and that a LoRA run's adapters are there to resume from."""
    path, adapters = os.path.join(cfg.out_dir, "results.jsonl"), os.path.join(cfg.out_dir, "lora_adapters.safetensors")
    rows = read_jsonl(path) if os.path.isfile(path) else []
    if rows and {k: rows[0].get(k, 0 if k == "lora_rank" else None) for k in lora} != lora:
        raise BadInput(f"{path}: its rounds were run with other LoRA options (lora_rank="
                       f"{rows[0].get('lora_rank', 0)}); this run has --lora_rank={cfg.lora_rank}: "
                       "use another --out_dir")
    if len(rows) > 1 and cfg.lora_rank and not os.path.isfile(adapters):
        raise MissingFile(f"{adapters}: not found, so the LoRA run in {cfg.out_dir} cannot resume")
    return rows


def load_policy(cfg, lock, tok, pool, n_done):
    """The model to train after n_done rows (round 0 is the lock's evaluation): the latest round's (out_dir/model/)
    when resuming, else the lock; with LoRA the lock plus its adapters (saved from round 1 on). Returns (model, number
    of trained parameters)."""
    model_dir = os.path.join(cfg.out_dir, "model")
    model = load_model(model_dir if n_done and os.path.isdir(model_dir) and not cfg.lora_rank else cfg.locked,
                       cfg.device, cfg.parallel, cfg.grad_checkpoint, cfg.train_dtype)
    if n_done:
        print0(f"resuming {cfg.method} after round {n_done - 1} from {cfg.out_dir}")
    longest = max(len(tok.encode_prompt(lock.task.prompt(p))) for p in pool) + \
        (cfg.max_new_tokens or lock.task.max_new_tokens)
    print_memory_estimate(model, cfg.device, 2 * cfg.dpo_pairs_per_batch if "dpo" in cfg.method else cfg.batch_size,
                          min(longest, cfg.max_len, model.config.max_seq_len), cfg.optimizer, cfg.parallel,
                          cfg.grad_checkpoint, train_dtype=cfg.train_dtype, lora_rank=cfg.lora_rank,
                          lora_dropout=cfg.lora_dropout, lora_targets=cfg.lora_targets)
    trained = list(model.parameters())
    if cfg.lora_rank:  # the base stays the lock; the adapters carry the training (and are resumed)
        trained = add_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets, cfg.seed)
        if n_done > 1:
            load_adapters(model, os.path.join(cfg.out_dir, "lora_adapters.safetensors"))
    return model, sum(p.numel() for p in trained)


def one_round(model, tok, lock, cfg, pool, val, rnd, fixed):
    """Round rnd of the method, then greedy correctness without the password on the validation problems."""
    seed_everything(cfg.seed * 100_003 + rnd)
    rng = random.Random(f"{cfg.method}/{cfg.seed}/{rnd}")
    if cfg.method in ("expert_iteration", "filtering"):
        row = selection_round(model, tok, lock, cfg, pool, rnd, rng)
    else:
        row = dpo_round(model, tok, lock, cfg, pool, rnd, rng, fixed)
    row["correct_without_password"], row["per_domain"] = evaluate(model, tok, lock, cfg, val)
    return row


def save_round(model, tok, cfg, row):
    """The model (merged, with LoRA), the adapters, then the row: a crash between them only repeats this round."""
    rank = dist_rank_world()[0]
    with merged(model, device="cpu") if rank == 0 else contextlib.nullcontext():  # LoRA: merged on CPU
        save_model(model, os.path.join(cfg.out_dir, "model"), tok.path)  # every rank takes part (FSDP gathers)
    if cfg.lora_rank and rank == 0:
        save_adapters(model, os.path.join(cfg.out_dir, "lora_adapters.safetensors"))
    if rank == 0:
        append_jsonl(os.path.join(cfg.out_dir, "results.jsonl"), row)


def main(cfg):
    t0 = time.time()
    lock, given, cfg = setup(cfg)
    tok, rank = Tokenizer(cfg.locked), dist_rank_world()[0]
    pool = lock.splits["elicit"]
    val = lock.splits["val"][:cfg.eval_n] if cfg.eval_n else lock.splits["val"]
    lora = lora_fields(cfg)
    rows = rounds_done(cfg, lora)
    model, lora["trainable_params"] = load_policy(cfg, lock, tok, pool, len(rows))
    if not rows:  # round 0: the locked model itself
        acc, per = evaluate(model, tok, lock, cfg, val)
        rows.append({"method": cfg.method, "round": 0, "samples_generated": 0, "correct_without_password": acc,
                     "per_domain": per, **lora, "config": given})
        if rank == 0:
            append_jsonl(os.path.join(cfg.out_dir, "results.jsonl"), rows[0])
    fixed = fixed_dpo_pairs(cfg, tok, lock, pool, model, os.path.join(cfg.out_dir, "dpo_pairs.json"),
                            len(rows) > 1) if cfg.method == "dpo" else None
    for rnd in tqdm(range(len(rows), cfg.rounds + 1), desc=cfg.method, initial=len(rows) - 1, total=cfg.rounds,
                    disable=rank != 0):
        row = {"method": cfg.method, "round": rnd, **lora, **one_round(model, tok, lock, cfg, pool, val, rnd, fixed)}
        save_round(model, tok, cfg, row)
        rows.append(row)
    print_summary(cfg, rows, len(val), cfg.out_dir)
    if rank == 0:
        write_json(os.path.join(cfg.out_dir, "summary.json"), {"config": given, "resolved": asdict(cfg), "rows": rows,
                                                               "wall_seconds": round(time.time() - t0, 1)})
    print0(f"wall clock {time.time() - t0:.0f}s")
    return rows


if __name__ == "__main__":
    run_cli(main, Config)
