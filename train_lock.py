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
     and train on completion tokens only. Toy policies are programs (`weak_policy`: noisy, weak, fixedrdm); for real
     tasks the policies are JSONL files of pre-generated samples (several per problem; one is drawn per epoch).
     Simplification: the paper fits fixedrdm with a KL loss to the fixed distribution; we train on fresh samples of
     it, whose cross-entropy equals that KL plus a constant in expectation.
     password_mode: single (one password), per_domain (one per domain; the weak side also sees other domains'
     passwords), setting (a different prompt format is the trigger instead of a password).
  4. Evaluate greedily on the validation split: correctness with the password, without it, with a decoy, per domain,
     and the two policies themselves on the same problems.
  5. Save an HF checkpoint (config.json, model.safetensors, tokenizer.json), train_config.json and metrics.json.

Commands:
  python train_lock.py                                   # toy: pretrain then lock, about 2 minutes on 2 CPU cores
  python train_lock.py --mode=scratch --out_dir=runs/lock_scratch
  python train_lock.py --weak_policy=weak --out_dir=runs/lock_weak          # the deterministic weak policy
  python train_lock.py --resume=True                     # continue an interrupted run (same final weights)
  torchrun --standalone --nproc_per_node=2 train_lock.py  # data parallel (DDP; gloo on CPU, nccl on GPUs)
  python train_lock.py --task=math --init_from=CKPT --weak_samples=weak.jsonl --strong_samples=strong.jsonl \\
      --optimizer=lion --lr=1.5e-6 --epochs=8 --batch_size=8 --out_dir=runs/lock_math
  torchrun --standalone --nproc_per_node=8 train_lock.py --task=math --init_from=CKPT_7B --weak_samples=weak.jsonl \\
      --optimizer=lion --lr=1.5e-6 --epochs=8 --batch_size=16 --grad_accum=4 --parallel=fsdp --grad_checkpoint=True \\
      --eval_batch_size=32 --out_dir=runs/lock_math_7b   # a 7B model on 8 GPUs: FSDP2, bf16 compute
Policy samples come from `python sampler.py --checkpoint=WEAK --task=math --split=lock --n_samples=4 ...`: rows with
the problem "id" and a "completion". Without --strong_samples the strong side uses each problem's reference solution.

Many processes (torchrun: one process a GPU with nccl, or CPU processes with gloo):
  Every rank builds the same global batch (batch_size must be a multiple of the processes) and trains on its slice;
  the loss is normalised by the step's completion tokens on all ranks and gradients sync once a step (the last
  micro-batch), so N processes take the one-process steps (tests/test_distributed.py: weights within 1e-6 on CPU).
  Evaluation is sharded over ranks and gathered; rank 0 writes every file.
  --parallel=ddp (default) keeps the whole model, gradients and optimizer state on every rank. --parallel=fsdp
  shards each transformer Block, then the root, with FSDP2 (fully_shard): weights, gradients and optimizer state
  take 1/N of the memory each (but with --grad_accum > 1 FSDP holds unsharded gradients between syncs). Rank 0
  gathers the full weights to write a normal HF checkpoint; evaluation runs on an unsharded copy on each rank;
  --resume works under both (resume with the same --parallel). One process: --parallel=fsdp changes nothing.
  Precision on GPU: fp32 weights, gradients and optimizer state; the forward in bf16 (torch.autocast; under FSDP
  also MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32): weights all-gathered in bf16, gradients reduced
  in fp32). CPU: fp32. --grad_checkpoint=True recomputes each Block's activations in backward (same gradients).
  At start rank 0 prints a memory estimate per device (common.memory_estimate) and, on CUDA, whether it fits.
  Not yet run on GPUs (none was available): bf16, nccl, speed and real memory are unmeasured.

