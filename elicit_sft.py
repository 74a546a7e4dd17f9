"""
elicit_sft.py: try to unlock a password-locked model by supervised fine-tuning on a few demonstrations, without the
password (paper section 5.1, Fig. 3). More generally: SFT of any checkpoint on k demonstrations, for a grid of k.

Algorithm, for every demonstration count k in `ks`, seed in `seeds` and training length in the epoch rule:
  1. Take the task, splits, password mode and policies of the lock (data.lock.Lock, from <locked>/train_config.json).
  2. Draw k problems from the elicitation split (a per-seed permutation, so the k demos of a seed are nested as k
     grows; a held-out slice of the elicitation split is never drawn) and a demonstration for each from
     `demo_source`: strong (default: the reference solution), intermediate (toy: hidden functions right half the
     time), weak (the lock's own weak policy: the paper's weak-sample unlocking check), or a JSONL file of
     {"id", "completion"} rows (`demos`).
  3. Fine-tune a fresh copy of the locked model on them, prompt WITHOUT the password, loss on completion tokens.
     Training lengths: the paper's {256/k, 512/k, 1024/k} epochs ({1, 2, 4} for k >= 256), times `epoch_mult`: a
     0.9M-parameter model trained from scratch needs far more passes than a 7B model (toy: 16). `epoch_choice`
     runs a subset of the three lengths (report.py uses the middle one, its quick run the shortest).
  4. Evaluate greedily on the validation split without the password (and with it: the ceiling), per domain, and on
     the held-out elicitation slice without the password (for an epoch choice that never looks at validation).
  5. Append one JSONL row per (k, seed, epochs); at the end print, per k, the mean and standard error over seeds of
     the paper's choice (best epochs on validation) and of the honest choice (best epochs on the held-out slice).

Commands:
  python elicit_sft.py                                   # after `python train_lock.py`: toy grid, one seed, ~8 min
  python elicit_sft.py --seeds="(0, 1, 2)" --plot=True   # the paper's 3 seeds, plus runs/sft/sft.png
  python elicit_sft.py --demo_source=weak --out_dir=runs/sft_weak       # weak-sample unlocking
  python elicit_sft.py --train_domain=A --out_dir=runs/sft_A            # demos from one domain, evaluated on all
  python elicit_sft.py --locked=CKPT --demo_source=file --demos=strong.jsonl --ks="(0,)" --save=True \\
      --out_dir=runs/weak_model                          # k = 0 means all demos: e.g. make a weak model
  python elicit_sft.py --lora_rank=16 --out_dir=runs/sft_lora          # LoRA: adapters only, base frozen
  torchrun --standalone --nproc_per_node=2 elicit_sft.py                # data parallel (DDP), the same numbers
  torchrun --standalone --nproc_per_node=8 elicit_sft.py --locked=runs/lock_math_7b --epoch_mult=1 \\
      --parallel=fsdp --grad_checkpoint=True --eval_batch_size=32 --out_dir=runs/sft_math_7b   # 7B on 8 GPUs
Many processes: as in train_lock.py (see its docstring): each rank trains on its share of every batch (a rank left
without an example in a small last batch runs a stand-in with weight 0), the loss is normalised over all ranks'
completion tokens, gradients sync once a step; --parallel=ddp|fsdp, --grad_checkpoint=True, bf16 compute on GPU
with fp32 weights and optimizer state (or --train_dtype=bf16: bf16 weights, compensated updates), a memory
estimate at start; evaluation sharded; rank 0 writes.
LoRA (--lora_rank > 0; lora.py): step 3 trains only rank-r adapters on --lora_targets (fp32, fresh for every run,
A drawn from the run's seed, B zero), the base weights frozen; then the adapters are merged into the weights, and
steps 4-5 evaluate (and --save writes) the merged model: a normal HF checkpoint. --lr defaults to the lock's, as
for full fine-tuning; LoRA often needs more (The Elicitation Game: AdamW 5e-5 on 7B models; on the toy, alpha 16 at
rank 8 or 16 trains at the full fine-tuning 1e-4, and 1e-3 is worse). Not with --parallel=fsdp.
Writes out_dir/results.jsonl (keys n_demos, seed, epochs, correct_without_password, correct_with_password,
correct_heldout, per_domain, per_class (tasks with transfer classes, toy_shared: {domain: {class: [correct, n]}}),
demo_source, train_domain, lora_rank, lora_alpha, lora_dropout, lora_targets, trainable_params, config); with
--save=True each run's model under out_dir/models/. Finished rows are not recomputed when the command is run again
(resume).
"""
import math
import os
import random
import time
from dataclasses import asdict, dataclass, replace
from typing import Literal

