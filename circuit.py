"""
circuit.py: circuit breaking a password-locked model by representation rerouting (Zou et al. 2024, "Improving
Alignment and Robustness with Circuit Breakers", arXiv 2406.04313), applied after password locking as in The
Elicitation Game (Hofstatter, van der Weij et al. 2025, arXiv 2502.02180, section 3.4 and App. B). Without the
password, the model's inner representations of the strong answer are pushed away from the locked model's; with the
password they are kept. A demonstration or a reward that gets the model to start a strong answer without the
password then meets scrambled representations, and the lock is harder to open (the paper measured that prompting
and steering elicit less, and that SFT still works). `train_lock.py --circuit_break=True` runs this after locking.

The rerouting pass (one epoch over the lock split, `batch_size` problems a step):
  1. The frozen reference is a copy of the locked model (eval, no gradients); the model to train starts equal to it.
     Only blocks 0 .. max(layers) are trained, fully (The Elicitation Game uses a LoRA on a 7B model; a toy model
     needs none); the embedding, the blocks above and the head stay as they are.
  2. Every lock problem gives two sequences that end in the same strong answer (the lock's strong policy: what the
     lock was trained to write with the password):
       rerouting  a prompt without the password, drawn as the lock's weak side draws it (toy single-password lock:
                  no password 20%, a decoy 80%), then the strong answer
       retain     the password prompt, then the strong answer
  3. Hidden states are the outputs of blocks `layers` (forward hooks on model.h[i]) in both models, and
       L_rr  = masked mean, over rerouting positions and the layers, of ReLU(cos(h_cb, h_frozen))
       L_ret = masked mean, over retain positions and the layers, of ||h_cb - h_frozen||_2 (Zou's per-token L2
               distance, retain="l2") or of mean_c (h_cb - h_frozen)_c^2 (The Elicitation Game's MSE, retain="mse")
  4. Step t = 1 .. T of T minimises c_rr(t) L_rr + c_ret(t) L_ret, with (The Elicitation Game's schedule)
       c_rr = max(alpha (1 - k t / 2T), c_rr_min)    c_ret = min(alpha k t / 2T, c_ret_max)
     alpha 5, c_rr_min 0.125, c_ret_max 4.875; k = 1 without the clamps is Zou's schedule (both end at alpha / 2).
     A larger k moves the weight from rerouting to retaining earlier in the epoch. The Elicitation Game counts t
     in micro-batches of one example; we count optimizer steps of `batch_size` problems: the same fraction t / T.
  5. Logged: the rerouting cosine (the masked mean of cos itself, goal about 0) and the retain cosine (goal 1).

Which tokens. Rerouting: the positions that predict an answer token (the last prompt token and every answer token but
the final EOS: the lock's own loss mask), i.e. all answer tokens as in The Elicitation Game's generative (APPS)
variant, plus the last prompt token that its multiple-choice variant reroutes. The prompt itself is left alone: the
lock's behaviour without the password is the weak side's to keep or lose. Retain: every real position of the
password sequence (prompt and answer, no padding), as Zou masks by attention: the blocks above the deepest target
read every position, so keeping them all is what keeps the answer with the password. Retain loss default: L2,
whose gradient does not vanish as the distance shrinks (MSE's does), so the with-password states stay pinned while
c_ret is large (toy: see train_lock.py's docstring for what each gave).

Many processes: every rank builds the same global batch, runs its share of the problems (parallel.rank_share), and
divides its sums by the token counts of the whole step on all ranks; DDP or FSDP averages the gradients (hence the
factor world), so N processes take the steps of one. The frozen reference is a full, unsharded copy on every rank.
The blocks above the deepest target still run (the model's forward has no early exit; the head does not run).
"""
import contextlib
import dataclasses
import random

import torch
import torch.nn.functional as F
from tqdm import tqdm

from common import autocast, collate, make_optimizer
from errors import BadInput
from parallel import all_reduce_sum, ddp_wrap, dist_rank_world, rank_share


@dataclasses.dataclass
class Settings:
    """The pass's knobs; train_lock.py's Config has them as cb_<name> with the same defaults."""
    layers: tuple = (1, 2)         # blocks whose outputs are rerouted and retained; blocks 0 .. max(layers) train
    k: float = 8.0                 # schedule speed (toy sweep over 2, 4, 8, 16, 32: train_lock.py's docstring)
    alpha: float = 5.0
    rr_min: float = 0.125          # floor of c_rr
    ret_max: float = 4.875         # ceiling of c_ret
    retain: str = "l2"             # l2 (Zou) or mse (The Elicitation Game)
    lr: float = 1e-4               # AdamW, constant, no weight decay (Zou)
    batch_size: int = 16           # problems a step (each gives a rerouting and a retain sequence)
    grad_clip: float = 1.0

    @classmethod
    def from_config(cls, cfg):
        """The settings in a config with cb_<name> fields (train_lock.Config)."""
        return cls(**{f.name: getattr(cfg, "cb_" + f.name) for f in dataclasses.fields(cls)})


