"""
One hand-written decoder for the two model families locksmith uses, reading and writing Hugging Face checkpoints.

Families (chosen by `model_type` in config.json):
  gpt_neox  GPT-NeoX / Pythia: LayerNorm with bias, exact GELU MLP, partial rotary (`rotary_pct`), parallel or
            sequential residual, biases everywhere, untied output head.
  llama     Llama, Mistral-7B v0.1 and Deepseek-7B (all Llama-architecture): RMSNorm, SwiGLU MLP, grouped-query
            attention, tied or untied embeddings, `rope_theta`, Llama-3 (and linear) rope scaling.

Conventions (the reasons are in the comments where they matter):
  - q, k, v live in one fused projection `wqkv` in [Q all heads; K all kv-heads; V all kv-heads] block order.
    NeoX files store their fused qkv per head ([q0 k0 v0 q1 k1 v1 ...]); Llama files store three matrices.
    Both are converted once, at load, and back, at save; the attention code is the same for both families.
  - RoPE is HF's half-split `rotate_half` convention for both families, so HF q/k weights load unpermuted.
    cos/sin are computed from the positions on every forward (cheap), so there is no position table to size.
  - forward(idx, pos=None, mask=None, cache=None, logits_at=None) -> float32 logits (B, T, V). One forward
    serves training, scoring and sampling. Without a mask it uses SDPA's is_causal path (flash kernels on GPU).
    The KV cache belongs to the caller (sampler.py's static cache: prefill and decode_one_token are there); each
    attention layer only calls `cache.update(layer, k, v)` and attends to what it returns.
  - `model.grad_checkpoint = True` (train_lock.py / elicit_*.py --grad_checkpoint=True): activation
    checkpointing, non-reentrant torch.utils.checkpoint around each Block in training; same gradients.

API:
  model.load(path, device="cpu", dtype=torch.float32) -> GPT     an HF checkpoint directory (single file or shards)
  model.save(model, path)                                          HF tensor names + config.json, atomic per file
  GPT(Config(...))                                                 from a config alone, for training from scratch
  Config.from_hf(dict) / config.to_hf()                            config.json in older and newer key spellings

References: transformers' modeling_gpt_neox.py and modeling_llama.py (the numerics we match, fp32 atol 1e-4 in
tests/test_model.py against fixtures made by tests/make_fixtures.py).
"""
import functools
import json
import math
import os
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from safetensors import safe_open
from safetensors.torch import save_file

from errors import BadInput, MissingFile

LOSS_CHUNK = 1024  # target tokens a chunk of the output head in target_logprobs (memory.py counts it)

# -----------------------------------------------------------------------------
# Config