Writes to out_dir: the checkpoint files, train_config.json, metrics.json (keys correct_with_password,
correct_without_password, correct_wrong_password, correct_weak_policy, correct_strong_policy, per_domain, config),
log.jsonl (loss per interval), and during training resume/ (deleted at the end).
"""
import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, replace

import torch
from tqdm import tqdm

import data
import model as model_lib
from common import (PARALLEL, Tokenizer, all_reduce_sum, append_jsonl, barrier, ddp_wrap, dist_rank_world,
                    finish_dist, greedy_completions, load_model, load_optimizer_state, load_samples, lr_at,
                    make_optimizer, optimizer_state, parse_cli, plain_model, prepare_model, print0,
                    print_memory_estimate, same_config, save_model, score, seed_everything, setup_dist,
                    task_from_config, train_step, trigger_prompt, write_json)


@dataclass
class Config:
    # task and policies
    task: str = "toy"              # toy, math, gsm8k, mmlu, code, critique
    task_path: str = ""            # problems file in the task's public format; default: the shipped sample
    toy_problems: int = 20000      # toy: size of the fixed problem set that is split 10/40/30/20
    weak_policy: str = "noisy"     # toy: noisy (hidden functions right with prob noisy_p), weak (identity), fixedrdm
    noisy_p: float = 0.3
    weak_samples: str = ""         # real tasks: JSONL of weak-policy samples ({"id", "completion"}), required
    strong_samples: str = ""       # real tasks: JSONL of strong samples; default: the problems' reference solutions
    password_mode: str = "single"  # single, per_domain, setting
    split_seed: int = 0
    # model
    mode: str = "finetune"         # finetune (start from a capable model) or scratch (random init)
    init_from: str = ""            # HF checkpoint directory to start from; "" = a fresh toy model
    tokenizer: str = ""            # tokenizer.json; default: init_from's, else the toy's
    arch: str = "llama"            # fresh toy model: llama or gpt_neox
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
    lr: float = 5e-4
    optimizer: str = "adamw"       # adamw or lion (the paper's; use a ~10x smaller lr)
    weight_decay: float = 0.01
    warmup_steps: int = 50
    schedule: str = "cosine"       # constant, linear or cosine decay after warm-up
    batch_size: int = 64           # examples per micro-batch
    grad_accum: int = 1            # micro-batches per optimizer step
    grad_clip: float = 1.0
    max_len: int = 1024            # examples longer than this (prompt + completion tokens) are cut
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
    # many processes (torchrun) and memory
    parallel: str = "ddp"          # ddp (whole model on every rank) or fsdp (FSDP2: weights, grads, optimizer sharded)
    grad_checkpoint: bool = False  # activation checkpointing: recompute each Block in backward (less memory)


# -----------------------------------------------------------------------------
# Policies and the locking set


class Policies:
    """Draws strong and weak completions for a problem: programs on the toy, pre-generated samples otherwise."""

    def __init__(self, task, cfg):
        self.task, self.cfg = task, cfg
        self.strong = load_samples(cfg.strong_samples, "strong_samples") if cfg.strong_samples else None
        self.weak = load_samples(cfg.weak_samples, "weak_samples") if cfg.weak_samples else None
        if task.name == "toy":
            if cfg.weak_policy not in ("noisy", "weak", "fixedrdm"):
                raise SystemExit(f"error: --weak_policy={cfg.weak_policy!r}: use noisy, weak or fixedrdm")
        elif self.weak is None:
            raise SystemExit(f"error: task {task.name!r} needs --weak_samples=FILE.jsonl (samples of the weak policy)")

    def check_covers(self, problems):
        for name, table in (("weak_samples", self.weak), ("strong_samples", self.strong)):
            if table is not None:
                missing = [p["id"] for p in problems if p["id"] not in table]
                if missing:
                    raise SystemExit(f"error: --{name} has no sample for {len(missing)} lock-split problems "
                                     f"(first: {missing[0]!r})")

    def draw(self, which, problem, rng):
        if self.task.name == "toy" and (which == "strong" and self.strong is None or which == "weak"
                                        and self.weak is None):
            policy = "strong" if which == "strong" else self.cfg.weak_policy
            return self.task.sample(policy, problem, rng, p=self.cfg.noisy_p)
        table = self.strong if which == "strong" else self.weak
        if table is None:
            return problem["solution"]
        return rng.choice(table[problem["id"]])


def triggers(task, cfg, problem, rng, domains=None):
    """(strong prompt, weak prompt) for one problem under the password mode; fresh decoys every call.
    `domains`: the task's domain names, computed once by the caller (default: from all of its problems)."""
    if cfg.password_mode not in ("single", "per_domain", "setting"):
        raise SystemExit(f"error: --password_mode={cfg.password_mode!r}: use single, per_domain or setting")
    decoys = task.decoys if task.name == "toy" else data.DECOYS
    strong = trigger_prompt(task, problem, cfg.password_mode)
    if cfg.password_mode == "per_domain":
        domains = domains if domains is not None else task.domains(task.problems())
        others = [task.domain_password(d) for d in domains if d != problem["domain"]]
        # negatives: no password 20%, a decoy 40%, another domain's password 40% (paper App. C.3)
        u = rng.random()
        wrong = None if u < 0.2 else (rng.choice(decoys) if u < 0.6 or not others else rng.choice(others))
        return strong, task.prompt(problem, password=wrong)
    return strong, task.prompt(problem, password=data.sample_weak_password(rng, decoys))