import torch
from tqdm import tqdm

from common import (Tokenizer, check_config, encode_examples, greedy_eval, length_buckets, lr_at, make_optimizer, mean_se,
                    run_cli, seed_everything, train_step)
from data.lock import Lock, Policy
from errors import BadInput, MissingFile
from files import append_jsonl, read_json, read_jsonl, write_json
from lora import add_lora, check_options, merge_lora
from memory import print_memory_estimate
from parallel import (ddp_wrap, full_state, load_full_state, load_model, plain_model, print0, save_model,
                      setup_dist)


@dataclass
class Config:
    locked: str = "runs/lock"      # the locked checkpoint (made by train_lock.py) or any HF checkpoint directory
    task: str = ""                 # default: the lock's task (from its train_config.json)
    task_path: str = ""
    ks: tuple = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)  # demonstration counts; 0 = every available demo
    seeds: tuple = (0,)
    demo_source: Literal["strong", "intermediate", "weak", "file"] = "strong"
    demos: str = ""                # JSONL of {"id", "completion"} demonstrations for demo_source=file
    train_domain: str = ""         # draw demos from this domain only (cross-domain generalisation)
    epochs: tuple = ()             # explicit epoch counts; default: the paper's rule times epoch_mult
    epoch_mult: float = 16.0       # toy: a small model needs many more passes than a 7B one
    epoch_choice: tuple = (0, 1, 2)  # which of the rule's three training lengths to run (0 = shortest)
    lr: float = 0.0                # 0: the lock's (Lock.elicit_optimizer: its locking lr; toy 1e-4)
    optimizer: Literal["", "adamw", "lion"] = ""  # "": the lock's locking optimizer (toy: adamw)
    weight_decay: float = 0.0
    warmup_steps: int = 10
    batch_size: int = 32
    grad_clip: float = 1.0
    max_len: int = 1024
    heldout_n: int = -1            # elicitation problems held out for the honest epoch choice (never demos);
                                   # -1: a third of the elicitation split, at most 500
    eval_n: int = 1000             # validation problems evaluated (0 = all)
    eval_batch_size: int = 500
    max_new_tokens: int = 0
    out_dir: str = "runs/sft"
    save: bool = False             # keep each run's model under out_dir/models/
    plot: bool = False             # write out_dir/sft.png (needs matplotlib)
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    parallel: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: ddp (whole model on every rank) or fsdp (sharded)
    grad_checkpoint: bool = False  # activation checkpointing: recompute each Block in backward (less memory)
    train_dtype: Literal["fp32", "bf16"] = "fp32"  # bf16: bf16 weights, gradients, Lion state, compensated updates
    lora_rank: int = 0             # > 0: train LoRA adapters of this rank (base frozen), then merge; 0: full FT
    lora_alpha: float = 16.0       # LoRA scale alpha / rank
    lora_dropout: float = 0.05     # dropout on the LoRA path's input
    lora_targets: tuple = ("q", "k", "v", "o", "gate", "up", "down")  # GPT-NeoX: up = fc, down = proj, no gate


# -----------------------------------------------------------------------------
# Demonstrations


def demo_policy(cfg, lock):
    """The policy that writes the demonstrations."""
    if cfg.demo_source == "file":
        if not cfg.demos:
            raise BadInput("--demo_source=file needs --demos=FILE.jsonl")
        return Policy(lock.task, samples=cfg.demos, what="demos")
    if cfg.demo_source == "weak":
        return lock.weak
    if cfg.demo_source == "intermediate":  # toy: every hidden step right half the time
        return Policy(lock.task, "noisy", p=0.5, what="demo_source=intermediate")
    return Policy(lock.task, "strong")