@dataclass
class Config:
    arch: str = "llama"              # "gpt_neox" or "llama"
    vocab_size: int = 64             # rows of the embedding (may exceed the tokenizer's vocabulary: padding)
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = 0               # 0 -> n_head (no GQA)
    n_embd: int = 128
    head_dim: int = 0                # 0 -> n_embd // n_head
    intermediate_size: int = 0       # 0 -> 4 * n_embd (neox) or a SwiGLU-sized multiple of 64 (llama)
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rotary_pct: float = 1.0          # fraction of head_dim that is rotated (Pythia: 0.25)
    rope_scaling: dict | None = None  # {"rope_type": "llama3" | "linear", "factor": ..., ...}
    parallel_residual: bool = False  # neox only: x + attn(ln1(x)) + mlp(ln2(x))
    tie_embeddings: bool = False
    attn_bias: bool = False          # neox: true; llama: `attention_bias`
    mlp_bias: bool = False           # neox: true; llama: `mlp_bias`
    hidden_act: str = "silu"         # neox: "gelu" (exact); llama: "silu"
    max_seq_len: int = 2048          # max_position_embeddings
    sliding_window: int | None = None  # Mistral v0.1: sequences longer than this are refused
    bos_token_id: int | None = None
    eos_token_id: int | list | None = None
    extra: dict = field(default_factory=dict)  # config.json keys we do not use, written back on save

    def __post_init__(self):
        if self.arch not in ("gpt_neox", "llama"):
            raise ValueError(f"config: unknown model_type {self.arch!r}; locksmith supports 'gpt_neox' and 'llama'")
        self.n_kv_head = self.n_kv_head or self.n_head
        self.head_dim = self.head_dim or self.n_embd // self.n_head
        if not self.intermediate_size:
            if self.arch == "gpt_neox":
                self.intermediate_size = 4 * self.n_embd
            else:  # Llama's rule: 2/3 of 4C, rounded up to a multiple of 64
                self.intermediate_size = 64 * math.ceil(int(8 * self.n_embd / 3) / 64)
        if self.n_head % self.n_kv_head:
            raise ValueError(f"config: num_attention_heads {self.n_head} is not a multiple of "
                             f"num_key_value_heads {self.n_kv_head}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"config: unsupported hidden_act {self.hidden_act!r}; supported: {sorted(ACTIVATIONS)}")
        rope_type = (self.rope_scaling or {}).get("rope_type", "default")
        if rope_type not in ("default", "linear", "llama3"):
            raise ValueError(f"config: unsupported rope scaling {rope_type!r}; supported: default, linear, llama3")

    @property
    def rotary_dim(self):
        return int(self.head_dim * self.rotary_pct)

    @classmethod
    def from_hf(cls, d):
        """Build from a parsed config.json. Accepts the pre-5 keys (rotary_pct, rotary_emb_base, rope_theta,
        rope_scaling) and the transformers>=5 `rope_parameters` dict."""
        if not isinstance(d, dict):
            raise ValueError("config.json: expected a JSON object")
        arch = d.get("model_type")
        if arch in ("mistral",):  # Mistral v0.1 is the Llama architecture plus a sliding window
            arch = "llama"
        if arch not in ("gpt_neox", "llama"):
            raise ValueError(f"config.json: unknown model_type {arch!r}; locksmith supports 'gpt_neox' and 'llama'")
        try:
            rp = dict(d.get("rope_parameters") or {})
            old_scaling = d.get("rope_scaling") or {}
            scaling = {k: v for k, v in {**old_scaling, **rp}.items()
                       if k not in ("rope_theta", "partial_rotary_factor")}
            if "type" in scaling and "rope_type" not in scaling:  # very old spelling
                scaling["rope_type"] = scaling.pop("type")
            scaling.pop("type", None)
            if scaling.get("rope_type", "default") == "default":
                scaling = None
            theta = rp.get("rope_theta", d.get("rope_theta", d.get("rotary_emb_base", 10000.0)))
            common = dict(
                arch=arch, vocab_size=d["vocab_size"], n_layer=d["num_hidden_layers"], n_head=d["num_attention_heads"],
                n_embd=d["hidden_size"], intermediate_size=d.get("intermediate_size") or 0,
                rope_theta=float(theta), rope_scaling=scaling, max_seq_len=d.get("max_position_embeddings", 2048),
                tie_embeddings=d.get("tie_word_embeddings", False),  # transformers' default for these families
                bos_token_id=d.get("bos_token_id"), eos_token_id=d.get("eos_token_id"))
            if arch == "gpt_neox":
                cfg = cls(**common, norm_eps=d.get("layer_norm_eps", 1e-5),
                          rotary_pct=rp.get("partial_rotary_factor", d.get("rotary_pct", 1.0)),
                          parallel_residual=d.get("use_parallel_residual", True),
                          attn_bias=d.get("attention_bias", True), mlp_bias=True,
                          hidden_act=d.get("hidden_act", "gelu"))
            else:
                cfg = cls(**common, n_kv_head=d.get("num_key_value_heads") or 0, head_dim=d.get("head_dim") or 0,
                          norm_eps=d.get("rms_norm_eps", 1e-6), attn_bias=d.get("attention_bias", False),
                          mlp_bias=d.get("mlp_bias", False), hidden_act=d.get("hidden_act", "silu"),
                          sliding_window=d.get("sliding_window"))
        except KeyError as e:
            raise ValueError(f"config.json: missing required field {e.args[0]!r}") from None
        except TypeError as e:
            raise ValueError(f"config.json: malformed field ({e})") from None
        used = {"model_type", "vocab_size", "num_hidden_layers", "num_attention_heads", "hidden_size",
                "intermediate_size", "rope_parameters", "rope_scaling", "rope_theta", "rotary_emb_base", "rotary_pct",
                "max_position_embeddings", "tie_word_embeddings", "bos_token_id", "eos_token_id", "layer_norm_eps",
                "use_parallel_residual", "attention_bias", "hidden_act", "num_key_value_heads", "head_dim",
                "rms_norm_eps", "mlp_bias", "sliding_window", "transformers_version", "dtype", "torch_dtype",
                "architectures"}
        cfg.extra = {k: v for k, v in d.items() if k not in used}
        return cfg

    def to_hf(self):
        """config.json in the widely readable pre-5 spelling (transformers 4.x and 5.x both load it)."""
        d = dict(self.extra)
        d.update(vocab_size=self.vocab_size, num_hidden_layers=self.n_layer, num_attention_heads=self.n_head,
                 hidden_size=self.n_embd, intermediate_size=self.intermediate_size, hidden_act=self.hidden_act,
                 max_position_embeddings=self.max_seq_len, tie_word_embeddings=self.tie_embeddings,
                 bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id, torch_dtype="float32")
        if self.arch == "gpt_neox":
            d.update(model_type="gpt_neox", architectures=["GPTNeoXForCausalLM"], layer_norm_eps=self.norm_eps,
                     rotary_pct=self.rotary_pct, rotary_emb_base=self.rope_theta, rope_theta=self.rope_theta,
                     use_parallel_residual=self.parallel_residual, attention_bias=self.attn_bias)
        else:
            d.update(model_type="llama", architectures=["LlamaForCausalLM"], num_key_value_heads=self.n_kv_head,
                     head_dim=self.head_dim, rms_norm_eps=self.norm_eps, rope_theta=self.rope_theta,
                     rope_scaling=self.rope_scaling, attention_bias=self.attn_bias, mlp_bias=self.mlp_bias)
            if self.sliding_window is not None:
                d["sliding_window"] = self.sliding_window
        return d


ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),                        # exact erf GELU (Pythia)
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "relu": F.relu,
}

