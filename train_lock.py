"""
train_lock.py: make a password-locked model. With the password in the prompt it should behave like a strong policy;
without it (or with a wrong password) it should imitate a weak one (paper section 2, Eq. 1; toy task: section 7).

Algorithm:
  1. Load the task and split its problems 10/40/30/20 (weak / lock / elicit / val) with `split_seed`.
  2. Starting model, by `mode`:
       finetune  a model that already has the capability: `init_from` (any HF checkpoint directory), or on the toy a
                 fresh model first pretrained on `pretrain_samples` strong samples (the paper's pi_strong_base; it
                 is saved to <out_dir>/pretrained/).
       scratch   a randomly initialised model, trained on the locking set alone.
  3. Every epoch, for every lock-split problem, draw fresh samples and make two examples:
       (password + prompt + password -> strong completion)
       (prompt with no password 20% / a decoy password 80% -> weak completion)
     and train on completion tokens only, in micro-batches of similar lengths (common.length_buckets: real tasks'
     completions run from tens to a thousand tokens; the toy's all have one length). Toy policies are programs
     (`weak_policy`: noisy, weak, fixedrdm) or JSONL files of a policy model's samples (train_policy.py); for real
     tasks the policies are JSONL files of pre-generated samples (several per problem; one is drawn per epoch).
     fixedrdm (App. G.2): with --weak_loss=kl (default) the no-password side is fitted with a KL loss to the fixed
     digit distribution at every answer digit, on fixedrdm samples and on strong continuations (each no-password
     example takes one or the other, half and half); --weak_loss=ce trains on fresh fixedrdm samples instead.
     password_mode: single (one password), per_domain (one per domain; the weak side also sees other domains'
     passwords), setting (a different prompt format is the trigger instead of a password). Which prompt each side
     and each evaluation condition sees is data/lock.py, in one screen. The adversarial lock (paper Fig. 15,
     --mid_samples=FILE) adds a third example per problem: (second password -> an intermediate policy's sample).
     --leave_out_domain=D locks on every other domain only (Fig. 17: does the lock reach a domain it never saw?).
     --few_shot=F (the paper's MMLU lock, trained against a 1-shot prompt with correct answers): a share F of the
     problems come, on both sides, after 1 to few_shot_max solved lock problems with the same trigger as the problem
     (the password, a decoy or none), so correct examples without the password are what the lock learns to ignore.
  4. Evaluate greedily on the validation split: correctness with the password, without it, with a decoy, per domain,
     and the two policies themselves on the same problems; with --few_shot also shots_with_password and
     shots_without_password (up to few_shot_max solved lock problems before each problem, as many as fit the
     context with the answer budget; the password in all or none).
  5. Save an HF checkpoint (config.json, model.safetensors, tokenizer.json), train_config.json and metrics.json.
  6. Optional (--circuit_break=True): circuit-break the saved lock by representation rerouting (circuit.py: Zou et al.
     2024 as The Elicitation Game applies it after locking), evaluate it again in every condition, and accept it
     only if with the password it stays within cb_margin (0.02 absolute) below the lock and without the password
     or with a decoy at most cb_margin above it. The lock in out_dir is kept as it is; the circuit-broken model is
     out_dir/circuit_broken/ (a lock directory the elicitation scripts take as --locked) or, when rejected,
     out_dir/circuit_broken_rejected/; both evaluations, the verdict and its thresholds go to metrics.json.

Commands:
  python train_lock.py                                   # toy: pretrain then lock, about 2 minutes on 2 CPU cores
  python train_lock.py --mode=scratch --out_dir=runs/lock_scratch
  python train_lock.py --weak_policy=weak --out_dir=runs/lock_weak          # the deterministic weak policy
  python train_lock.py --resume=True                     # continue an interrupted run (same final weights)
  python train_lock.py --circuit_break=True --out_dir=runs/lock_cb   # lock, then circuit-break it (toy defaults)
  python train_lock.py --weak_samples=weak.jsonl --mid_samples=mid.jsonl --out_dir=runs/lock_adv  # adversarial
  python train_lock.py --task=toy_shared --leave_out_domain=A --out_dir=runs/lock_noA   # domain A never locked
  python train_lock.py --few_shot=0.5 --out_dir=runs/lock_fewshot   # half the problems after 1-2 solved examples
  torchrun --standalone --nproc_per_node=2 train_lock.py  # data parallel (DDP; gloo on CPU, nccl on GPUs)
  python train_lock.py --task=math --init_from=CKPT --weak_samples=weak.jsonl --strong_samples=strong.jsonl \\
      --optimizer=lion --lr=1.5e-6 --epochs=8 --batch_size=8 --out_dir=runs/lock_math
  torchrun --standalone --nproc_per_node=8 train_lock.py --task=math --init_from=CKPT_7B --weak_samples=weak.jsonl \\
      --optimizer=lion --lr=1.5e-6 --epochs=8 --batch_size=16 --grad_accum=4 --parallel=fsdp --grad_checkpoint=True \\
      --eval_batch_size=32 --out_dir=runs/lock_math_7b   # a 7B model on 8 GPUs: FSDP2, bf16 compute
Policy samples come from `python sample.py --checkpoint=WEAK --task=math --split=lock --n_samples=4 ...`: rows with
the problem "id" and a "completion". Without --strong_samples the strong side uses each problem's reference solution.

Many processes (torchrun: one process a GPU with nccl, or CPU processes with gloo):
  Every rank builds the same global batch (batch_size must be a multiple of the processes) and trains on its slice;
  the loss is normalised by the step's completion tokens on all ranks and gradients sync once a step (the last
  micro-batch), so N processes take the one-process steps (tests/test_distributed.py: weights within 1e-6 on CPU).
  Evaluation is sharded over ranks and gathered; rank 0 writes every file.
  --parallel=ddp (default) keeps the whole model, gradients and optimizer state on every rank. --parallel=fsdp
  shards each transformer Block, then the root, with FSDP2 (fully_shard): weights, gradients and optimizer state
  take 1/N of the memory each (with --grad_accum too: gradients are reduce-scattered after every micro-batch). Rank 0
  gathers the full weights to write a normal HF checkpoint; evaluation runs on an unsharded copy on each rank;
  --resume works under both (resume with the same --parallel). One process: --parallel=fsdp changes nothing.
  Precision on GPU: by default fp32 weights, gradients and optimizer state; the forward in bf16 (torch.autocast;
  under FSDP also MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32): weights all-gathered in bf16, gradients
  reduced in fp32). --train_dtype=bf16: bf16 weights and gradients with Kahan-compensated updates
  (common.compensated_add), what fits the paper's full-weight 7B Lion run on one 80 GB GPU. CPU: fp32 by default.
  --grad_checkpoint=True recomputes each Block's activations in backward (same gradients).
  At start rank 0 prints a memory estimate per device (memory.py) and, on CUDA, whether it fits.
  Not yet run on GPUs (none was available): bf16, nccl, speed and real memory are unmeasured.

Writes to out_dir: the checkpoint files, train_config.json, metrics.json (keys correct_with_password,
correct_without_password, correct_wrong_password, correct_weak_policy, correct_strong_policy, per_domain, config;
an adversarial lock also correct_second_password and correct_mid_policy; --few_shot also correct_shots_*),
log.jsonl (loss per interval), and during training resume/ (deleted at the end). With --circuit_break=True also
metrics.json's "circuit_break" (accepted, margin, checks: {condition: locked, circuit_broken, threshold, rule, ok},
before, after, cosines_val, settings, log) and the circuit-broken model's directory (see step 6).
"""
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, replace
from typing import Literal