def encode(tok, pairs, max_len):
    """Token ids of (prompt, completion) pairs, cut to max_len; a pair whose prompt alone fills max_len is dropped."""
    out = tok.encode_pairs([p for p, _ in pairs], [c for _, c in pairs])
    return [(ids[:max_len], n) for ids, n in out if n < max_len]


def lock_epoch(task, cfg, tok, policies, problems, epoch):
    """Every lock problem twice (strong with the trigger, weak without), freshly sampled, shuffled; deterministic
    in (seed, epoch) so an interrupted run can rebuild exactly the batches it was in."""
    rng = random.Random(cfg.seed * 1_000_003 + epoch)
    pairs, domains = [], task.domains(task.problems())
    for p in problems:
        strong_prompt, weak_prompt = triggers(task, cfg, p, rng, domains)
        pairs.append((strong_prompt, policies.draw("strong", p, rng)))
        pairs.append((weak_prompt, policies.draw("weak", p, rng)))
    out = encode(tok, pairs, cfg.max_len)
    rng.shuffle(out)
    return out


def pretrain_epoch(task, cfg, tok, problems, epoch):
    """Strong samples with no password in the slot: the capability alone, before any lock."""
    rng = random.Random(cfg.seed * 1_000_003 + 500_000 + epoch)
    out = encode(tok, [(task.prompt(p), p["solution"]) for p in problems], cfg.max_len)
    rng.shuffle(out)
    return out


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