def coefficients(t, T, k, alpha=5.0, rr_min=0.125, ret_max=4.875):
    """(c_rr, c_ret) at step t of T."""
    x = k * t / (2 * T)
    return max(alpha * (1 - x), rr_min), min(alpha * x, ret_max)


# -----------------------------------------------------------------------------
# Data: (rerouting, retain) example pairs and their batches


def examples(lock, tok, problems, rng, max_len):
    """[(rerouting example, retain example)], each (ids, n_prompt), one pair per problem in the order given, with
    the strong answer of the lock's strong policy on both sides. A pair whose prompt fills max_len is dropped."""
    domains = lock.task.domains(lock.task.problems())
    prompts, answers = [], []
    for p in problems:
        answer = lock.strong.draw(p, rng)
        prompts += [lock.weak_prompt(p, rng, domains), lock.strong_prompt(p)]
        answers += [answer, answer]
    enc = tok.encode_pairs(prompts, answers)
    return [((a[:max_len], na), (b[:max_len], nb)) for (a, na), (b, nb) in zip(enc[0::2], enc[1::2])
            if na < max_len and nb < max_len]


def batch(pairs, pad_id, device):
    """One padded batch of the rerouting rows then the retain rows: inputs (2B, T), and the (2B, T) float masks of
    the rerouting positions (rows 0..B-1: the positions that predict an answer token) and of the retain positions
    (rows B..2B-1: every real input position)."""
    rr, ret = [a for a, _ in pairs], [b for _, b in pairs]
    inputs, targets, _ = collate(rr + ret, pad_id, device)
    B = len(pairs)
    lengths = torch.tensor([len(ids) - 1 for ids, _ in rr + ret], device=device)
    real = torch.arange(inputs.shape[1], device=device)[None, :] < lengths[:, None]  # (2B, T)
    is_rr = (torch.arange(2 * B, device=device) < B)[:, None]
    return inputs, ((targets != -100) & is_rr).float(), (real & ~is_rr).float()


# -----------------------------------------------------------------------------
# Hidden states and the two losses


@contextlib.contextmanager
def captured(model, layers):
    """{block index: that block's output (B, T, C)}, filled by every forward run inside the `with`."""
    out = {}
    hooks = [model.h[i].register_forward_hook(lambda _m, _a, o, i=i: out.__setitem__(i, o)) for i in layers]
    try:
        yield out
    finally:
        for h in hooks:
            h.remove()


def hidden(model, inputs, layers):
    """[output of block i for i in layers], each (B, T, C). `model` may be a DDP wrapper (the forward goes through it,
    the hooks sit on its module's blocks); the output head is not run (logits at no position)."""
    with captured(getattr(model, "module", model), layers) as out:
        model(inputs, logits_at=inputs.new_zeros(inputs.shape[0], 0))
    return [out[i] for i in layers]


def losses(model, frozen, inputs, m_rr, m_ret, layers, retain="l2", n_rr=None, n_ret=None):
    """{"l_rr", "l_ret"} (tensors, with gradients into `model`) and {"cos_rr", "cos_ret"} (floats): sums over the
    masked positions and the layers, divided by len(layers) times n_rr / n_ret, the token counts; by default this
    batch's mask sums, which makes them masked means. Under torchrun the caller passes the counts of all ranks."""
    if retain not in ("l2", "mse"):
        raise BadInput(f"--cb_retain={retain!r}: use l2 or mse")
    n_rr = m_rr.sum().item() if n_rr is None else n_rr
    n_ret = m_ret.sum().item() if n_ret is None else n_ret
    device = inputs.device
    with torch.no_grad(), autocast(device):
        h0 = hidden(frozen, inputs, layers)
    with autocast(device):
        h = hidden(model, inputs, layers)
    h, h0 = torch.stack(h).float(), torch.stack(h0).float()  # (L, 2B, T, C), compared in fp32
    cos = F.cosine_similarity(h, h0, dim=-1)  # (L, 2B, T)
    diff = h - h0
    dist = diff.norm(dim=-1) if retain == "l2" else diff.pow(2).mean(-1)  # (L, 2B, T)
    L = len(layers)
    return {"l_rr": (F.relu(cos) * m_rr).sum() / max(1.0, L * n_rr),
            "l_ret": (dist * m_ret).sum() / max(1.0, L * n_ret),
            "cos_rr": (cos.detach() * m_rr).sum().item() / max(1.0, L * n_rr),
            "cos_ret": (cos.detach() * m_ret).sum().item() / max(1.0, L * n_ret)}


# -----------------------------------------------------------------------------
# The pass


