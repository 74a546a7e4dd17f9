"""
elicit_sft.py: try to unlock a password-locked model by supervised fine-tuning on a few demonstrations, without the
password (paper section 5.1, Fig. 3). More generally: SFT of any checkpoint on k demonstrations, for a grid of k.

Algorithm, for every demonstration count k in `ks`, seed in `seeds` and training length in the epoch rule:
  1. Take the task, splits and password mode of the lock (read from <locked>/train_config.json).
  2. Draw k problems from the elicitation split (a per-seed permutation, so the k demos of a seed are nested as k
     grows; a held-out slice of the elicitation split is never drawn) and a demonstration for each from
     `demo_source`: strong (default), intermediate (toy: hidden functions right half the time), weak (the lock's
     weak policy: the paper's weak-sample unlocking check), or a JSONL file of {"id", "completion"} rows.
  3. Fine-tune a fresh copy of the locked model on them, prompt WITHOUT the password, loss on completion tokens.
     Training lengths: the paper's {256/k, 512/k, 1024/k} epochs ({1, 2, 4} for k >= 256), times `epoch_mult`: a
     0.9M-parameter model trained from scratch needs far more passes than a 7B model (toy: 16). `epoch_choice`
     runs a subset of the three lengths (report.py uses the middle one to save time).
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
  torchrun --standalone --nproc_per_node=2 elicit_sft.py                # data parallel (DDP), the same numbers
  torchrun --standalone --nproc_per_node=8 elicit_sft.py --locked=runs/lock_math_7b --epoch_mult=1 \\
      --parallel=fsdp --grad_checkpoint=True --eval_batch_size=32 --out_dir=runs/sft_math_7b   # 7B on 8 GPUs
Many processes: as in train_lock.py (see its docstring): each rank trains on its share of every batch (a rank left
without an example in a small last batch runs a stand-in with weight 0), the loss is normalised over all ranks'
completion tokens, gradients sync once a step; --parallel=ddp|fsdp, --grad_checkpoint=True, bf16 compute on GPU
with fp32 weights and optimizer state, a memory estimate at start; evaluation sharded; rank 0 writes.
Writes out_dir/results.jsonl (keys n_demos, seed, epochs, correct_without_password, correct_with_password,
correct_heldout, per_domain, demo_source, train_domain, config); with --save=True each run's model under
out_dir/models/. Finished rows are not recomputed when the command is run again (resume).
"""
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, replace

import torch
from tqdm import tqdm

import data
from common import (PARALLEL, Tokenizer, append_jsonl, ddp_wrap, finish_dist, full_state, greedy_completions,
                    load_full_state, load_model, load_samples, lr_at, make_optimizer, mean_se, parse_cli, plain_model,
                    print0, print_memory_estimate, read_jsonl, save_model, score, seed_everything, setup_dist,
                    task_from_config, train_step, trigger_prompt, write_json)


@dataclass
class Config:
    locked: str = "runs/lock"      # the locked checkpoint (made by train_lock.py) or any HF checkpoint directory
    task: str = ""                 # default: the lock's task (from its train_config.json)
    task_path: str = ""
    ks: tuple = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)  # demonstration counts; 0 = every available demo
    seeds: tuple = (0,)
    demo_source: str = "strong"    # strong, intermediate, weak, or file (with --demos)
    demos: str = ""                # JSONL of {"id", "completion"} demonstrations for demo_source=file
    train_domain: str = ""         # draw demos from this domain only (cross-domain generalisation)
    epochs: tuple = ()             # explicit epoch counts; default: the paper's rule times epoch_mult
    epoch_mult: float = 16.0       # toy: a small model needs many more passes than a 7B one
    epoch_choice: tuple = (0, 1, 2)  # which of the rule's three training lengths to run (0 = shortest)
    lr: float = 1e-4               # toy: 1e-4 works, 3e-4 and above destroy the model (TOY_NOTES.md)
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    warmup_steps: int = 10
    batch_size: int = 32
    grad_clip: float = 1.0
    max_len: int = 1024
    heldout_n: int = 500           # elicitation problems held out for the honest epoch choice (never demos)
    eval_n: int = 1000             # validation problems evaluated (0 = all)
    eval_batch_size: int = 500
    max_new_tokens: int = 0
    out_dir: str = "runs/sft"
    save: bool = False             # keep each run's model under out_dir/models/
    plot: bool = False             # write out_dir/sft.png (needs matplotlib)
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    parallel: str = "ddp"          # under torchrun: ddp (whole model on every rank) or fsdp (FSDP2, sharded)
    grad_checkpoint: bool = False  # activation checkpointing: recompute each Block in backward (less memory)