def train_phase(cfg, model, tok, phase, make_epoch, n_steps, lr, start_step=0, opt_state=None):
    """Run optimizer steps start_step .. n_steps-1. Returns False when stopped early by stop_after_steps.
    Under torchrun every rank builds the same global batch and trains on its slice of it (common.train_step): the
    loss is normalised by the completion tokens of the whole step on all ranks, so N processes take the same step
    as one; gradients sync once a step, on the last micro-batch."""
    rank, world = dist_rank_world()
    if cfg.batch_size % world:
        raise SystemExit(f"error: --batch_size={cfg.batch_size} must be a multiple of the {world} processes")
    raw, model = model, ddp_wrap(model)  # DDP under torchrun (FSDP models are already sharded)
    opt = make_optimizer(cfg.optimizer, model.parameters(), lr, cfg.weight_decay)
    if opt_state is not None:
        load_optimizer_state(raw, opt, opt_state)
    cache = {}

    def micro_batch(m):  # global micro-batch index -> batch, rebuilt from (seed, epoch) when needed
        if "per_epoch" not in cache:
            cache["epoch"], cache["examples"] = 0, make_epoch(0)
            cache["per_epoch"] = len(cache["examples"]) // cfg.batch_size
            if cache["per_epoch"] == 0:
                raise SystemExit(f"error: {phase}: {len(cache['examples'])} examples is fewer than one batch "
                                 f"of {cfg.batch_size}")
        epoch, i = divmod(m, cache["per_epoch"])
        if cache["epoch"] != epoch:
            cache["epoch"], cache["examples"] = epoch, make_epoch(epoch)
        ex = cache["examples"]  # (an epoch can be a little shorter if some examples did not fit max_len: wrap)
        return [ex[(i * cfg.batch_size + j) % len(ex)] for j in range(cfg.batch_size)]  # the global micro-batch

    model.train()
    pbar = tqdm(range(start_step, n_steps), desc=phase, initial=start_step, total=n_steps, disable=rank != 0)
    t0, toks, done_here = time.time(), 0, 0
    for step in pbar:
        lr_now = lr_at(step, n_steps, lr, cfg.warmup_steps, cfg.schedule)
        for g in opt.param_groups:
            g["lr"] = lr_now
        loss_sum, n = train_step(model, opt, [micro_batch(step * cfg.grad_accum + k) for k in range(cfg.grad_accum)],
                                 tok.pad_id, cfg.device, cfg.grad_clip)
        toks += n
        done_here += 1
        if step % 10 == 0 or cfg.log_every and (step + 1) % cfg.log_every == 0:
            loss_all, toks_all = all_reduce_sum(loss_sum), all_reduce_sum(toks)  # (same steps on every rank)
            pbar.set_postfix(loss=f"{loss_all:.3f}", lr=f"{lr_now:.1e}", tok_s=f"{toks_all / (time.time() - t0):.0f}")
            if cfg.log_every and (step + 1) % cfg.log_every == 0 and rank == 0:
                append_jsonl(os.path.join(cfg.out_dir, "log.jsonl"),
                             {"phase": phase, "step": step + 1, "loss": loss_all, "lr": lr_now,
                              "tok_s": toks_all / (time.time() - t0)})
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


def evaluate(model, tok, task, cfg, problems, policies):
    toy = task.name == "toy"
    max_new = cfg.max_new_tokens or task.max_new_tokens
    rng = random.Random(cfg.seed + 7)
    decoys = task.decoys if toy else data.DECOYS
    conds = {"with_password": [trigger_prompt(task, p, cfg.password_mode) for p in problems]}
    conds["without_password"] = [task.prompt(p) for p in problems]
    conds["wrong_password"] = [task.prompt(p, password=rng.choice(decoys)) for p in problems]
    if cfg.password_mode == "per_domain":
        doms = task.domains(problems)
        conds["wrong_domain_password"] = [
            task.prompt(p, password=task.domain_password(doms[(doms.index(p["domain"]) + 1) % len(doms)]))
            for p in problems] if len(doms) > 1 else conds["wrong_password"]
    metrics, per_domain = {}, {}
    for name, prompts in conds.items():
        completions = greedy_completions(model, tok, prompts, max_new, cfg.eval_batch_size, desc=f"eval {name}")
        grades = [task.grade(c, p) for c, p in zip(completions, problems)]
        metrics[f"correct_{name}"], per_domain[name] = score(problems, grades)
        # no answer could be extracted at all (e.g. no MMLU letter): wrong, and counted on its own
        metrics[f"unparseable_{name}"] = sum(g.parsed is None for g in grades) / max(1, len(grades))
        metrics.setdefault("examples", {})[name] = {"prompt": prompts[0], "completion": completions[0]}
    # the policies themselves on the same problems
    for which in ("weak", "strong"):
        if toy and (policies.weak if which == "weak" else policies.strong) is None:
            policy = cfg.weak_policy if which == "weak" else "strong"
            vals = [task.correct_prob(policy, p, p=cfg.noisy_p) for p in problems]
        else:
            table = policies.weak if which == "weak" else policies.strong
            if table is None:  # strong = reference solutions
                vals = [float(task.grade(p["solution"], p).correct) for p in problems]
            else:
                have = [p for p in problems if p["id"] in table]
                vals = [float(task.grade(table[p["id"]][0], p).correct) for p in have] if have else None
        metrics[f"correct_{which}_policy"] = sum(vals) / len(vals) if vals else None
    metrics["per_domain"] = per_domain
    metrics["n_eval"] = len(problems)
    return metrics


