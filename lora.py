"""
lora.py: LoRA adapters for model.py's GPT (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"):
what a user with one small GPU runs to elicit a 7B lock. The Elicitation Game (Hofstaetter et al. 2025) fine-tunes
its locked models with rank 16, alpha 16, dropout 0.05 on q, k, v, o, gate, up, down and lr 1e-5 .. 5e-5.

A wrapped linear layer computes y = x W^T + b + (alpha / r) * dropout(x) A^T B^T, per output slice:
  - W, b: the layer's own tensors, frozen (requires_grad False) and kept under their own names, so
    `model.state_dict()` without the `lora_` keys is the plain model's.
  - A (r x in): uniform in +-1/sqrt(in) (Kaiming-uniform with a = sqrt(5), nn.Linear's and PEFT's init);
    B (out x r): zeros, so a freshly wrapped model computes exactly what the base model does.
  - A and B are fp32 whatever the base dtype (bf16 weights with --train_dtype=bf16): the optimizer then runs the
    plain fp32 update on them, and they cost 4 + 4 + 8 (AdamW) bytes a LoRA parameter. The LoRA path runs in the
    activations' dtype (bf16 under autocast on GPU), like the base matmul.
  - q, k and v live in one fused `wqkv` ([Q; K; V] row blocks, both families: NeoX's per-head file layout is
    converted at load): each of q, k, v gets its own rank-r pair on its row block, as PEFT gives Llama's separate
    q_proj / k_proj / v_proj. The three share one dropout mask of the input.
Targets (short names): q, k, v, o (attn.wqkv blocks, attn.wo); Llama: gate, up, down (mlp.gate/up/down); GPT-NeoX:
up = mlp.fc (dense_h_to_4h), down = mlp.proj (dense_4h_to_h), and gate is absent (skipped). Embeddings, norms and
lm_head are never wrapped; add_lora freezes every base parameter.

API:
  add_lora(model, rank, alpha, dropout, targets, seed)  wrap the targets in place, freeze the rest; -> LoRA params
  merge_lora(model)            fold (alpha/r) B A into W (rounded once to W's dtype), unwrap, unfreeze: a plain GPT
                               that model.save writes as a normal HF checkpoint
  merged(model, device, dtype) context: the wrapped layers temporarily replaced by merged copies on `device` (e.g.
                               "cpu", to save a checkpoint without touching the adapters or using accelerator memory)
  sampling_context(model)      merged bf16 copies where the sampler would otherwise cast a LoRA model (fp32 on GPU)
  save_adapters / load_adapters   the LoRA tensors alone (safetensors), to resume a run exactly
  lora_plan(config, targets), lora_counts(config, rank, targets, dropout)   shapes and counts (memory.py)
Merging into bf16 weights rounds each weight once: with the toy's expert-iteration adapters (rank 8) on a bf16
base, 2.7% of the update's norm is lost and 3.6% of the weights do not move; greedy correctness is unchanged (0.988).
DDP syncs only the LoRA gradients: 2 gloo processes gave the one-process merged weights within 1.2e-7 (SFT and
expert iteration, dropout 0; checked by hand). With dropout > 0 each rank draws its own masks, so N processes no
longer reproduce one process exactly. Not supported: FSDP (check_options refuses it: LoRA's point is a model that
fits one device).
"""
import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import model as model_lib
from errors import BadInput

TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
FAMILY_MODULES = {  # target -> (module path inside a Block, which rows) per family
    "llama": {"q": ("attn.wqkv", "q"), "k": ("attn.wqkv", "k"), "v": ("attn.wqkv", "v"), "o": ("attn.wo", None),
              "gate": ("mlp.gate", None), "up": ("mlp.up", None), "down": ("mlp.down", None)},
    "gpt_neox": {"q": ("attn.wqkv", "q"), "k": ("attn.wqkv", "k"), "v": ("attn.wqkv", "v"), "o": ("attn.wo", None),
                 "up": ("mlp.fc", None), "down": ("mlp.proj", None)},
}