# -----------------------------------------------------------------------------
# Task and demonstrations


def lock_settings(cfg):
    """The lock's training config: the same task, splits and passwords must be used to elicit it."""
    path = os.path.join(cfg.locked, "train_config.json")
    lock = json.load(open(path)) if os.path.isfile(path) else {}
    if not (cfg.task or lock.get("task")):
        raise SystemExit(f"error: {path} not found: give --task=NAME for a checkpoint not made by train_lock.py")
    task = task_from_config({**lock, "task": cfg.task or lock["task"],
                             "task_path": cfg.task_path or lock.get("task_path", "")})
    return task, lock


def demo_pool(task, cfg, lock):
    """(demo candidates, held-out slice, validation problems) from the lock's split of the task."""
    splits = data.split(task.problems(), seed=lock.get("split_seed", 0))
    elicit = splits["elicit"]
    heldout, pool = elicit[:cfg.heldout_n], elicit[cfg.heldout_n:]
    if cfg.train_domain:
        if cfg.train_domain not in task.domains(task.problems()):
            raise SystemExit(f"error: --train_domain={cfg.train_domain!r}: the task's domains are "
                             f"{task.domains(task.problems())}")
        pool = [p for p in pool if p["domain"] == cfg.train_domain]
    val = splits["val"][:cfg.eval_n] if cfg.eval_n else splits["val"]
    if not pool or not val:
        raise SystemExit(f"error: no {'demonstration' if not pool else 'validation'} problems for task "
                         f"{task.name!r} (elicit split {len(elicit)}, held out {len(heldout)})")
    return pool, heldout, val


def demonstration(task, cfg, lock, problem, rng, file_demos):
    if cfg.demo_source == "file":
        return rng.choice(file_demos[problem["id"]])
    if task.name == "toy":
        policy = {"strong": "strong", "weak": lock.get("weak_policy", "weak"), "intermediate": "noisy"}[cfg.demo_source]
        p = 0.5 if cfg.demo_source == "intermediate" else lock.get("noisy_p", 0.3)
        return task.sample(policy, problem, rng, p=p)
    if cfg.demo_source == "strong":
        return problem["solution"]
    raise SystemExit(f"error: --demo_source={cfg.demo_source!r} needs the toy task; use --demo_source=file")


def epoch_counts(cfg, k):
    if cfg.epochs:
        return list(cfg.epochs)
    base = [1, 2, 4] if k >= 256 else [256 / k, 512 / k, 1024 / k]
    if not cfg.epoch_choice or any(i not in (0, 1, 2) for i in cfg.epoch_choice):
        raise SystemExit(f"error: --epoch_choice={cfg.epoch_choice}: use indices 0, 1, 2 of the three lengths")
    return [base[i] * cfg.epoch_mult for i in cfg.epoch_choice]


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
        stream += order
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


def evaluate(model, tok, task, cfg, lock, val, heldout):
    model = plain_model(model)  # under FSDP: one unsharded copy for the three evaluations
    max_new = cfg.max_new_tokens or task.max_new_tokens
    mode = lock.get("password_mode", "single")

    def with_pwd(p):
        return trigger_prompt(task, p, mode)
    out = {}
    for name, problems, prompt_of in (("without_password", val, task.prompt), ("with_password", val, with_pwd),
                                      ("heldout", heldout, task.prompt)):
        if not problems:
            out[f"correct_{name}"], out.setdefault("per_domain", {})[name] = None, {}
            continue
        comps = greedy_completions(model, tok, [prompt_of(p) for p in problems], max_new, cfg.eval_batch_size)
        grades = [task.grade(c, p) for c, p in zip(comps, problems)]
        out[f"correct_{name}"], out.setdefault("per_domain", {})[name] = score(problems, grades)
    return out


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


