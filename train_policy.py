"""
train_policy.py: make a weak policy the way the paper does (pi_weak, section 4.1): train a small model to imitate
the strong policy on the weak split (10% of the problems), then draw its samples into the JSONL file that
train_lock.py locks with (--weak_samples). The paper's pi_weak are Pythia 7B / 1B / 400M fine-tuned on pi_strong's
samples; on the toy, graded qualities come from the model's size and training length (see the table below).

Algorithm:
  1. The task and its 10/40/30/20 split (data.lock.Lock, the same split_seed and prompt format as the lock's).
  2. The model: `init_from` (a small base checkpoint, like the paper's Pythia) or a fresh toy model of the given
     shape.
  3. `steps` optimizer steps on (prompt without a password -> a strong completion) of the weak split, a fresh
     strong sample per problem per epoch (the toy: the correct answer; real tasks: the reference solution or a
     --strong_samples file). The loop is train_lock.py's (resumable, torchrun-ready).
  4. `n_samples` completions at `temperature` for every problem of `sample_splits` (default lock, elicit and val):
     out_dir/samples.jsonl, rows {"id", "domain", "prompt", "completion", ...} (sample.py's format).
  5. Greedy correctness on the validation split and the sampled correctness of the val samples (the policy's
     quality at temperature 0 and 1), then an HF checkpoint, train_config.json and metrics.json.

Commands:
  python train_policy.py --n_layer=1 --n_embd=64 --steps=2000 --out_dir=runs/pi_weak_1x64      # about 1 minute
  python train_lock.py --weak_samples=runs/pi_weak_1x64/samples.jsonl --out_dir=runs/lock_pi_1x64
  python train_policy.py --task=math --init_from=PYTHIA_1B --tokenizer=PYTHIA_1B/tokenizer.json --optimizer=lion \\
      --lr=1.5e-6 --steps=2000 --batch_size=8 --sample_splits=lock --out_dir=runs/pi_weak_math
  (at 7B, draw the samples on GPUs with `python sample.py --checkpoint=runs/pi_weak_math --task=math --split=lock`.)
Sampling runs in one process (rank 0 under torchrun); use sample.py for large sample sets.

Toy policies measured with this recipe: see the README ("Weak policies the paper's way") for each policy's greedy
and sampled correctness.
"""
import os
import random
import time
from dataclasses import asdict, dataclass, replace
from typing import Literal

import torch

import sample
from common import check_config, encode_examples, greedy_eval, length_buckets, run_cli, score, seed_everything
from data.lock import Lock
from errors import BadInput
from files import write_json, write_jsonl
from parallel import barrier, dist_rank_world, plain_model, print0, save_model, setup_dist
from train_lock import load_tokenizer, starting_point, train_phase


@dataclass
class Config:
    # task (the lock's: same split and prompt format)
    task: str = "toy"
    task_path: str = ""
    toy_problems: int = 20000
    strong_samples: str = ""       # JSONL of strong samples to imitate; default: the problems' reference solutions
    split_seed: int = 0
    prompt_format: Literal["plain", "user_assistant", "chatml"] = "plain"
    train_split: Literal["weak", "lock", "elicit"] = "weak"  # the paper: the 10% weak split
    # model
    init_from: str = ""            # a small base checkpoint; "" = a fresh toy model of the shape below
    tokenizer: str = ""
    arch: Literal["llama", "gpt_neox"] = "llama"
    n_layer: int = 1
    n_head: int = 4
    n_embd: int = 64
    mlp_dim: int = 0
    rope_theta: float = 10000.0
    # training
    steps: int = 2000
    lr: float = 1e-3
    optimizer: Literal["adamw", "lion"] = "adamw"
    weight_decay: float = 0.01
    warmup_steps: int = 50
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    batch_size: int = 64
    grad_accum: int = 1
    grad_clip: float = 1.0
    max_len: int = 1024
    # samples and evaluation
    sample_splits: str = "lock,elicit,val"  # splits whose problems get samples (comma list)
    n_samples: int = 4             # samples per problem (train_lock draws one per problem per epoch)
    temperature: float = 1.0
    max_new_tokens: int = 0        # 0 = the task's default
    sample_batch_size: int = 256
    eval_n: int = 1000             # validation problems for the greedy evaluation (0 = all)
    eval_batch_size: int = 500
    # run
    out_dir: str = "runs/pi_weak"
    seed: int = 0
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    resume: bool = False
    ckpt_every: int = 500
    log_every: int = 50
    stop_after_steps: int = 0
    parallel: Literal["ddp", "fsdp"] = "ddp"
    grad_checkpoint: bool = False
    train_dtype: Literal["fp32", "bf16"] = "fp32"