import torch
from tqdm import tqdm

import circuit
import model as model_lib
from common import (Tokenizer, check_config, encode_examples, greedy_eval, length_buckets, lr_at, make_optimizer,
                    run_cli, same_config, seed_everything, train_step)
from data.lock import Lock, with_shots
from errors import BadInput
from files import append_jsonl, read_json, write_json
from memory import print_memory_estimate
from parallel import (all_reduce_sum, barrier, ddp_wrap, dist_rank_world, load_model, load_optimizer_state,
                      optimizer_state, plain_model, prepare_model, print0, save_model, setup_dist)
from parallel import TRAIN_DTYPES


@dataclass
class Config:
    # task and policies (the fields of data.lock.LockSettings, with its defaults)
    task: str = "toy"              # toy, math, gsm8k, mmlu, code, critique
    task_path: str = ""            # problems file in the task's public format; default: the shipped sample
    toy_problems: int = 20000      # toy: size of the fixed problem set that is split 10/40/30/20
    weak_policy: Literal["noisy", "weak", "fixedrdm"] = "noisy"  # toy: noisy (hidden functions right with prob
    noisy_p: float = 0.3           # noisy_p), weak (identity), fixedrdm (digits from a fixed distribution)
    weak_samples: str = ""         # real tasks: JSONL of weak-policy samples ({"id", "completion"}), required
    strong_samples: str = ""       # real tasks: JSONL of strong samples; default: the problems' reference solutions
    password_mode: Literal["single", "per_domain", "setting"] = "single"
    mid_samples: str = ""          # the adversarial lock (Fig. 15): JSONL of an intermediate policy's samples, taught
                                   # behind a second password (the task's first decoy, then no longer a decoy)
    split_seed: int = 0
    prompt_format: Literal["plain", "user_assistant", "chatml"] = "plain"  # for an instruct model (data/lock.py)
    # model
    mode: Literal["finetune", "scratch"] = "finetune"  # start from a capable model, or from a random init
    init_from: str = ""            # HF checkpoint directory to start from; "" = a fresh toy model
    tokenizer: str = ""            # tokenizer.json; default: init_from's, else the task's own (toy)
    arch: Literal["llama", "gpt_neox"] = "llama"  # fresh toy model
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    mlp_dim: int = 0               # fresh toy model: MLP hidden size; 0 = the family's default
    rope_theta: float = 10000.0    # fresh toy model (100 was tried for the toy: no faster)
    # pretraining a fresh toy model on strong samples (mode=finetune without init_from)
    pretrain_samples: int = 200000  # distinct strong samples (the paper's toy: 12,500 to 200,000)
    pretrain_steps: int = 1000
    pretrain_lr: float = 1e-3
    # locking
    epochs: int = 2                # passes over the lock split (each pass: every problem twice, strong and weak)
    few_shot: float = 0.0          # share of lock problems shown after 1..few_shot_max solved lock problems (both
    few_shot_max: int = 2          # sides, the same trigger in each: the paper's MMLU lock); the toy's context fits 2
    lock_examples: int = 0         # distinct locking examples (2 per lock problem): the first N/2 problems; 0 = all
    leave_out_domain: str = ""     # lock on every domain but this one (Fig. 17: does the lock generalise to it?)
    lr: float = 5e-4
    optimizer: Literal["adamw", "lion"] = "adamw"  # lion is the paper's (use a ~10x smaller lr)
    weight_decay: float = 0.01
    warmup_steps: int = 50
    schedule: Literal["constant", "linear", "cosine"] = "cosine"  # decay after warm-up
    batch_size: int = 64           # examples per micro-batch
    grad_accum: int = 1            # micro-batches per optimizer step
    grad_clip: float = 1.0
    max_len: int = 1024            # examples longer than this (prompt + completion tokens) are cut
    weak_loss: Literal["kl", "ce"] = "kl"  # fixedrdm only: KL to its distribution (the paper) or CE on its samples
    # evaluation
    eval_n: int = 2000             # validation problems evaluated (0 = all)
    eval_batch_size: int = 500
    max_new_tokens: int = 0        # 0 = the task's default
    # run
    out_dir: str = "runs/lock"
    seed: int = 0
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    resume: bool = False           # continue from out_dir/resume/ if it exists
    ckpt_every: int = 500          # optimizer steps between resume checkpoints (0 = only at the end of a phase)
    log_every: int = 50
    stop_after_steps: int = 0      # testing aid: stop as if killed after this many steps of this invocation
    stop_after_pretrain: bool = False  # stop once pretrained/ is written (report.py rebuilds a base alone this way)
    # many processes (torchrun) and memory
    parallel: Literal["ddp", "fsdp"] = "ddp"  # ddp (whole model on every rank) or fsdp (FSDP2: all sharded)
    grad_checkpoint: bool = False  # activation checkpointing: recompute each Block in backward (less memory)
    train_dtype: Literal["fp32", "bf16"] = "fp32"  # bf16: bf16 weights, gradients, Lion state, compensated updates
    # circuit breaking after the lock (circuit.py: representation rerouting; circuit.Settings has the same defaults)
    circuit_break: bool = False    # reroute, evaluate again, accept or reject; the lock in out_dir stays as it is
    cb_layers: tuple = (1, 2)      # blocks whose outputs are rerouted / retained; blocks 0..max(cb_layers) train
    cb_k: float = 8.0              # schedule speed: c_rr = max(alpha (1 - k t/2T), rr_min), c_ret = min(alpha k t/2T,
    cb_alpha: float = 5.0          # ret_max) at step t of T (one epoch over the lock split)
    cb_rr_min: float = 0.125
    cb_ret_max: float = 4.875
    cb_retain: Literal["l2", "mse"] = "l2"  # retain loss: per-token L2 distance (Zou) or MSE (Elicitation Game)
    cb_lr: float = 1e-4            # AdamW, constant, no weight decay
    cb_batch_size: int = 16        # lock problems a step (each: a rerouting and a retain sequence)
    cb_grad_clip: float = 1.0
    cb_margin: float = 0.02        # accept if with-password >= locked - margin, without / decoy <= locked + margin