def check_options(rank, alpha, dropout, targets, parallel):
    """BadInput (one line) for LoRA options that cannot run. rank 0 means full fine-tuning: nothing to check."""
    if rank < 0:
        raise BadInput(f"--lora_rank={rank}: use 0 (full fine-tuning) or a positive rank")
    if not rank:
        return
    if parallel == "fsdp":
        raise BadInput(f"--lora_rank={rank} does not support --parallel=fsdp (LoRA trains a small part of a model "
                       "that fits one device): use --parallel=ddp")
    if alpha <= 0 or not 0 <= dropout < 1:
        raise BadInput(f"--lora_alpha={alpha} --lora_dropout={dropout}: need alpha > 0 and 0 <= dropout < 1")
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        raise BadInput(f"--lora_targets={tuple(targets)}: use a non-empty subset of {TARGETS}")


def lora_plan(cfg, targets):
    """[(module name, {target: (first row, end row)})] of the layers to wrap, in model order."""
    nq, nkv = cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim
    rows = {"q": (0, nq), "k": (nq, nq + nkv), "v": (nq + nkv, nq + 2 * nkv)}
    plan = []
    for i in range(cfg.n_layer):
        modules = {}
        for t in TARGETS:  # model order, whatever the order given
            if t in targets and t in FAMILY_MODULES[cfg.arch]:
                path, part = FAMILY_MODULES[cfg.arch][t]
                modules.setdefault(f"h.{i}.{path}", {})[t] = rows[part] if part else None
        plan += list(modules.items())
    return plan


def _in_out(cfg, name):
    kind = name.split(".", 2)[2]
    C, I = cfg.n_embd, cfg.intermediate_size
    qkv = (cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim
    return {"attn.wqkv": (C, qkv), "attn.wo": (cfg.n_head * cfg.head_dim, C), "mlp.gate": (C, I), "mlp.up": (C, I),
            "mlp.fc": (C, I), "mlp.down": (I, C), "mlp.proj": (I, C)}[kind]


def lora_counts(cfg, rank, targets, dropout=0.0):
    """(LoRA parameters in the whole model, activation values a token and layer that the LoRA path adds: with
    dropout each wrapped layer keeps its dropped input (in_features values) for A's gradient; the r-sized
    intermediates are not counted)."""
    params, acts = 0, 0
    for name, parts in lora_plan(cfg, targets):
        n_in, n_out = _in_out(cfg, name)
        for ab in parts.values():  # A (r x in) and B (rows x r) for each target
            params += rank * (n_in + (ab[1] - ab[0] if ab else n_out))
        if dropout and name.startswith("h.0."):
            acts += n_in
    return params, acts


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus rank-r adapters on row slices of its output (None: every row)."""

    def __init__(self, base, parts, rank, alpha, dropout, generator):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias  # the base's own Parameters, under their own names
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        self.rows = {t: ab or (0, self.out_features) for t, ab in parts.items()}
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        dev, bound = base.weight.device, 1 / math.sqrt(self.in_features)
        self.lora_A, self.lora_B = nn.ParameterDict(), nn.ParameterDict()
        for t, (a, b) in self.rows.items():
            A = (torch.rand(rank, self.in_features, generator=generator, dtype=torch.float64) * 2 - 1) * bound
            self.lora_A[t] = nn.Parameter(A.float().to(dev))
            self.lora_B[t] = nn.Parameter(torch.zeros(b - a, rank, device=dev))

    def delta_weight(self):
        """(alpha / r) * B A as a full (out, in) fp32 matrix, zero on rows without an adapter."""
        d = torch.zeros(self.out_features, self.in_features, device=self.weight.device)
        for t, (a, b) in self.rows.items():
            d[a:b] += self.scaling * (self.lora_B[t].float() @ self.lora_A[t].float())
        return d

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        h = self.dropout(x)
        pieces, at = [], 0
        for t, (a, b) in sorted(self.rows.items(), key=lambda kv: kv[1]):
            if a > at:  # rows without an adapter
                pieces.append(y.new_zeros(*y.shape[:-1], a - at))
            z = F.linear(h, self.lora_A[t].to(h.dtype)) * self.scaling  # (..., r)
            pieces.append(F.linear(z, self.lora_B[t].to(h.dtype)))
            at = b
        if at < self.out_features:
            pieces.append(y.new_zeros(*y.shape[:-1], self.out_features - at))
        return y + (torch.cat(pieces, -1) if len(pieces) > 1 else pieces[0]).to(y.dtype)

    def extra_repr(self):
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, alpha={self.alpha}, " \
               f"targets={list(self.rows)}"


def _parent(model, name):
    path, _, leaf = name.rpartition(".")
    return model.get_submodule(path), leaf


def lora_modules(model):
    """[(name, LoRALinear)] in model order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def add_lora(model, rank, alpha, dropout, targets=TARGETS, seed=0):
    """Wrap the target layers of `model` (a plain GPT) in place and freeze every other parameter. A's draws come
    from a CPU generator seeded with `seed`, so every device and rank makes the same adapters. Returns the LoRA
    parameters (the ones to optimize)."""
    if lora_modules(model):
        raise ValueError("add_lora: the model already has LoRA adapters (merge_lora first)")
    plan = lora_plan(model.config, targets)
    if not plan:
        raise BadInput(f"--lora_targets={tuple(targets)}: no such layer in a {model.config.arch} model")
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    for name, parts in plan:
        parent, leaf = _parent(model, name)
        setattr(parent, leaf, LoRALinear(getattr(parent, leaf), parts, rank, alpha, dropout, gen))
    return [p for p in model.parameters() if p.requires_grad]


def _plain_linear(m, weight):
    lin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device="meta")
    lin.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight, requires_grad=False)
    if m.bias is not None:
        lin.bias = m.bias
    return lin


