"""
Make the parity fixtures in tests/fixtures/ with Hugging Face transformers (run once; CI only reads the result).

    pip install transformers      # not a locksmith dependency; fixtures were made with transformers 5.23, torch 2.13
    python tests/make_fixtures.py

Each fixture is a tiny random HF checkpoint directory (model.safetensors + config.json exactly as transformers writes
them, some rewritten to the older key spelling) plus expected.safetensors with:
  ids     (2, 24) int64    a fixed input batch
  logits  (2, 24, V) fp32  transformers' logits for it
  greedy_prompt_{i}, greedy_{i}: two prompts of different lengths and transformers' 12 greedy tokens for each.
Weights are re-initialised with std 1/sqrt(fan_in): at HF's default std 0.02 the logits are tiny and a rotary
permutation bug moves them by ~5e-3, under a loose tolerance; at this scale the same bug moves them by ~1.
"""
import json
import math
import os
import shutil

import torch
import transformers as T
from safetensors.torch import save_file

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
V = 96
common = dict(vocab_size=V, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
              bos_token_id=1, eos_token_id=2)
FIXTURES = {
    # name: (HF class, config, rewrite config.json to the pre-transformers-5 key spelling?)
    "neox_rot25_parallel": (T.GPTNeoXForCausalLM, T.GPTNeoXConfig(**common, intermediate_size=256, rotary_pct=0.25,
                                                                  use_parallel_residual=True), False),
    "neox_rot100_sequential": (T.GPTNeoXForCausalLM, T.GPTNeoXConfig(**common, intermediate_size=256, rotary_pct=1.0,
                                                                     use_parallel_residual=False), True),
    "neox_rot25_sequential": (T.GPTNeoXForCausalLM, T.GPTNeoXConfig(**common, intermediate_size=256, rotary_pct=0.25,
                                                                    rotary_emb_base=500.0,
                                                                    use_parallel_residual=False), True),
    "llama_gqa_untied": (T.LlamaForCausalLM, T.LlamaConfig(**common, intermediate_size=128, num_key_value_heads=2,
                                                           tie_word_embeddings=False), False),
    "llama_gqa_tied_llama3": (T.LlamaForCausalLM, T.LlamaConfig(
        **common, intermediate_size=128, num_key_value_heads=1, tie_word_embeddings=True, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 16}), True),
    "llama_mha_headdim_tied": (T.LlamaForCausalLM, T.LlamaConfig(**common, intermediate_size=96, head_dim=8,
                                                                 tie_word_embeddings=True), False),
    "mistral_gqa": (T.MistralForCausalLM, T.MistralConfig(**common, intermediate_size=128, num_key_value_heads=2,
                                                          sliding_window=48), False),
}


def to_old_spelling(d):
    rp = d.pop("rope_parameters", None) or {}
    if d["model_type"] == "gpt_neox":
        d["rotary_pct"] = rp.get("partial_rotary_factor", 1.0)
        d["rotary_emb_base"] = rp.get("rope_theta", 10000.0)
    else:
        d["rope_theta"] = rp.get("rope_theta", 10000.0)
        scaling = {k: v for k, v in rp.items() if k not in ("rope_theta", "partial_rotary_factor")}
        d["rope_scaling"] = scaling if scaling.get("rope_type", "default") != "default" else None
    return d


def main():
    torch.manual_seed(0)
    for name, (cls, cfg, old) in FIXTURES.items():
        model = cls(cfg).eval()
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if p.dim() == 2:
                    p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]))
                elif "bias" in pname:
                    p.normal_(0.0, 0.1)
                else:  # norm weights around 1
                    p.normal_(1.0, 0.1)
        out = os.path.join(HERE, name)
        shutil.rmtree(out, ignore_errors=True)
        model.save_pretrained(out)
        for extra in ("generation_config.json",):
            if os.path.exists(os.path.join(out, extra)):
                os.remove(os.path.join(out, extra))
        if old:
            with open(os.path.join(out, "config.json")) as f:
                d = to_old_spelling(json.load(f))
            with open(os.path.join(out, "config.json"), "w") as f:
                json.dump(d, f, indent=2)
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(3, V, (2, 24), generator=g)
        with torch.no_grad():
            logits = model(ids).logits.float()
        tensors = {"ids": ids, "logits": logits}
        for i, plen in enumerate((5, 11)):
            prompt = torch.randint(3, V, (1, plen), generator=g)
            gen = model.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0,
                                 min_new_tokens=12)
            tensors[f"greedy_prompt_{i}"] = prompt[0]
            tensors[f"greedy_{i}"] = gen[0, plen:]
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, "expected.safetensors"))
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        print(f"{name}: {size / 1e3:.0f} kB, max |logit| {logits.abs().max():.2f}")


if __name__ == "__main__":
    main()