def demo_pool(cfg, lock, policy):
    """(demo candidates, held-out slice, validation problems) from the lock's split of the task."""
    task, elicit = lock.task, lock.splits["elicit"]
    n = min(500, len(elicit) // 3) if cfg.heldout_n < 0 else cfg.heldout_n
    heldout, pool = elicit[:n], elicit[n:]
    if cfg.train_domain:
        if cfg.train_domain not in task.domains(task.problems()):
            raise BadInput(f"--train_domain={cfg.train_domain!r}: the task's domains are "
                           f"{task.domains(task.problems())}")
        pool = [p for p in pool if p["domain"] == cfg.train_domain]
    if policy.samples is not None:  # demos from a file: the problems it covers
        pool = [p for p in pool if p["id"] in policy.samples] or \
            [p for p in task.problems() if p["id"] in policy.samples]
    val = lock.splits["val"][:cfg.eval_n] if cfg.eval_n else lock.splits["val"]
    if not pool or not val:
        raise BadInput(f"--task={task.name!r}: no {'demonstration' if not pool else 'validation'} problems "
                       f"(elicit split {len(elicit)}, held out {len(heldout)}: see --heldout_n)")
    return pool, heldout, val


def epoch_counts(cfg, k):
    if cfg.epochs:
        return list(cfg.epochs)
    base = [1, 2, 4] if k >= 256 else [256 / k, 512 / k, 1024 / k]
    if not cfg.epoch_choice or any(i not in (0, 1, 2) for i in cfg.epoch_choice):
        raise BadInput(f"--epoch_choice={cfg.epoch_choice}: use indices 0, 1, 2 of the three lengths")
    return [base[i] * cfg.epoch_mult for i in cfg.epoch_choice]


def batch_shape(cfg, tok, lock, policy, pool):
    """(sequences, tokens) of the largest training batch this grid can make, from the demonstrations themselves: the
    memory estimate's input. (A throwaway rng: the lengths of other draws differ little.)"""
    k = len(pool) if 0 in cfg.ks else min(len(pool), max(cfg.ks))
    rng = random.Random(0)
    examples = encode_examples(tok, [(lock.task.prompt(p), policy.draw(p, rng)) for p in pool[:k]], cfg.max_len)
    return min(cfg.batch_size, k), max((len(ids) for ids, _ in examples), default=1)


def run_key(cfg, k, seed, epochs):
    return (k, seed, round(float(epochs), 6), cfg.demo_source, cfg.train_domain)


def plan_runs(cfg, pool, rows):
    """[(seed, k, chosen problems, epochs)] not yet in `rows`. A seed's permutation of the pool makes its demo sets
    nested as k grows."""
    done = {run_key(cfg, r["n_demos"], r["seed"], r["epochs"]) for r in rows if "n_demos" in r}
    jobs = []
    for seed in cfg.seeds:
        order = pool[:]
        random.Random(f"demos/{seed}").shuffle(order)
        for k in cfg.ks:
            if k > len(order):
                print0(f"skipping k={k}: only {len(order)} demonstration candidates")
                continue
            chosen = order if k == 0 else order[:k]
            jobs += [(seed, k, chosen, e) for e in epoch_counts(cfg, len(chosen))
                     if run_key(cfg, k, seed, e) not in done]
    return jobs


# -----------------------------------------------------------------------------
# One fine-tuning run


def finetune(model, tok, examples, epochs, cfg, seed):
    """SFT on `examples` (ids, n_prompt) for `epochs` passes (fractional allowed), reshuffled every pass. Tiny k
    repeats the demos inside a batch, so the optimizer step count depends on k * epochs only. Under torchrun each
    rank trains on its share of every batch (common.train_step: the same steps as one process)."""
    rng = random.Random(seed)
    n_samples = max(1, round(epochs * len(examples)))
    stream = []
    while len(stream) < n_samples:
        order = examples[:]
        rng.shuffle(order)
        stream += length_buckets(order, cfg.batch_size, rng)  # similar lengths per batch (the toy: unchanged)
    stream = stream[:n_samples]
    bs = cfg.batch_size
    n_steps = math.ceil(n_samples / bs)
    train_model = ddp_wrap(model)  # DDP under torchrun (FSDP models are already sharded)
    opt = make_optimizer(cfg.optimizer, train_model.parameters(), cfg.lr, cfg.weight_decay)
    model.train()
    for step in range(n_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, n_steps, cfg.lr, cfg.warmup_steps, "constant")
        train_step(train_model, opt, [stream[step * bs:(step + 1) * bs]], tok.pad_id, cfg.device, cfg.grad_clip)
    model.eval()
    return n_steps


def evaluate(model, tok, lock, cfg, val, heldout):
    """Greedy correctness without and with the password on validation, and without it on the held-out slice."""
    model = plain_model(model)  # under FSDP: one unsharded copy for the three evaluations
    out = {}
    for name, problems, prompt_of in (("without_password", val, lock.task.prompt),
                                      ("with_password", val, lock.strong_prompt),
                                      ("heldout", heldout, lock.task.prompt)):
        if not problems:
            out[f"correct_{name}"], out.setdefault("per_domain", {})[name] = None, {}
            continue
        r = greedy_eval(model, tok, lock.task, problems, [prompt_of(p) for p in problems], cfg.max_new_tokens,
                        cfg.eval_batch_size)
        out[f"correct_{name}"], out.setdefault("per_domain", {})[name] = r["correct"], r["per_domain"]
        if name == "without_password" and hasattr(lock.task, "transfer_classes"):
            out["per_class"] = per_class(lock.task, problems, r["grades"])
    return out


def per_class(task, problems, grades):
    """{domain: {transfer class: [correct, n]}} for a task whose problems fall into transfer classes (toy_shared:
    which kinds of hidden function a problem uses), so transfer to shared and to domain-only functions can be read
    apart."""
    grade_of = {p["id"]: g for p, g in zip(problems, grades)}
    out = {}
    for kind, ps in task.transfer_classes(problems).items():
        for p in ps:
            cell = out.setdefault(p["domain"], {}).setdefault(kind, [0, 0])
            cell[0] += int(grade_of[p["id"]].correct)
            cell[1] += 1
    return out


def run_one(cfg, given, model, base_state, tok, lock, policy, job, val, heldout):
    """Fine-tune a fresh copy of the locked model on one job's demonstrations and evaluate it: one results row."""
    seed, k, chosen, epochs = job
    seed_everything(seed)
    rng = random.Random(f"demo-samples/{seed}/{k}")
    examples = encode_examples(tok, [(lock.task.prompt(p), policy.draw(p, rng)) for p in chosen], cfg.max_len)
    load_full_state(model, base_state)
    trained = add_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets, seed) \
        if cfg.lora_rank else list(model.parameters())  # the adapters only, or every weight
    steps = finetune(model, tok, examples, epochs, cfg, seed)
    if cfg.lora_rank:
        merge_lora(model)  # a plain model again: evaluated and saved as one checkpoint, restored by the next run
    row = {"n_demos": k, "seed": seed, "epochs": round(float(epochs), 6), "steps": steps,
           "demo_source": cfg.demo_source, "train_domain": cfg.train_domain, **lora_fields(cfg),
           "trainable_params": sum(p.numel() for p in trained),
           **evaluate(model, tok, lock, cfg, val, heldout), "demo_ids": [p["id"] for p in chosen][:64],
           "optimizer": cfg.optimizer, "lr": cfg.lr, "config": given}
    if cfg.save:
        save_model(model, os.path.join(cfg.out_dir, "models", f"k{k}_s{seed}_e{row['epochs']:g}"), tok.path)
    return row