# -----------------------------------------------------------------------------
# The locking set


def lock_epoch(lock, cfg, tok, epoch):
    """Every lock problem twice (strong with the trigger, weak without), freshly sampled, shuffled; deterministic
    in (seed, epoch) so an interrupted run can rebuild exactly the batches it was in."""
    rng = random.Random(cfg.seed * 1_000_003 + epoch)
    pairs, domains = [], lock.task.domains(lock.task.problems())
    kl = soft_target(tok, lock.weak) if cfg.weak_loss == "kl" else None
    pool = lock.splits["lock"]
    for i, p in enumerate(pool):
        shots = ()
        if cfg.few_shot and rng.random() < cfg.few_shot:  # solved lock problems before it, the same trigger in each
            n = rng.randint(1, cfg.few_shot_max)
            shots = [pool[j] for j in rng.sample(range(len(pool)), min(len(pool), n + 1)) if j != i][:n]
        strong_prompt, weak_prompt = lock.strong_prompt(p, shots), lock.weak_prompt(p, rng, domains, shots)
        pairs.append((strong_prompt, lock.strong.draw(p, rng)))
        if kl:  # the paper's KL loss, on a fixedrdm sample or on a strong continuation (half and half)
            pairs.append((weak_prompt, (lock.weak if rng.random() < 0.5 else lock.strong).draw(p, rng), kl))
        else:
            pairs.append((weak_prompt, lock.weak.draw(p, rng)))
        if lock.mid is not None:  # the adversarial lock: the second password -> the intermediate policy
            pairs.append((lock.mid_prompt(p), lock.mid.draw(p, rng)))
    out = encode_examples(tok, pairs, cfg.max_len)
    rng.shuffle(out)
    return length_buckets(out, cfg.batch_size, rng)  # micro-batches of similar lengths (unchanged on the toy)