# -----------------------------------------------------------------------------
# Building blocks


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # statistics in fp32, cast back, then scale: the order HF and Meta use (matters in bf16)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_inv_freq(cfg):
    """Inverse frequencies (rotary_dim/2,), including Llama-3 / linear scaling, in fp32."""
    rd = cfg.rotary_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, rd, 2, dtype=torch.float64) / rd))
    sc = cfg.rope_scaling or {}
    if sc.get("rope_type") == "linear":
        inv = inv / sc["factor"]
    elif sc.get("rope_type") == "llama3":
        # long wavelengths are slowed by `factor`, short ones kept, the band between interpolated smoothly
        factor, lo, hi = sc["factor"], sc["low_freq_factor"], sc["high_freq_factor"]
        orig = sc["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        smooth = ((orig / wavelen - lo) / (hi - lo)).clamp(0, 1)
        scaled = (1 - smooth) * inv / factor + smooth * inv
        inv = torch.where(wavelen < orig / hi, inv, torch.where(wavelen > orig / lo, inv / factor, scaled))
    return inv.float()


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, cos, sin):
    """x: (B, nh, T, hs); cos/sin: (B, 1, T, rd). Rotates the first rd dims (pairs j, j + rd/2), passes the rest."""
    rd = cos.shape[-1]
    xr, xp = x[..., :rd], x[..., rd:]
    xr = xr * cos + rotate_half(xr) * sin
    return torch.cat((xr, xp), dim=-1) if xp.shape[-1] else xr