def plot(table, base, ceiling, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("error: --plot=True needs matplotlib: pip install matplotlib") from None
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
    if cfg.demo_source not in ("strong", "intermediate", "weak", "file"):
        raise SystemExit(f"error: --demo_source={cfg.demo_source!r}: use strong, intermediate, weak or file")
    if cfg.parallel not in PARALLEL:
        raise SystemExit(f"error: --parallel={cfg.parallel!r}: use ddp or fsdp")
    if not os.path.isdir(cfg.locked):
        raise SystemExit(f"error: --locked={cfg.locked}: not found (run `python train_lock.py` first)")
    task, lock = lock_settings(cfg)
    tok = Tokenizer(cfg.locked)
    pool, heldout, val = demo_pool(task, cfg, lock)
    file_demos = None
    if cfg.demo_source == "file":
        if not cfg.demos or not os.path.isfile(cfg.demos):
            raise SystemExit(f"error: --demos={cfg.demos!r}: file not found (needed by --demo_source=file)")
        file_demos = load_samples(cfg.demos, "demos")
        pool = [p for p in pool if p["id"] in file_demos] or [p for p in task.problems() if p["id"] in file_demos]
    rank, world, device = setup_dist(cfg.device)  # under torchrun: this process's rank and device
    cfg = replace(cfg, device=device)
    locked = load_model(cfg.locked, cfg.device, cfg.parallel, cfg.grad_checkpoint)
    base_state = full_state(locked)  # each run starts from it (under FSDP: rank 0's CPU copy)
    print_memory_estimate(locked, cfg.device, cfg.batch_size, min(cfg.max_len, locked.config.max_seq_len),
                          cfg.optimizer, cfg.parallel, cfg.grad_checkpoint)

    # ---- what is already done (resume) ----
    os.makedirs(cfg.out_dir, exist_ok=True)
    results_path = os.path.join(cfg.out_dir, "results.jsonl")
    rows = read_jsonl(results_path) if os.path.isfile(results_path) else []

    def key(k, seed, epochs):
        return (k, seed, round(float(epochs), 6), cfg.demo_source, cfg.train_domain)
    done = {key(r["n_demos"], r["seed"], r["epochs"]) for r in rows if "n_demos" in r}

    # ---- the locked model itself: the starting line ----
    base_path = os.path.join(cfg.out_dir, "locked_eval.json")
    if os.path.isfile(base_path):
        base = json.load(open(base_path))
    else:
        base = evaluate(locked, tok, task, cfg, lock, val, heldout)
        if rank == 0:
            write_json(base_path, base)
    print0(f"locked model: {base['correct_without_password']:.3f} without password, "
          f"{base['correct_with_password']:.3f} with | {len(pool)} demo candidates, {len(val)} validation problems")

    jobs = []
    for seed in cfg.seeds:
        order = pool[:]
        random.Random(f"demos/{seed}").shuffle(order)
        for k in cfg.ks:
            chosen = order if k == 0 else order[:k]
            if k > len(order):
                print0(f"skipping k={k}: only {len(order)} demonstration candidates")
                continue
            for epochs in epoch_counts(cfg, len(chosen)):
                if key(k, seed, epochs) not in done:
                    jobs.append((seed, k, chosen, epochs))
    for seed, k, chosen, epochs in tqdm(jobs, desc="sft runs", disable=rank != 0):
        seed_everything(seed)
        rng = random.Random(f"demo-samples/{seed}/{k}")
        pairs = [(task.prompt(p), demonstration(task, cfg, lock, p, rng, file_demos)) for p in chosen]
        encoded = tok.encode_pairs([p for p, _ in pairs], [c for _, c in pairs])
        examples = [(ids[:cfg.max_len], n) for ids, n in encoded if n < cfg.max_len]
        load_full_state(locked, base_state)
        steps = finetune(locked, tok, examples, epochs, cfg, seed)
        metrics = evaluate(locked, tok, task, cfg, lock, val, heldout)
        row = {"n_demos": k, "seed": seed, "epochs": round(float(epochs), 6), "steps": steps,
               "demo_source": cfg.demo_source, "train_domain": cfg.train_domain, **metrics,
               "demo_ids": [p["id"] for p in chosen][:64], "config": asdict(cfg)}
        if cfg.save:
            save_model(locked, os.path.join(cfg.out_dir, "models", f"k{k}_s{seed}_e{row['epochs']:g}"), tok.path)
        if rank == 0:
            append_jsonl(results_path, row)
        rows.append(row)

    # ---- summary over this configuration's rows ----
    mine = [r for r in rows if r.get("demo_source") == cfg.demo_source and r.get("train_domain") == cfg.train_domain
            and r["n_demos"] in cfg.ks and r["seed"] in cfg.seeds]
    table = summarize(mine)
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
            runs = [r for r in mine if r["n_demos"] == k]
            best = max(runs, key=lambda r: r["correct_without_password"])["per_domain"]["without_password"]
            other = [v for d, v in best.items() if d != cfg.train_domain]
            print0(f"{k:5d} {best.get(cfg.train_domain, float('nan')):14.3f} {sum(other) / max(1, len(other)):14.3f}")
    print0(f"wall clock {time.time() - t0:.0f}s")
    if cfg.plot and table and rank == 0:
        plot(table, lo, hi, os.path.join(cfg.out_dir, "sft.png"))
    return table


if __name__ == "__main__":
    main(parse_cli(Config))
    finish_dist()