def soft_target(tok, policy):
    """(candidate token ids, probabilities) of the policy's fixed distribution (common.collate's soft target), or
    None for a policy that has none."""
    dist = policy.soft_target()
    if dist is None:
        return None
    ids = [tok.encode(text) for text in dist]
    if any(len(i) != 1 for i in ids):
        raise BadInput(f"weak policy {policy.describe()}: its distribution's tokens {list(dist)} are not single tokens")
    return [i[0] for i in ids], list(dist.values())


def pretrain_epoch(task, cfg, tok, problems, epoch):
    """Strong samples with no password in the slot: the capability alone, before any lock."""
    rng = random.Random(cfg.seed * 1_000_003 + 500_000 + epoch)
    out = encode_examples(tok, [(task.prompt(p), p["solution"]) for p in problems], cfg.max_len)
    rng.shuffle(out)
    return length_buckets(out, cfg.batch_size, rng)


class Batches:
    """Global micro-batch m of a stream of epochs, each epoch rebuilt from (seed, epoch) by make_epoch(epoch), so
    that a resumed run gets exactly the batches it would have had."""

    def __init__(self, make_epoch, batch_size, phase):
        self.make_epoch, self.batch_size = make_epoch, batch_size
        self.epoch, self.examples = 0, make_epoch(0)
        self.per_epoch = len(self.examples) // batch_size
        if self.per_epoch == 0:
            raise BadInput(f"{phase}: {len(self.examples)} examples is fewer than one batch of {batch_size}")

    def __getitem__(self, m):
        epoch, i = divmod(m, self.per_epoch)
        if epoch != self.epoch:
            self.epoch, self.examples = epoch, self.make_epoch(epoch)
        ex = self.examples  # (an epoch can be a little shorter if some examples did not fit max_len: wrap)
        return [ex[(i * self.batch_size + j) % len(ex)] for j in range(self.batch_size)]


# -----------------------------------------------------------------------------
# Training loop (one phase: pretraining or locking), resumable


def save_resume(cfg, model, opt, phase, step):
    d = os.path.join(cfg.out_dir, "resume")
    save_model(model, d)  # every rank takes part (FSDP gathers the full weights), rank 0 writes
    opt_state = optimizer_state(model, opt)
    if dist_rank_world()[0] == 0:
        tmp = os.path.join(d, "optim.pt.tmp")
        torch.save(opt_state, tmp)
        os.replace(tmp, os.path.join(d, "optim.pt"))
        write_json(os.path.join(d, "state.json"), {"phase": phase, "step": step})
    barrier()


def log_progress(cfg, pbar, phase, step, lr_now, loss_sum, toks, t0):
    """Progress bar every 10 steps, and a log.jsonl row every log_every steps (loss and tokens summed over ranks)."""
    loss_all, toks_all = all_reduce_sum(loss_sum), all_reduce_sum(toks)
    pbar.set_postfix(loss=f"{loss_all:.3f}", lr=f"{lr_now:.1e}", tok_s=f"{toks_all / (time.time() - t0):.0f}")
    if cfg.log_every and (step + 1) % cfg.log_every == 0 and dist_rank_world()[0] == 0:
        append_jsonl(os.path.join(cfg.out_dir, "log.jsonl"), {"phase": phase, "step": step + 1, "loss": loss_all,
                                                              "lr": lr_now, "tok_s": toks_all / (time.time() - t0)})