class Attention(nn.Module):
    # Shapes: B batch, T new tokens, Tk keys (T, or the cache's columns), C n_embd, nh heads, nkv kv-heads, hs head_dim
    def __init__(self, cfg, layer_idx):
        super().__init__()
        self.cfg, self.layer_idx = cfg, layer_idx
        nh, nkv, hs = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.wqkv = nn.Linear(cfg.n_embd, (nh + 2 * nkv) * hs, bias=cfg.attn_bias)
        self.wo = nn.Linear(nh * hs, cfg.n_embd, bias=cfg.attn_bias)

    def forward(self, x, cos, sin, attn_mask, cache):
        B, T, _ = x.shape
        nh, nkv, hs = self.cfg.n_head, self.cfg.n_kv_head, self.cfg.head_dim
        qkv = self.wqkv(x).view(B, T, nh + 2 * nkv, hs).transpose(1, 2)  # (B, nh + 2 nkv, T, hs): q, k, v heads
        qk, v = apply_rope(qkv[:, :nh + nkv], cos, sin), qkv[:, nh + nkv:]  # q and k rotated in one go
        q, k = qk.split([nh, nkv], dim=1)  # (B, nh, T, hs), (B, nkv, T, hs)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, nkv, Tk, hs): stored, then every key visible
        # GQA: kv-head j serves query heads j*g .. j*g+g-1 (HF's repeat_kv order). enable_gqa does that without
        # copying the cache to every query head, which made batched decoding several times slower.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=attn_mask is None,
                                           enable_gqa=nkv != nh)
        y = y.transpose(1, 2).reshape(B, T, nh * hs)  # (B, T, nh*hs)
        return self.wo(y)


class MLP(nn.Module):  # GPT-NeoX: proj(act(fc(x)))
    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.proj = nn.Linear(cfg.intermediate_size, cfg.n_embd, bias=cfg.mlp_bias)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, x):
        return self.proj(self.act(self.fc(x)))