def imitation_epoch(lock, cfg, tok, epoch):
    """Every train-split problem once, with no password, a fresh strong sample; deterministic in (seed, epoch)."""
    rng = random.Random(f"policy/{cfg.seed}/{epoch}")
    pairs = [(lock.task.prompt(p), lock.strong.draw(p, rng)) for p in lock.splits[cfg.train_split]]
    out = encode_examples(tok, pairs, cfg.max_len)
    rng.shuffle(out)
    return length_buckets(out, cfg.batch_size, rng)


def sampled_correctness(lock, rows):
    """Mean correctness of the samples of validation problems (every sample counts), and per domain."""
    by_id = {p["id"]: p for p in lock.splits["val"]}
    have = [(by_id[r["id"]], r["completion"]) for r in rows if r["id"] in by_id]
    if not have:
        return None, {}
    return score([p for p, _ in have], [lock.task.grade(c, p) for p, c in have])


def main(cfg):
    t0 = time.time()
    check_config(cfg)
    rank, world, device = setup_dist(cfg.device)
    cfg = replace(cfg, device=device)
    seed_everything(cfg.seed)
    lock = Lock.from_config({**asdict(cfg), "weak_samples": ""})
    if not lock.splits[cfg.train_split]:
        raise BadInput(f"--train_split={cfg.train_split}: the split is empty")
    lock.strong.check_covers(lock.splits[cfg.train_split])
    tok = load_tokenizer(cfg, lock.task)
    os.makedirs(cfg.out_dir, exist_ok=True)
    model, state, opt_state = starting_point(cfg, tok, lock.task)  # resume, init_from or a fresh toy model
    print0(f"policy model: {model.num_params() / 1e6:.2f}M parameters, imitating {lock.strong.describe()} on "
           f"{len(lock.splits[cfg.train_split])} {cfg.train_split}-split problems for {cfg.steps} steps")
    if not train_phase(cfg, model, tok, "imitate", lambda e: imitation_epoch(lock, cfg, tok, e), cfg.steps, cfg.lr,
                       start_step=state["step"] if state else 0, opt_state=opt_state):
        return None
    model = plain_model(model)
    val = lock.splits["val"][:cfg.eval_n] if cfg.eval_n else lock.splits["val"]
    greedy = greedy_eval(model, tok, lock.task, val, [lock.task.prompt(p) for p in val], cfg.max_new_tokens,
                         cfg.eval_batch_size, desc="eval greedy")
    rows = []
    if rank == 0 and cfg.sample_splits:
        rows, _ = sample.draw(model, tok, sample.task_rows(lock, cfg.sample_splits.split(",")), cfg.n_samples,
                              cfg.max_new_tokens or lock.task.max_new_tokens, cfg.temperature,
                              batch_size=cfg.sample_batch_size, seed=cfg.seed)
    sampled, sampled_dom = sampled_correctness(lock, rows)
    metrics = dict(correct_greedy=greedy["correct"], per_domain_greedy=greedy["per_domain"],
                   correct_sampled=sampled, per_domain_sampled=sampled_dom, temperature=cfg.temperature,
                   n_eval=len(val), n_samples_written=len(rows), config=asdict(cfg),
                   wall_seconds=round(time.time() - t0, 1))
    save_model(model, cfg.out_dir, tok.path)
    if rank == 0:
        write_jsonl(os.path.join(cfg.out_dir, "samples.jsonl"), rows)
        write_json(os.path.join(cfg.out_dir, "train_config.json"), asdict(cfg))
        write_json(os.path.join(cfg.out_dir, "metrics.json"), metrics)
        print(f"\npolicy {cfg.out_dir}: greedy correctness {greedy['correct']:.3f} on {len(val)} val problems"
              + (f", sampled (T={cfg.temperature:g}) {sampled:.3f}" if sampled is not None else "")
              + f" | {len(rows)} samples -> {os.path.join(cfg.out_dir, 'samples.jsonl')} | {metrics['wall_seconds']:.0f}s")
    barrier()
    return metrics


if __name__ == "__main__":
    run_cli(main, Config)