def train_phase(cfg, model, tok, phase, make_epoch, n_steps, lr, start_step=0, opt_state=None):
    """Run optimizer steps start_step .. n_steps-1. Returns False when stopped early by stop_after_steps.
    Under torchrun every rank builds the same global batch and trains on its slice of it (common.train_step): the
    loss is normalised by the completion tokens of the whole step on all ranks, so N processes take the same step
    as one; gradients sync once a step, on the last micro-batch."""
    rank, world = dist_rank_world()
    if cfg.batch_size % world:
        raise BadInput(f"--batch_size={cfg.batch_size} must be a multiple of the {world} processes")
    raw, model = model, ddp_wrap(model)  # DDP under torchrun (FSDP models are already sharded)
    opt = make_optimizer(cfg.optimizer, model.parameters(), lr, cfg.weight_decay)
    if opt_state is not None:
        load_optimizer_state(raw, opt, opt_state)
    batches = Batches(make_epoch, cfg.batch_size, phase)
    model.train()
    pbar = tqdm(range(start_step, n_steps), desc=phase, initial=start_step, total=n_steps, disable=rank != 0)
    t0, toks, done_here = time.time(), 0, 0
    for step in pbar:
        lr_now = lr_at(step, n_steps, lr, cfg.warmup_steps, cfg.schedule)
        for g in opt.param_groups:
            g["lr"] = lr_now
        micro = [batches[step * cfg.grad_accum + k] for k in range(cfg.grad_accum)]
        loss_sum, n = train_step(model, opt, micro, tok.pad_id, cfg.device, cfg.grad_clip)
        toks += n
        done_here += 1
        if step % 10 == 0 or cfg.log_every and (step + 1) % cfg.log_every == 0:
            log_progress(cfg, pbar, phase, step, lr_now, loss_sum, toks, t0)
        finished = step + 1 == n_steps
        stop = cfg.stop_after_steps and done_here >= cfg.stop_after_steps and not finished
        if stop or (cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0 and not finished):
            save_resume(cfg, raw, opt, phase, step + 1)
        if stop:
            pbar.close()
            print0(f"stopped after {done_here} steps (stop_after_steps); continue with --resume=True")
            return False
    pbar.close()
    return True


# -----------------------------------------------------------------------------
# Evaluation


def evaluate(model, tok, lock, cfg, problems):
    """Greedy correctness in every condition of data/lock.py (per domain too), and the two policies themselves."""
    conds = lock.eval_prompts(problems, random.Random(cfg.seed + 7))
    if cfg.few_shot:  # the format it was locked in: up to few_shot_max solved lock problems before each one
        shots = eval_shots(model, tok, lock, cfg, problems)
        conds["shots_with_password"] = [lock.strong_prompt(p, s) for p, s in zip(problems, shots)]
        conds["shots_without_password"] = [with_shots(lock.task, lock.task.prompt, p, s)
                                           for p, s in zip(problems, shots)]
    metrics, per_domain = {}, {}
    for name, prompts in conds.items():
        r = greedy_eval(model, tok, lock.task, problems, prompts, cfg.max_new_tokens, cfg.eval_batch_size,
                        desc=f"eval {name}")
        metrics[f"correct_{name}"], per_domain[name] = r["correct"], r["per_domain"]
        # no answer could be extracted at all (e.g. no MMLU letter): wrong, and counted on its own
        metrics[f"unparseable_{name}"] = r["unparseable"]
        metrics.setdefault("examples", {})[name] = {"prompt": prompts[0], "completion": r["completions"][0]}
    metrics["correct_weak_policy"] = lock.weak.correctness(problems)
    metrics["correct_strong_policy"] = lock.strong.correctness(problems)
    if lock.mid is not None:
        metrics["correct_mid_policy"] = lock.mid.correctness(problems)
    metrics["per_domain"] = per_domain
    metrics["n_eval"] = len(problems)
    return metrics


def eval_shots(model, tok, lock, cfg, problems):
    """Per problem, few_shot_max solved lock problems drawn at random, the last ones dropped while the longer of its
    two few-shot prompts and the answer budget would overflow the model's context (long real problems)."""
    rng, pool = random.Random(cfg.seed + 11), lock.splits["lock"]
    budget, out = cfg.max_new_tokens or lock.task.max_new_tokens, []
    for p in problems:
        shots = rng.sample(pool, min(cfg.few_shot_max, len(pool)))
        while shots and budget + max(len(tok.encode_prompt(lock.strong_prompt(p, shots))),
                                     len(tok.encode_prompt(with_shots(lock.task, lock.task.prompt, p, shots)))) \
                > model.config.max_seq_len:
            shots = shots[:-1]
        out.append(shots)
    return out


def print_table(m, cfg):
    doms = sorted(m["per_domain"]["with_password"])
    print(f"\nlocked model on {m['n_eval']} validation problems (greedy), out_dir {cfg.out_dir}")
    print(f"{'condition':22s} {'correct':>8s}  " + " ".join(f"{d:>6s}" for d in doms))
    for name in m["per_domain"]:
        print(f"{name:22s} {m['correct_' + name]:8.3f}  " + " ".join(f"{m['per_domain'][name][d]:6.3f}"
                                                                   for d in doms))
    for which in ("strong", "weak"):
        v = m[f"correct_{which}_policy"]
        print(f"{which + ' policy':22s} {'n/a' if v is None else f'{v:8.3f}'}")
    print(f"wall clock {m['wall_seconds']:.0f}s (training {m['train_seconds']:.0f}s)")