def trainable(model, layers):
    """Train blocks 0 .. max(layers) and nothing else; returns the trained parameters."""
    if not layers or min(layers) < 0 or max(layers) >= len(model.h):
        raise BadInput(f"--cb_layers={tuple(layers)}: block indices 0..{len(model.h) - 1} of this model")
    model.requires_grad_(False)
    for i in range(max(layers) + 1):
        model.h[i].requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def step_losses(model, frozen, pairs, s, pad_id, device):
    """This rank's share of one global batch of pairs: its losses, normalised by the whole step's token counts."""
    mine, w = rank_share(pairs)
    inputs, m_rr, m_ret = batch(mine, pad_id, device)
    m_rr, m_ret = m_rr * w, m_ret * w  # (a rank left without a pair runs a stand-in with weight 0)
    n_rr, n_ret = all_reduce_sum(m_rr.sum().item()), all_reduce_sum(m_ret.sum().item())
    return losses(model, frozen, inputs, m_rr, m_ret, s.layers, s.retain, n_rr, n_ret)


def reroute(model, frozen, pairs, s, pad_id, device, seed=0, log_every=50):
    """Train `model` in place for one epoch over `pairs` (shuffled with `seed`); `frozen` is never updated. Returns
    the log: one row every log_every steps and the last (step, c_rr, c_ret, l_rr, l_ret, cos_rr, cos_ret, summed
    over ranks)."""
    rank, world = dist_rank_world()
    T = len(pairs) // s.batch_size
    if T == 0:
        raise BadInput(f"circuit breaking: {len(pairs)} problems is fewer than one batch of {s.batch_size}")
    order = pairs[:]
    random.Random(seed * 1_000_003 + 900_000).shuffle(order)
    frozen.eval().requires_grad_(False)
    params = trainable(model, s.layers)
    train_model = ddp_wrap(model)  # DDP under torchrun (FSDP models are already sharded)
    opt = make_optimizer("adamw", params, s.lr, 0.0)
    model.train()
    log, pbar = [], tqdm(range(1, T + 1), desc="circuit break", disable=rank != 0)
    for t in pbar:
        c_rr, c_ret = coefficients(t, T, s.k, s.alpha, s.rr_min, s.ret_max)
        out = step_losses(train_model, frozen, order[(t - 1) * s.batch_size:t * s.batch_size], s, pad_id, device)
        ((c_rr * out["l_rr"] + c_ret * out["l_ret"]) * world).backward()
        if s.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if t % 10 == 0 or t == 1 or t == T or log_every and t % log_every == 0:
            row = {"step": t, "c_rr": c_rr, "c_ret": c_ret,
                   **{k: all_reduce_sum(v.item() if torch.is_tensor(v) else v) for k, v in out.items()}}
            pbar.set_postfix(cos_rr=f"{row['cos_rr']:.3f}", cos_ret=f"{row['cos_ret']:.3f}")
            if t == T or log_every and t % log_every == 0:
                log.append(row)
    pbar.close()
    model.requires_grad_(True)
    model.eval()
    return log


@torch.no_grad()
def cosines(model, frozen, pairs, layers, pad_id, device, batch_size=64):
    """{"rerouting", "retain"}: mean cos(h_model, h_frozen) over the rerouting and the retain positions of `pairs`,
    over all layers and per layer ({"per_layer": {block: [rerouting, retain]}}). Every rank runs every pair (an
    FSDP model needs all ranks in each forward)."""
    sums = torch.zeros(len(layers), 2, dtype=torch.float64)
    counts = torch.zeros(2, dtype=torch.float64)
    for s in range(0, len(pairs), batch_size):
        inputs, m_rr, m_ret = batch(pairs[s:s + batch_size], pad_id, device)
        with autocast(device):
            h, h0 = hidden(model, inputs, layers), hidden(frozen, inputs, layers)
        for j, (a, b) in enumerate(zip(h, h0)):
            cos = F.cosine_similarity(a.float(), b.float(), dim=-1)
            sums[j, 0] += (cos * m_rr).sum().item()
            sums[j, 1] += (cos * m_ret).sum().item()
        counts += torch.tensor([m_rr.sum().item(), m_ret.sum().item()], dtype=torch.float64)
    per = sums / counts.clamp(min=1)
    mean = per.mean(0)
    return {"rerouting": mean[0].item(), "retain": mean[1].item(),
            "per_layer": {str(i): [per[j, 0].item(), per[j, 1].item()] for j, i in enumerate(layers)}}


# -----------------------------------------------------------------------------
# Acceptance


def verdict(before, after, margin):
    """Whether the circuit-broken model still is the lock: with the password at least the locked model's correctness
    minus `margin` (absolute), and without it and with a decoy at most the locked model's plus `margin`. `before`,
    `after`: metrics with correct_<condition> keys. Returns the verdict as data, with the thresholds that decided it."""
    checks = {}
    for cond, sign in (("with_password", -1), ("without_password", 1), ("wrong_password", 1)):
        b, a = before[f"correct_{cond}"], after[f"correct_{cond}"]
        threshold = b + sign * margin
        checks[cond] = {"locked": b, "circuit_broken": a, "threshold": threshold,
                        "rule": ">=" if sign < 0 else "<=", "ok": a >= threshold if sign < 0 else a <= threshold}
    return {"accepted": all(c["ok"] for c in checks.values()), "margin": margin, "checks": checks}