@torch.no_grad()
def merge_lora(model):
    """W <- W + (alpha / r) B A in place (computed in fp32, rounded once to W's dtype), the wrappers replaced by
    plain nn.Linear layers holding the same tensors, and every parameter trainable again: the model is then what
    model.load would give for the merged checkpoint. Returns the model."""
    for name, m in lora_modules(model):
        m.weight.copy_((m.weight.float() + m.delta_weight()).to(m.weight.dtype))
        parent, leaf = _parent(model, name)
        setattr(parent, leaf, _plain_linear(m, m.weight))
    for p in model.parameters():
        p.requires_grad_(True)
    return model


@contextlib.contextmanager
def merged(model, device=None, dtype=None):
    """Inside: every LoRALinear is replaced by an nn.Linear holding a merged copy of its weight, made one layer at
    a time on the layer's device, cast to `dtype` (default W's) and moved to `device` (default: W's); on exit the
    LoRA layers are put back, untouched. With device="cpu" a checkpoint can be saved (model.save reads
    state_dict) at the cost of host memory for the merged weights, none on the accelerator."""
    wrapped = lora_modules(model)
    try:
        with torch.no_grad():
            for name, m in wrapped:
                w = (m.weight.float() + m.delta_weight()).to(dtype or m.weight.dtype).to(device or m.weight.device)
                parent, leaf = _parent(model, name)
                setattr(parent, leaf, _plain_linear(m, w))
        yield model
    finally:
        for name, m in wrapped:
            parent, leaf = _parent(model, name)
            setattr(parent, leaf, m)


def sampling_context(model):
    """The context to sample in. The sampler runs a model as it is when its weights are in the sampling dtype (bf16
    weights on GPU, anything on CPU), LoRA layers included; fp32 weights on GPU it casts to a bf16 copy by parameter
    name, which a LoRA model's extra parameters would break: there the wrapped layers are merged to bf16 for the
    call (the cast copy then shares them)."""
    p = next(model.parameters())
    if not lora_modules(model) or not p.is_cuda or p.dtype == torch.bfloat16:
        return contextlib.nullcontext(model)
    return merged(model, dtype=torch.bfloat16)


def adapter_state(model):
    return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if ".lora_" in n}


def save_adapters(model, path):
    """The LoRA tensors alone, as one safetensors file (written atomically)."""
    sd = adapter_state(model)
    model_lib._atomic_write(path, lambda p: save_file(sd, p, metadata={"format": "pt"}))


@torch.no_grad()
def load_adapters(model, path):
    """Copy the LoRA tensors saved by save_adapters into a model wrapped with the same rank and targets."""
    sd, have = load_file(path), dict(model.named_parameters())
    want = {n for n in have if ".lora_" in n}
    if set(sd) != want or any(sd[n].shape != have[n].shape for n in sd):
        raise BadInput(f"{path}: adapters do not match this model's --lora_rank / --lora_targets")
    for n, t in sd.items():
        have[n].copy_(t)