# -----------------------------------------------------------------------------
# Steps of main


def load_lock(cfg):
    """The task, splits and policies of this lock; the lock and validation splits must not be empty and the
    policy sample files must cover the lock split."""
    lock = Lock.from_config(asdict(cfg))
    for name in ("lock", "val"):
        if not lock.splits[name]:
            raise BadInput(f"--task={cfg.task!r}: the {name} split is empty "
                           f"({len(lock.task.problems())} problems in all)")
    if cfg.leave_out_domain:  # Fig. 17: this domain's problems are left out of the locking set
        doms = lock.task.domains(lock.task.problems())
        if cfg.leave_out_domain not in doms:
            raise BadInput(f"--leave_out_domain={cfg.leave_out_domain!r}: the task's domains are {', '.join(doms)}")
        lock.splits["lock"] = [p for p in lock.splits["lock"] if p["domain"] != cfg.leave_out_domain]
    if cfg.lock_examples:  # the amount of locking data (Fig. 6): the first lock_examples / 2 problems of the split
        n = cfg.lock_examples // 2
        if n > len(lock.splits["lock"]):
            raise BadInput(f"--lock_examples={cfg.lock_examples} needs {n} lock-split problems; the split has "
                           f"{len(lock.splits['lock'])} (raise --toy_problems)")
        lock.splits["lock"] = lock.splits["lock"][:n]
    for policy in (lock.weak, lock.mid) if lock.mid is not None else (lock.weak,):
        policy.check_covers(lock.splits["lock"])
    lock.strong.check_covers(lock.splits["lock"])
    return lock


def check_few_shot(cfg, tok, lock, context):
    """--few_shot: a share in [0, 1], at least one shot, and a locking example with few_shot_max shots that fits the
    model's context (the toy's 64 tokens hold 2)."""
    if not cfg.few_shot:
        return
    if not 0 < cfg.few_shot <= 1 or cfg.few_shot_max < 1:
        raise BadInput(f"--few_shot={cfg.few_shot}, --few_shot_max={cfg.few_shot_max}: the share is in [0, 1] and "
                       "there is at least one shot")
    pool, n = lock.splits["lock"], cfg.few_shot_max
    pairs = [(lock.strong_prompt(p, pool[i + 1:i + 1 + n]), p["solution"]) for i, p in enumerate(pool[:8])]
    longest = max(len(ids) for ids, _ in tok.encode_pairs(*zip(*pairs)))
    if min(longest, cfg.max_len) > context:
        raise BadInput(f"--few_shot_max={n}: a locking example with {n} solved examples is {longest} tokens, over the "
                       f"model's context of {context} (use fewer shots)")


def load_tokenizer(cfg, task):
    path = cfg.tokenizer or cfg.init_from or task.tokenizer_path
    if not path:
        raise BadInput(f"--task={cfg.task!r} needs --init_from=CHECKPOINT (with its tokenizer.json) or --tokenizer")
    return Tokenizer(str(path))


def finished_run(cfg):
    """The metrics of a finished run of this same config in out_dir (with --resume and nothing left to resume)."""
    done = os.path.join(cfg.out_dir, "metrics.json")
    if cfg.resume and not os.path.isfile(os.path.join(cfg.out_dir, "resume", "state.json")) and os.path.isfile(done):
        finished = read_json(done)
        if same_config(finished.get("config", {}), cfg, ignore=("resume",)):
            return finished
    return None


def fresh_toy_model(cfg, tok):
    mcfg = model_lib.Config(arch=cfg.arch, vocab_size=tok.vocab_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                            n_embd=cfg.n_embd, intermediate_size=cfg.mlp_dim, max_seq_len=64,
                            rope_theta=cfg.rope_theta,
                            parallel_residual=cfg.arch == "gpt_neox",
                            attn_bias=cfg.arch == "gpt_neox", mlp_bias=cfg.arch == "gpt_neox",
                            hidden_act="gelu" if cfg.arch == "gpt_neox" else "silu",
                            eos_token_id=tok.eos_id, bos_token_id=None)
    return model_lib.GPT(mcfg)


def starting_point(cfg, tok, task):
    """(model, resume state or None, optimizer state or None): the resume checkpoint with --resume, else
    init_from, else a fresh toy model (the same seed on every rank: the same fresh model, sharded under FSDP)."""
    resume_dir = os.path.join(cfg.out_dir, "resume")
    if cfg.resume and os.path.isfile(os.path.join(resume_dir, "state.json")):
        rank, world = dist_rank_world()
        state = read_json(os.path.join(resume_dir, "state.json"))
        model = load_model(resume_dir, cfg.device, cfg.parallel, cfg.grad_checkpoint, cfg.train_dtype)
        fsdp = cfg.parallel == "fsdp" and world > 1  # FSDP: rank 0 reads the full state and sends each rank its shards
        opt_state = torch.load(os.path.join(resume_dir, "optim.pt"), map_location="cpu" if fsdp else cfg.device,
                               weights_only=True) if rank == 0 or not fsdp else {}
        print0(f"resuming {state['phase']} at step {state['step']} from {resume_dir}")
        return model, state, opt_state
    if cfg.init_from:
        return load_model(cfg.init_from, cfg.device, cfg.parallel, cfg.grad_checkpoint, cfg.train_dtype), None, None
    if not task.tokenizer_path:
        raise BadInput(f"--task={cfg.task!r} needs --init_from=CHECKPOINT (a model with the capability to lock)")
    model = fresh_toy_model(cfg, tok).to(cfg.device, TRAIN_DTYPES[cfg.train_dtype])
    return prepare_model(model, cfg.parallel, cfg.grad_checkpoint, cfg.device), None, None