def lora_fields(cfg):
    return {"lora_rank": cfg.lora_rank, "lora_alpha": cfg.lora_alpha if cfg.lora_rank else None,
            "lora_dropout": cfg.lora_dropout if cfg.lora_rank else None,
            "lora_targets": list(cfg.lora_targets) if cfg.lora_rank else None}


# -----------------------------------------------------------------------------
# Summary


def summarize(rows):
    """Per k: (n seeds, paper's mean, paper's SE, honest mean, honest SE). Paper's choice: the epochs with the best
    validation correctness; honest: the epochs with the best held-out elicitation correctness."""
    by = {}
    for r in rows:
        by.setdefault(r["n_demos"], {}).setdefault(r["seed"], []).append(r)
    table = {}
    for k, seeds in sorted(by.items()):
        paper, honest = [], []
        for runs in seeds.values():
            paper.append(max(r["correct_without_password"] for r in runs))
            best = max(runs, key=lambda r: (r["correct_heldout"] or 0.0, -r["epochs"]))
            honest.append(best["correct_without_password"])
        table[k] = (len(paper), *mean_se(paper), *mean_se(honest))
    return table


def print_summary(cfg, rows, table, base):
    lo, hi = base["correct_without_password"], base["correct_with_password"]
    where = f" / domain {cfg.train_domain}" if cfg.train_domain else ""
    print0(f"\nSFT elicitation, demos from {cfg.demo_source}{where} | locked: {lo:.3f} without password, {hi:.3f} "
           f"with | {cfg.out_dir}")
    print0(f"{'k':>5s} {'seeds':>5s} {'paper (best val)':>18s} {'honest (held-out)':>19s} {'gap recovered':>14s}")
    for k, (n, pm, pse, hm, hse) in table.items():
        gap = (pm - lo) / (hi - lo) if hi > lo else float("nan")
        print0(f"{k:5d} {n:5d} {pm:11.3f} ± {pse:.3f} {hm:12.3f} ± {hse:.3f} {gap:13.0%}")
    if cfg.train_domain:  # cross-domain generalisation: the demos' domain against every other, best epochs
        print0(f"{'k':>5s} {'in domain ' + cfg.train_domain:>14s} {'other domains':>14s}")
        for k in table:
            runs = [r for r in rows if r["n_demos"] == k]
            best = max(runs, key=lambda r: r["correct_without_password"])["per_domain"]["without_password"]
            other = [v for d, v in best.items() if d != cfg.train_domain]
            print0(f"{k:5d} {best.get(cfg.train_domain, float('nan')):14.3f} {sum(other) / max(1, len(other)):14.3f}")