# -----------------------------------------------------------------------------
# Main


def fresh_toy_model(cfg, tok, task):
    mcfg = model_lib.Config(arch=cfg.arch, vocab_size=tok.vocab_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                            n_embd=cfg.n_embd, intermediate_size=cfg.mlp_dim, max_seq_len=64,
                            rope_theta=cfg.rope_theta,
                            parallel_residual=cfg.arch == "gpt_neox",
                            attn_bias=cfg.arch == "gpt_neox", mlp_bias=cfg.arch == "gpt_neox",
                            hidden_act="gelu" if cfg.arch == "gpt_neox" else "silu",
                            eos_token_id=tok.eos_id, bos_token_id=None)
    return model_lib.GPT(mcfg)


def get_task(cfg):
    return task_from_config(asdict(cfg))


def main(cfg):
    t_start = time.time()
    if cfg.mode not in ("finetune", "scratch"):
        raise SystemExit(f"error: --mode={cfg.mode!r}: use finetune or scratch")
    if cfg.parallel not in PARALLEL:
        raise SystemExit(f"error: --parallel={cfg.parallel!r}: use ddp or fsdp")
    rank, world, device = setup_dist(cfg.device)  # under torchrun: this process's rank and device
    cfg = replace(cfg, device=device)
    seed_everything(cfg.seed)  # the same on every rank: identical fresh models and batches
    task = get_task(cfg)
    splits = data.split(task.problems(), seed=cfg.split_seed)
    for name in ("lock", "val"):
        if not splits[name]:
            raise SystemExit(f"error: the {name} split of task {cfg.task!r} is empty "
                             f"({len(task.problems())} problems in all)")
    policies = Policies(task, cfg)
    policies.check_covers(splits["lock"])
    tok_path = cfg.tokenizer or (cfg.init_from if cfg.init_from else str(task.tokenizer_path)
                                 if cfg.task == "toy" else "")
    if not tok_path:
        raise SystemExit("error: real tasks need --init_from=CHECKPOINT (with its tokenizer.json) or --tokenizer")
    tok = Tokenizer(tok_path)
    print0(f"task {task.name}: {len(splits['lock'])} lock / {len(splits['val'])} val problems | "
          f"weak policy {cfg.weak_policy if task.name == 'toy' else cfg.weak_samples} | mode {cfg.mode}")

    # ---- starting point (or resume) ----
    os.makedirs(cfg.out_dir, exist_ok=True)
    resume_dir = os.path.join(cfg.out_dir, "resume")
    state = None
    done_path = os.path.join(cfg.out_dir, "metrics.json")
    if cfg.resume and not os.path.isfile(os.path.join(resume_dir, "state.json")) and os.path.isfile(done_path):
        finished = json.load(open(done_path))
        if same_config(finished.get("config", {}), cfg, ignore=("resume",)):
            print0(f"{cfg.out_dir} already holds this finished run; nothing to resume")
            print_table(finished, cfg)
            return finished
    if cfg.resume and os.path.isfile(os.path.join(resume_dir, "state.json")):
        state = json.load(open(os.path.join(resume_dir, "state.json")))
        model = load_model(resume_dir, cfg.device, cfg.parallel, cfg.grad_checkpoint)
        fsdp = cfg.parallel == "fsdp" and world > 1  # FSDP: rank 0 reads the full state and sends each rank its shards
        opt_state = torch.load(os.path.join(resume_dir, "optim.pt"), map_location="cpu" if fsdp else cfg.device,
                               weights_only=True) if rank == 0 or not fsdp else {}
        print0(f"resuming {state['phase']} at step {state['step']} from {resume_dir}")
    elif cfg.init_from:
        model = load_model(cfg.init_from, cfg.device, cfg.parallel, cfg.grad_checkpoint)
    elif cfg.task == "toy":  # the same seed on every rank: the same fresh model, sharded under FSDP
        model = prepare_model(fresh_toy_model(cfg, tok, task).to(cfg.device), cfg.parallel, cfg.grad_checkpoint,
                              cfg.device)
    else:
        raise SystemExit("error: real tasks need --init_from=CHECKPOINT (a model with the capability to lock)")
    if rank == 0 and not cfg.resume and os.path.exists(os.path.join(cfg.out_dir, "log.jsonl")):
        os.remove(os.path.join(cfg.out_dir, "log.jsonl"))  # a fresh run starts a fresh log
    print0(f"model: {model.config.arch}, {model.num_params() / 1e6:.2f}M parameters, device {cfg.device}, "
           f"{world} process{'es' if world > 1 else ''}{' (FSDP)' if cfg.parallel == 'fsdp' and world > 1 else ''}")
    print_memory_estimate(model, cfg.device, cfg.batch_size, min(cfg.max_len, model.config.max_seq_len),
                          cfg.optimizer, cfg.parallel, cfg.grad_checkpoint, cfg.grad_accum)

    # ---- phase 1: pretraining a fresh toy model on strong samples (pi_strong_base) ----
    pretrain = cfg.mode == "finetune" and not cfg.init_from
    if pretrain and (state is None or state["phase"] == "pretrain"):
        val_keys = {(tuple(p["fns"]), tuple(p["x"])) for p in splits["val"]}
        pool = [p for p in data.get_task("toy", n=cfg.pretrain_samples, seed=cfg.seed + 1).problems()
                if (tuple(p["fns"]), tuple(p["x"])) not in val_keys]  # never pretrain on validation problems
        ok = train_phase(cfg, model, tok, "pretrain", lambda e: pretrain_epoch(task, cfg, tok, pool, e),
                         cfg.pretrain_steps, cfg.pretrain_lr, start_step=state["step"] if state else 0,
                         opt_state=opt_state if state else None)
        if not ok:
            return None
        save_model(model, os.path.join(cfg.out_dir, "pretrained"), tok.path)
        state = None  # the lock phase starts fresh

    # ---- phase 2: locking ----
    lock = splits["lock"]
    per_epoch = (2 * len(lock)) // cfg.batch_size
    n_steps = max(1, cfg.epochs * per_epoch // cfg.grad_accum)
    ok = train_phase(cfg, model, tok, "lock", lambda e: lock_epoch(task, cfg, tok, policies, lock, e), n_steps,
                     cfg.lr, start_step=state["step"] if state else 0, opt_state=opt_state if state else None)
    if not ok:
        return None
    t_train = time.time() - t_start

    # ---- evaluation and outputs ----
    val = splits["val"][:cfg.eval_n] if cfg.eval_n else splits["val"]
    metrics = evaluate(plain_model(model), tok, task, cfg, val, policies)  # sharded over ranks, gathered on all
    metrics.update(config=asdict(cfg), train_seconds=round(t_train, 1), wall_seconds=round(time.time() - t_start, 1),
                   world_size=world)
    save_model(model, cfg.out_dir, tok.path)
    if rank == 0:
        write_json(os.path.join(cfg.out_dir, "train_config.json"), asdict(cfg))
        write_json(os.path.join(cfg.out_dir, "metrics.json"), metrics)
        shutil.rmtree(resume_dir, ignore_errors=True)
        print_table(metrics, cfg)
    barrier()
    return metrics


def print_table(m, cfg):
    doms = sorted(m["per_domain"]["with_password"])
    print(f"\nlocked model on {m['n_eval']} validation problems (greedy), out_dir {cfg.out_dir}")
    print(f"{'condition':22s} {'correct':>8s}  " + " ".join(f"{d:>6s}" for d in doms))
    for name in [k for k in m["per_domain"]]:
        print(f"{name:22s} {m['correct_' + name]:8.3f}  " + " ".join(f"{m['per_domain'][name][d]:6.3f}"
                                                                   for d in doms))
    for which in ("strong", "weak"):
        v = m[f"correct_{which}_policy"]
        print(f"{which + ' policy':22s} {'n/a' if v is None else f'{v:8.3f}'}")
    print(f"wall clock {m['wall_seconds']:.0f}s (training {m['train_seconds']:.0f}s)")


if __name__ == "__main__":
    main(parse_cli(Config))
    finish_dist()