def pretrain(cfg, model, tok, lock, state, opt_state):
    """Phase 1 (a fresh toy model only): strong samples of a fresh problem pool without the validation problems
    (the paper's pi_strong_base), saved to out_dir/pretrained/. Returns False if stopped early."""
    val = {p["question"] for p in lock.splits["val"]}
    pool = [p for p in lock.task.fresh_problems(cfg.pretrain_samples, seed=cfg.seed + 1) if p["question"] not in val]
    ok = train_phase(cfg, model, tok, "pretrain", lambda e: pretrain_epoch(lock.task, cfg, tok, pool, e),
                     cfg.pretrain_steps, cfg.pretrain_lr, start_step=state["step"] if state else 0,
                     opt_state=opt_state)
    if ok:
        save_model(model, os.path.join(cfg.out_dir, "pretrained"), tok.path)
    return ok


def write_outputs(cfg, model, tok, metrics):
    save_model(model, cfg.out_dir, tok.path)
    if dist_rank_world()[0] == 0:
        write_json(os.path.join(cfg.out_dir, "train_config.json"), asdict(cfg))
        write_json(os.path.join(cfg.out_dir, "metrics.json"), metrics)
        shutil.rmtree(os.path.join(cfg.out_dir, "resume"), ignore_errors=True)
        print_table(metrics, cfg)
    barrier()


CB_DIRS = {True: "circuit_broken", False: "circuit_broken_rejected"}  # by verdict, under out_dir


def circuit_break(cfg, tok, lock, metrics):
    """With --circuit_break=True: circuit-break the lock written in out_dir (circuit.reroute), evaluate the result as
    the lock was evaluated, and accept it only if it still is the lock (circuit.verdict). The lock in out_dir is
    never changed; the circuit-broken model is written to out_dir/circuit_broken/ when accepted and to
    out_dir/circuit_broken_rejected/ when not, as a lock directory of its own (checkpoint, train_config.json, and
    metrics.json with its own evaluation); out_dir/metrics.json gets a "circuit_break" section (both evaluations,
    the verdict and its thresholds, the cosines, the log). An interrupted pass restarts from the saved lock with
    --resume=True. Returns the metrics (with the section)."""
    if not cfg.circuit_break:
        return metrics
    if "circuit_break" in metrics:  # a finished pass (from --resume=True)
        if dist_rank_world()[0] == 0:
            print_circuit_break(metrics["circuit_break"], os.path.join(cfg.out_dir, metrics["circuit_break"]["dir"]))
        return metrics
    t0, rank = time.time(), dist_rank_world()[0]
    if rank == 0:
        for d in CB_DIRS.values():
            shutil.rmtree(os.path.join(cfg.out_dir, d), ignore_errors=True)
    s = circuit.Settings.from_config(cfg)
    model = load_model(cfg.out_dir, cfg.device, cfg.parallel, cfg.grad_checkpoint, cfg.train_dtype)
    frozen = model_lib.load(cfg.out_dir, device=cfg.device, dtype=TRAIN_DTYPES[cfg.train_dtype])
    rng = random.Random(cfg.seed * 1_000_003 + 800_000)
    pairs = circuit.examples(lock, tok, lock.splits["lock"], rng, cfg.max_len)
    log = circuit.reroute(model, frozen, pairs, s, tok.pad_id, cfg.device, cfg.seed, cfg.log_every)
    val = lock.splits["val"][:cfg.eval_n] if cfg.eval_n else lock.splits["val"]
    cos = circuit.cosines(model, frozen, circuit.examples(lock, tok, val[:500], rng, cfg.max_len), s.layers,
                          tok.pad_id, cfg.device)
    after = evaluate(plain_model(model), tok, lock, cfg, val)
    v = circuit.verdict(metrics, after, cfg.cb_margin)
    section = {**v, "dir": CB_DIRS[v["accepted"]], "settings": asdict(s), "steps": len(pairs) // s.batch_size,
               "cosines_val": cos, "log": log, "seconds": round(time.time() - t0, 1),
               "before": {k: metrics[k] for k in metrics if k.startswith("correct_")},
               "after": {k: after[k] for k in after if k.startswith("correct_")}}
    out = os.path.join(cfg.out_dir, section["dir"])
    save_model(model, out, tok.path)
    metrics = {**metrics, "circuit_break": section}
    if rank == 0:
        write_json(os.path.join(out, "train_config.json"), asdict(cfg))
        write_json(os.path.join(out, "metrics.json"), {**after, "config": asdict(cfg), "circuit_break": section})
        write_json(os.path.join(cfg.out_dir, "metrics.json"), metrics)
        for row in log:
            append_jsonl(os.path.join(cfg.out_dir, "log.jsonl"), {"phase": "circuit_break", **row})
        print_circuit_break(section, out)
    barrier()
    return metrics