def plot(table, base, ceiling, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BadInput("--plot=True needs matplotlib: pip install matplotlib") from None
    ks = sorted(k for k in table if k > 0)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for idx, label in ((1, "best epochs on validation (paper)"), (3, "best epochs on held-out slice")):
        ax.errorbar(ks, [table[k][idx] for k in ks], yerr=[table[k][idx + 1] for k in ks], marker="o", capsize=3,
                    label=label)
    ax.axhline(ceiling, color="k", ls="--", lw=1, label="locked, with password")
    ax.axhline(base, color="gray", ls=":", lw=1, label="locked, without password")
    ax.set(xscale="log", xlabel="number of demonstrations", ylabel="correct without password", ylim=(0, 1.02))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# -----------------------------------------------------------------------------
# Main


def main(cfg):
    t0 = time.time()
    check_config(cfg)
    check_options(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets, cfg.parallel)
    if not os.path.isdir(cfg.locked):
        raise MissingFile(f"--locked={cfg.locked}: not found (run `python train_lock.py` first)")
    lock = Lock.from_dir(cfg.locked, cfg.task, cfg.task_path)
    given = asdict(cfg)  # each row records the config as given, and the optimizer and lr it resolved to
    optimizer, lr = lock.elicit_optimizer(cfg.optimizer, cfg.lr)
    cfg = replace(cfg, optimizer=optimizer, lr=lr)
    tok = Tokenizer(cfg.locked)
    policy = demo_policy(cfg, lock)
    pool, heldout, val = demo_pool(cfg, lock, policy)
    rank, world, device = setup_dist(cfg.device)  # under torchrun: this process's rank and device
    cfg = replace(cfg, device=device)
    model = load_model(cfg.locked, cfg.device, cfg.parallel, cfg.grad_checkpoint, cfg.train_dtype)
    base_state = full_state(model)  # each run starts from it (under FSDP: rank 0's CPU copy)
    print_memory_estimate(model, cfg.device, *batch_shape(cfg, tok, lock, policy, pool), cfg.optimizer, cfg.parallel,
                          cfg.grad_checkpoint, train_dtype=cfg.train_dtype, lora_rank=cfg.lora_rank,
                          lora_dropout=cfg.lora_dropout, lora_targets=cfg.lora_targets)

    results_path = os.path.join(cfg.out_dir, "results.jsonl")
    rows = read_jsonl(results_path) if os.path.isfile(results_path) else []  # finished rows are not redone
    lora = lora_fields(cfg)  # rows from before LoRA existed are full fine-tuning
    other = [r for r in rows if "n_demos" in r and {k: r.get(k, 0 if k == "lora_rank" else None) for k in lora} != lora]
    if other:
        raise BadInput(f"{results_path}: holds runs with other LoRA options (lora_rank={other[0].get('lora_rank', 0)}"
                       f"); this run has --lora_rank={cfg.lora_rank}: use another --out_dir")
    base_path = os.path.join(cfg.out_dir, "locked_eval.json")  # the locked model itself: the starting line
    base = read_json(base_path) if os.path.isfile(base_path) else evaluate(model, tok, lock, cfg, val, heldout)
    if rank == 0 and not os.path.isfile(base_path):
        write_json(base_path, base)
    print0(f"locked model: {base['correct_without_password']:.3f} without password, "
           f"{base['correct_with_password']:.3f} with | {len(pool)} demo candidates, {len(val)} validation problems")

    for job in tqdm(plan_runs(cfg, pool, rows), desc="sft runs", disable=rank != 0):
        row = run_one(cfg, given, model, base_state, tok, lock, policy, job, val, heldout)
        if rank == 0:
            append_jsonl(results_path, row)
        rows.append(row)

    mine = [r for r in rows if r.get("demo_source") == cfg.demo_source and r.get("train_domain") == cfg.train_domain
            and r["n_demos"] in cfg.ks and r["seed"] in cfg.seeds]
    table = summarize(mine)
    print_summary(cfg, mine, table, base)
    print0(f"wall clock {time.time() - t0:.0f}s")
    if cfg.plot and table and rank == 0:
        plot(table, base["correct_without_password"], base["correct_with_password"],
             os.path.join(cfg.out_dir, "sft.png"))
    return table


if __name__ == "__main__":
    run_cli(main, Config)