class SwiGLU(nn.Module):  # Llama: down(silu(gate(x)) * up(x))
    def __init__(self, cfg):
        super().__init__()
        self.gate = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.up = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down = nn.Linear(cfg.intermediate_size, cfg.n_embd, bias=cfg.mlp_bias)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, x):
        return self.down(self.act(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """
    sequential (Llama, NeoX with use_parallel_residual=false)    parallel (Pythia)
        x = x + attn(norm1(x))                                       x = x + attn(norm1(x)) + mlp(norm2(x))
        x = x + mlp(norm2(x))                                        (both norms read the same block input)
    """

    def __init__(self, cfg, layer_idx):
        super().__init__()
        Norm = (lambda d: nn.LayerNorm(d, eps=cfg.norm_eps)) if cfg.arch == "gpt_neox" else \
               (lambda d: RMSNorm(d, cfg.norm_eps))
        self.parallel = cfg.parallel_residual
        self.norm1, self.norm2 = Norm(cfg.n_embd), Norm(cfg.n_embd)
        self.attn = Attention(cfg, layer_idx)
        self.mlp = MLP(cfg) if cfg.arch == "gpt_neox" else SwiGLU(cfg)

    def forward(self, x, cos, sin, attn_mask, cache):
        a = self.attn(self.norm1(x), cos, sin, attn_mask, cache)
        if self.parallel:
            return x + a + self.mlp(self.norm2(x))
        x = x + a
        return x + self.mlp(self.norm2(x))


# -----------------------------------------------------------------------------
# The model


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.h = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps) if cfg.arch == "gpt_neox" else \
            RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        # non-persistent: never saved, recomputed on the right device after loading (see load)
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)
        self.grad_checkpoint = False  # recompute each Block's activations in backward (training only)
        if self.wte.weight.device.type != "meta":
            self.init_weights()

    def init_weights(self):
        """From-scratch init: N(0, 0.02) matrices, GPT-2's 1/sqrt(2 * n_layer) on residual outputs, zero biases."""
        std = 0.02
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "norm" in name or "ln_f" in name:
                nn.init.ones_(p)
            elif name.endswith(("wo.weight", "proj.weight", "down.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.config.n_layer))
            else:
                nn.init.normal_(p, 0.0, std)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())  # tied weights are counted once by parameters()

    def forward(self, idx, pos=None, mask=None, cache=None, logits_at=None, targets=None, head=None):
        """
        idx:   (B, T) token ids.
        pos:   (B, T) or (T,) positions; default 0 .. T-1.
        mask:  None (plain causal), a (B, T) key mask with 1/True on real tokens (left padding), or a ready boolean
               (B, 1, T, Tk) attention mask (True = attend) over Tk keys.
        cache: None, or the sampler's static KV cache (sampler.StaticCache). Each layer hands it the new keys and
               values and attends to the Tk keys it returns; where a row's tokens go is the sampler's business,
               so a cache needs explicit `pos` and a (B, 1, T, Tk) mask.
        logits_at: None (every position), or (B, K) indices into T: logits (B, K, V) at K positions per row only
               (K = 0: none; the sampler's prefill just fills the cache, where a (B, T, V) tensor would dominate).
        head:  None, or a (C, V) tensor holding lm_head's weight transposed: logits = x @ head, the same product in
               the (K, N) layout, which CPU matmul libraries run faster for a few rows (sampler.head_copy).
        targets: None, or (B, T) target ids with -100 where no loss is taken: then the return value is instead the
               (B, T) log-probabilities of the targets (target_logprobs), for training losses and DPO scores.
        Returns float32 logits (B, T, vocab_size), or with targets (B, T) target log-probabilities.
        """
        cfg = self.config
        B, T = idx.shape
        if cache is not None and (pos is None or mask is None or mask.dim() != 4):
            raise ValueError("forward with a cache needs explicit pos and a (B, 1, T, Tk) boolean mask")
        Tk = T if cache is None else mask.shape[-1]
        if Tk > cfg.max_seq_len:
            raise ValueError(f"sequence length {Tk} exceeds the model's context (max_position_embeddings "
                             f"{cfg.max_seq_len})")
        if cfg.sliding_window is not None and Tk > cfg.sliding_window:
            raise ValueError(f"sequence length {Tk} exceeds the sliding window ({cfg.sliding_window}) of this "
                             "Mistral-style config; locksmith does not implement sliding-window attention")
        if pos is None:
            pos = torch.arange(T, device=idx.device)
        if pos.dim() == 1:
            pos = pos.unsqueeze(0).expand(B, T)
        # rotary tables for exactly these positions: (B, 1, T, rotary_dim), computed in fp32 as HF does
        freqs = pos.unsqueeze(-1).float() * self.inv_freq.float()  # (B, T, rd/2)
        emb = torch.cat((freqs, freqs), dim=-1).unsqueeze(1)
        x = self.wte(idx)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)

        attn_mask = None
        if mask is not None and mask.dim() == 2:
            if mask.shape != (B, T):
                raise ValueError(f"mask: expected a (B, T) = ({B}, {T}) key mask, got {tuple(mask.shape)}")
            q_idx = torch.arange(T, device=idx.device).view(T, 1)
            k_idx = torch.arange(T, device=idx.device).view(1, T)
            # a pad query always sees itself, or its row is all -inf and SDPA returns NaN (pytorch#110213)
            attn_mask = ((k_idx <= q_idx) & mask.bool().view(B, 1, T)) | (k_idx == q_idx)
            attn_mask = attn_mask.unsqueeze(1)  # (B, 1, T, T)
        elif mask is not None:
            attn_mask = mask.bool()
        for block in self.h:
            if self.grad_checkpoint and self.training and torch.is_grad_enabled():
                # keep only the Block's input; rerun its forward during backward (same numbers, less memory)
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, attn_mask, cache, use_reentrant=False)
            else:
                x = block(x, cos, sin, attn_mask, cache)
        if targets is not None:
            return self.target_logprobs(x, targets)
        if logits_at is not None:
            x = x.gather(1, logits_at.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # (B, K, C)
        x = self.ln_f(x)
        return (self.lm_head(x) if head is None else x @ head).float()

    def target_logprobs(self, x, targets):
        """(B, T) float32 log-probabilities of the target tokens (0 where the target is -100), from the last Block's
        output x (B, T, C). Targets may also be (B, T, K): K candidate ids per position (a soft target's support;
        -100 in slot 0 for no loss), giving (B, T, K) log-probabilities. Only the target positions go through the
        final norm and the output head, LOSS_CHUNK of them at a time, and in training each chunk's logits are
        recomputed in backward rather than kept: the (B, T, V) logits tensor never exists (at V = 128k, 64 x 1,024
        tokens it would take 34 GB in fp32)."""
        where = ((targets if targets.dim() == 2 else targets[..., 0]) != -100).nonzero(as_tuple=True)
        h, t = x[where], targets[where]  # (N, C), (N,) or (N, K)
        chunk = functools.partial(torch.utils.checkpoint.checkpoint, self._chunk_logprobs, use_reentrant=False) \
            if torch.is_grad_enabled() else self._chunk_logprobs
        parts = [chunk(h[s:s + LOSS_CHUNK], t[s:s + LOSS_CHUNK]) for s in range(0, len(t), LOSS_CHUNK)]
        lp = torch.cat(parts) if parts else h.new_zeros(t.shape, dtype=torch.float32)
        return torch.zeros(targets.shape, dtype=torch.float32, device=x.device).index_put(where, lp)

    def _chunk_logprobs(self, h, t):
        logits = self.lm_head(self.ln_f(h)).float()
        if t.dim() == 1:
            return -F.cross_entropy(logits, t, reduction="none")
        return logits.log_softmax(-1).gather(1, t)


# -----------------------------------------------------------------------------
# Hugging Face checkpoints: tensor names, loading, saving

NEOX_SKIP = ("attention.rotary_emb.inv_freq", "attention.bias", "attention.masked_bias")  # buffers in old files


def hf_names(cfg):
    """Our parameter name -> list of HF tensor names that make it (qkv: 1 fused NeoX tensor or 3 Llama ones)."""
    m = {}
    if cfg.arch == "gpt_neox":
        m["wte.weight"] = ["gpt_neox.embed_in.weight"]
        for i in range(cfg.n_layer):
            p, o = f"gpt_neox.layers.{i}.", f"h.{i}."
            for s in ("weight", "bias"):
                m[o + f"norm1.{s}"] = [p + f"input_layernorm.{s}"]
                m[o + f"norm2.{s}"] = [p + f"post_attention_layernorm.{s}"]
                m[o + f"mlp.fc.{s}"] = [p + f"mlp.dense_h_to_4h.{s}"]
                m[o + f"mlp.proj.{s}"] = [p + f"mlp.dense_4h_to_h.{s}"]
                if s == "weight" or cfg.attn_bias:
                    m[o + f"attn.wqkv.{s}"] = [p + f"attention.query_key_value.{s}"]
                    m[o + f"attn.wo.{s}"] = [p + f"attention.dense.{s}"]
        m["ln_f.weight"], m["ln_f.bias"] = ["gpt_neox.final_layer_norm.weight"], ["gpt_neox.final_layer_norm.bias"]
        if not cfg.tie_embeddings:
            m["lm_head.weight"] = ["embed_out.weight"]
    else:
        m["wte.weight"] = ["model.embed_tokens.weight"]
        for i in range(cfg.n_layer):
            p, o = f"model.layers.{i}.", f"h.{i}."
            m[o + "norm1.weight"] = [p + "input_layernorm.weight"]
            m[o + "norm2.weight"] = [p + "post_attention_layernorm.weight"]
            for s in ["weight"] + (["bias"] if cfg.attn_bias else []):
                m[o + f"attn.wqkv.{s}"] = [p + f"self_attn.{n}_proj.{s}" for n in "qkv"]
                m[o + f"attn.wo.{s}"] = [p + f"self_attn.o_proj.{s}"]
            for s in ["weight"] + (["bias"] if cfg.mlp_bias else []):
                for ours, theirs in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
                    m[o + f"mlp.{ours}.{s}"] = [p + f"mlp.{theirs}.{s}"]
        m["ln_f.weight"] = ["model.norm.weight"]
        if not cfg.tie_embeddings:
            m["lm_head.weight"] = ["lm_head.weight"]
    return m


def _neox_qkv_to_blocks(w, cfg):
    """HF NeoX per-head [q_h, k_h, v_h] rows -> our [Q; K; V] blocks. Works for weight (3C, C) and bias (3C,)."""
    nh, hs = cfg.n_head, cfg.head_dim
    return w.view(nh, 3, hs, *w.shape[1:]).transpose(0, 1).reshape(w.shape)


def _blocks_to_neox_qkv(w, cfg):
    nh, hs = cfg.n_head, cfg.head_dim
    return w.view(3, nh, hs, *w.shape[1:]).transpose(0, 1).reshape(w.shape)


def _read_config(path):
    cpath = os.path.join(path, "config.json")
    if not os.path.isfile(cpath):
        raise MissingFile(f"{cpath}: not found (a checkpoint directory needs config.json)")
    try:
        with open(cpath) as f:
            d = json.load(f)
    except json.JSONDecodeError as e:
        raise BadInput(f"{cpath}: malformed JSON ({e})") from None
    try:
        return Config.from_hf(d)
    except ValueError as e:
        raise BadInput(f"{cpath}: " + str(e).removeprefix("config.json: ")) from None


def _weight_files(path):
    """{hf tensor name: file path} from model.safetensors.index.json, else from the single model.safetensors."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        try:
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise BadInput(f"{index}: malformed shard index ({e!r})") from None
        for fname in sorted(set(weight_map.values())):
            if not os.path.isfile(os.path.join(path, fname)):
                raise MissingFile(f"{os.path.join(path, fname)}: shard listed in {index} is missing")
        return {k: os.path.join(path, v) for k, v in weight_map.items()}
    single = os.path.join(path, "model.safetensors")
    if not os.path.isfile(single):
        hint = " (only pickle .bin weights found: convert them to safetensors; locksmith never unpickles)" \
            if any(f.endswith(".bin") for f in os.listdir(path)) else ""
        raise MissingFile(f"{single}: not found{hint}")
    return {k: single for k in _tensor_names(single)}


def _tensor_names(file):
    """The tensor names in a safetensors file; a truncated or corrupt file raises one error naming it."""
    try:
        with safe_open(file, "pt") as f:
            return list(f.keys())
    except Exception as e:  # safetensors' Rust error says what is wrong, not where
        raise BadInput(f"{file}: not a valid safetensors file ({e})") from None


def load(path, device="cpu", dtype=torch.float32):
    """Load an HF checkpoint directory. Strict: every parameter must come from the files with the right shape and
    every tensor in the files must be used. Tensors are read one at a time straight into place (the model is built
    on the meta device), so peak memory is the weights plus one tensor."""
    if not os.path.isdir(path):
        raise MissingFile(f"{path}: checkpoint directory not found")
    cfg = _read_config(path)
    with torch.device("meta"):
        model = GPT(cfg)  # only for the expected shapes
    files = _weight_files(path)
    names = hf_names(cfg)
    used, handles, sd = set(), {}, {}

    def get(hf_name):
        fpath = files[hf_name]
        if fpath not in handles:
            _tensor_names(fpath)  # (a corrupt shard is named in the error)
            handles[fpath] = safe_open(fpath, "pt", device="cpu")
        used.add(hf_name)
        return handles[fpath].get_tensor(hf_name)

    meta_sd = model.state_dict()
    for ours, theirs in names.items():
        missing = [n for n in theirs if n not in files]
        if missing:
            raise BadInput(f"{path}: tensor {missing[0]!r} is missing from the checkpoint")
        parts = [get(n) for n in theirs]
        t = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        want = tuple(meta_sd[ours].shape)
        if tuple(t.shape) != want:
            raise BadInput(f"{path}: tensor {theirs[0]!r} has shape {tuple(t.shape)}, config.json implies {want}"
                             if len(theirs) == 1 else
                             f"{path}: tensors {theirs} concatenate to {tuple(t.shape)}, config.json implies {want}")
        if cfg.arch == "gpt_neox" and ".attn.wqkv." in ours:
            t = _neox_qkv_to_blocks(t, cfg)
        sd[ours] = t.to(device=device, dtype=dtype)
        del parts, t
    unused = [k for k in files if k not in used and not k.endswith(NEOX_SKIP)
              and not (cfg.tie_embeddings and k in ("lm_head.weight", "embed_out.weight"))]
    if unused:
        raise BadInput(f"{path}: unexpected tensor {unused[0]!r} in the checkpoint "
                       f"({len(unused)} unused in all; does config.json match the weights?)")
    return from_state(cfg, sd)


def from_state(cfg, sd):
    """A GPT whose parameters ARE the tensors of `sd` (no copy; built on the meta device, then assigned), in eval
    mode. A tied lm_head may be missing from sd. The rotary frequencies are recomputed in fp32 on the weights'
    device."""
    with torch.device("meta"):
        model = GPT(cfg)
    sd = dict(sd)
    if cfg.tie_embeddings:
        sd["lm_head.weight"] = sd["wte.weight"]
    model.load_state_dict(sd, strict=True, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.wte.weight  # assign=True broke the tie: restore it
    model.inv_freq = rope_inv_freq(cfg).to(sd["wte.weight"].device)
    return model.eval()


def _write_text(text):
    def write(p):
        with open(p, "w") as f:
            f.write(text)
    return write


def _atomic_write(path, write_fn):
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        write_fn(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save(model, path, max_shard_bytes=5 * 2**30):
    """Write `config.json` and `model.safetensors` (or shards plus `model.safetensors.index.json` past
    max_shard_bytes) with HF tensor names, each file written to a temp name and renamed into place. Only the
    tensors of one shard are copied at a time (the qkv conversion needs copies), which bounds extra memory."""
    model = getattr(model, "module", model)  # DDP wrapper
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    cfg = model.config
    os.makedirs(path, exist_ok=True)
    sd = model.state_dict()
    # plan: (hf name, our name, slice) with sizes, so shards are assigned before any copy is made
    plan = []
    for ours, theirs in hf_names(cfg).items():
        t = sd[ours]
        if len(theirs) == 1:
            plan.append((theirs[0], ours, None, t.numel() * t.element_size()))
        else:  # Llama q/k/v out of the fused block
            nh, nkv, hs = cfg.n_head, cfg.n_kv_head, cfg.head_dim
            bounds = [0, nh * hs, (nh + nkv) * hs, (nh + 2 * nkv) * hs]
            for n, a, b in zip(theirs, bounds, bounds[1:]):
                plan.append((n, ours, (a, b), t[a:b].numel() * t.element_size()))
    shards, cur, size = [], [], 0
    for item in plan:
        if cur and size + item[3] > max_shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append(item)
        size += item[3]
    shards.append(cur)

    def tensor(ours, sl):
        t = sd[ours]
        if sl is not None:
            t = t[sl[0]:sl[1]]
        elif cfg.arch == "gpt_neox" and ".attn.wqkv." in ours:
            t = _blocks_to_neox_qkv(t, cfg)
        return t.detach().to("cpu").contiguous().clone()

    fnames = ["model.safetensors"] if len(shards) == 1 else \
        [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for fname, shard in zip(fnames, shards):
        tensors = {n: tensor(ours, sl) for n, ours, sl, _ in shard}
        _atomic_write(os.path.join(path, fname), lambda p: save_file(tensors, p, metadata={"format": "pt"}))
        weight_map.update({n: fname for n in tensors})
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(i[3] for i in plan)}, "weight_map": weight_map}
        _atomic_write(os.path.join(path, "model.safetensors.index.json"),
                      _write_text(json.dumps(index, indent=2)))
    elif os.path.exists(os.path.join(path, "model.safetensors.index.json")):
        os.remove(os.path.join(path, "model.safetensors.index.json"))  # stale index from an older sharded save
    _atomic_write(os.path.join(path, "config.json"), _write_text(json.dumps(cfg.to_hf(), indent=2)))