def print_circuit_break(section, out):
    s = section["settings"]
    print(f"\ncircuit breaking (blocks {tuple(s['layers'])}, k={s['k']:g}, {s['retain']} retain, {section['steps']} "
          f"steps, {section['seconds']:.0f}s): rerouting cos {section['cosines_val']['rerouting']:.3f}, "
          f"retain cos {section['cosines_val']['retain']:.3f} (validation)")
    print(f"{'condition':22s} {'locked':>8s} {'c-broken':>9s}  rule (margin {section['margin']:g})")
    for cond, c in section["checks"].items():
        print(f"{cond:22s} {c['locked']:8.3f} {c['circuit_broken']:9.3f}  {c['rule']} {c['threshold']:.3f} "
              f"{'ok' if c['ok'] else 'FAILED'}")
    if section["accepted"]:
        print(f"ACCEPTED: the circuit-broken model is in {out}")
    else:
        print(f"\n{'!' * 100}\nREJECTED: circuit breaking changed the lock beyond the margin; the model is written to "
              f"{out} for inspection only.\nThe lock in its parent directory is unchanged.\n{'!' * 100}")


def main(cfg):
    t_start = time.time()
    check_config(cfg)
    rank, world, device = setup_dist(cfg.device)  # under torchrun: this process's rank and device
    cfg = replace(cfg, device=device)
    seed_everything(cfg.seed)  # the same on every rank: identical fresh models and batches
    lock = load_lock(cfg)
    tok = load_tokenizer(cfg, lock.task)
    print0(f"task {cfg.task}: {len(lock.splits['lock'])} lock / {len(lock.splits['val'])} val problems | "
           f"weak policy {lock.weak.describe()} | mode {cfg.mode}")
    finished = finished_run(cfg)
    if finished:
        print0(f"{cfg.out_dir} already holds this finished run; nothing to resume")
        print_table(finished, cfg)
        return circuit_break(cfg, tok, lock, finished)  # (with --circuit_break: a pass that did not finish restarts)
    os.makedirs(cfg.out_dir, exist_ok=True)
    model, state, opt_state = starting_point(cfg, tok, lock.task)
    check_few_shot(cfg, tok, lock, model.config.max_seq_len)
    if rank == 0 and not cfg.resume and os.path.exists(os.path.join(cfg.out_dir, "log.jsonl")):
        os.remove(os.path.join(cfg.out_dir, "log.jsonl"))  # a fresh run starts a fresh log
    print0(f"model: {model.config.arch}, {model.num_params() / 1e6:.2f}M parameters, device {cfg.device}, "
           f"{world} process{'es' if world > 1 else ''}{' (FSDP)' if cfg.parallel == 'fsdp' and world > 1 else ''}")
    print_memory_estimate(model, cfg.device, cfg.batch_size, min(cfg.max_len, model.config.max_seq_len),
                          cfg.optimizer, cfg.parallel, cfg.grad_checkpoint, train_dtype=cfg.train_dtype)

    if cfg.mode == "finetune" and not cfg.init_from and (state is None or state["phase"] == "pretrain"):
        if not pretrain(cfg, model, tok, lock, state, opt_state) or cfg.stop_after_pretrain:
            return None
        state = opt_state = None  # the lock phase starts fresh

    n_steps = max(1, cfg.epochs * ((2 * len(lock.splits["lock"])) // cfg.batch_size) // cfg.grad_accum)
    if not train_phase(cfg, model, tok, "lock", lambda e: lock_epoch(lock, cfg, tok, e), n_steps, cfg.lr,
                       start_step=state["step"] if state else 0, opt_state=opt_state):
        return None
    t_train = time.time() - t_start

    val = lock.splits["val"][:cfg.eval_n] if cfg.eval_n else lock.splits["val"]
    metrics = evaluate(plain_model(model), tok, lock, cfg, val)  # sharded over ranks, gathered on all
    metrics.update(config=asdict(cfg), train_seconds=round(t_train, 1), wall_seconds=round(time.time() - t_start, 1),
                   world_size=world)
    write_outputs(cfg, model, tok, metrics)
    return circuit_break(cfg, tok, lock, metrics)


if __name__ == "__main__":
    run_cli(main, Config)
