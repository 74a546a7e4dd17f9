"""model.py against transformers' logits (committed fixtures), plus loading, saving and bad-input checks."""
import json
import math
import os
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import model as M

FIX = os.path.join(os.path.dirname(__file__), "fixtures")
FIXTURES = sorted(d for d in os.listdir(FIX) if os.path.isfile(os.path.join(FIX, d, "expected.safetensors")))


def expected(name):
    return load_file(os.path.join(FIX, name, "expected.safetensors"))


def copy_fixture(name, tmp_path):
    dst = tmp_path / name
    shutil.copytree(os.path.join(FIX, name), dst)
    return str(dst)


def test_fixture_set_covers_the_switches():
    cfgs = [M.load(os.path.join(FIX, n)).config for n in FIXTURES]
    neox = [c for c in cfgs if c.arch == "gpt_neox"]
    llama = [c for c in cfgs if c.arch == "llama"]
    assert {c.rotary_pct for c in neox} >= {0.25, 1.0}
    assert {c.parallel_residual for c in neox} == {True, False}
    assert any(c.n_kv_head < c.n_head for c in llama) and any(c.tie_embeddings for c in llama)
    assert any(not c.tie_embeddings for c in llama)
    assert any((c.rope_scaling or {}).get("rope_type") == "llama3" for c in llama)


@pytest.mark.parametrize("name", FIXTURES)
def test_logits_match_transformers(name):
    m = M.load(os.path.join(FIX, name))
    e = expected(name)
    with torch.no_grad():
        logits = m(e["ids"])
    assert logits.dtype == torch.float32 and logits.shape == e["logits"].shape
    torch.testing.assert_close(logits, e["logits"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["neox_rot25_parallel", "llama_gqa_tied_llama3"])
def test_rotary_bug_would_be_caught(name):
    """The fixtures' weight scale makes a wrong rotary convention fail loudly, not by 5e-3."""
    m = M.load(os.path.join(FIX, name))
    e = expected(name)
    orig = M.rotate_half
    try:
        M.rotate_half = lambda x: torch.stack((-x[..., 1::2], x[..., ::2]), -1).flatten(-2)  # Meta's pairing
        with torch.no_grad():
            wrong = m(e["ids"])
    finally:
        M.rotate_half = orig
    assert (wrong - e["logits"]).abs().max() > 0.1


@pytest.mark.parametrize("name", FIXTURES)
def test_save_load_roundtrip_keeps_logits_and_hf_names(name, tmp_path):
    m = M.load(os.path.join(FIX, name))
    out = str(tmp_path / "saved")
    M.save(m, out)
    m2 = M.load(out)
    ids = expected(name)["ids"]
    with torch.no_grad():
        assert torch.equal(m(ids), m2(ids))
    with safe_open(os.path.join(FIX, name, "model.safetensors"), "pt") as a, \
            safe_open(os.path.join(out, "model.safetensors"), "pt") as b:
        assert set(a.keys()) == set(b.keys())  # the same HF names transformers wrote
        for k in a.keys():
            assert torch.equal(a.get_tensor(k), b.get_tensor(k)), k
        assert b.metadata() == {"format": "pt"}
    assert not any(f.startswith("model.safetensors.tmp") for f in os.listdir(out))


def test_saved_checkpoint_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    for name in ("neox_rot25_parallel", "llama_gqa_tied_llama3"):
        m = M.load(os.path.join(FIX, name))
        out = str(tmp_path / name)
        M.save(m, out)
        hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
        ids = expected(name)["ids"]
        with torch.no_grad():
            torch.testing.assert_close(hf(ids).logits.float(), m(ids), atol=1e-5, rtol=1e-5)


def test_sharded_save_and_load(tmp_path):
    m = M.load(os.path.join(FIX, "llama_gqa_untied"))
    out = str(tmp_path / "sharded")
    M.save(m, out, max_shard_bytes=40_000)
    files = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
    assert len(files) > 2 and "model.safetensors" not in files
    index = json.load(open(os.path.join(out, "model.safetensors.index.json")))
    assert set(index["weight_map"].values()) == set(files)
    m2 = M.load(out)
    ids = expected("llama_gqa_untied")["ids"]
    with torch.no_grad():
        assert torch.equal(m(ids), m2(ids))
    # saving unsharded over it removes the stale index so the directory stays loadable one way
    M.save(m2, out)
    assert not os.path.exists(os.path.join(out, "model.safetensors.index.json"))


def test_old_and_new_config_spellings_agree():
    new = {"model_type": "gpt_neox", "vocab_size": 10, "num_hidden_layers": 1, "num_attention_heads": 2,
           "hidden_size": 8, "rope_parameters": {"rope_theta": 500.0, "partial_rotary_factor": 0.5,
                                                 "rope_type": "default"}}
    old = {"model_type": "gpt_neox", "vocab_size": 10, "num_hidden_layers": 1, "num_attention_heads": 2,
           "hidden_size": 8, "rotary_emb_base": 500.0, "rotary_pct": 0.5}
    a, b = M.Config.from_hf(new), M.Config.from_hf(old)
    assert (a.rope_theta, a.rotary_pct, a.rope_scaling) == (b.rope_theta, b.rotary_pct, b.rope_scaling) == \
        (500.0, 0.5, None)
    sc = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}
    base = {"model_type": "llama", "vocab_size": 10, "num_hidden_layers": 1, "num_attention_heads": 2,
            "hidden_size": 8}
    a = M.Config.from_hf({**base, "rope_parameters": {"rope_theta": 5e5, **sc}})
    b = M.Config.from_hf({**base, "rope_theta": 5e5, "rope_scaling": sc})
    assert a.rope_theta == b.rope_theta == 5e5 and a.rope_scaling == b.rope_scaling == sc


def test_llama3_rope_scaling_regimes():
    cfg = M.Config(arch="llama", n_embd=64, n_head=1, rope_theta=10000.0,
                   rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    plain = M.rope_inv_freq(M.Config(arch="llama", n_embd=64, n_head=1, rope_theta=10000.0)).double()
    scaled = M.rope_inv_freq(cfg).double()
    for f, g in zip(plain.tolist(), scaled.tolist()):
        wavelen = 2 * math.pi / f
        if wavelen < 64 / 4:       # high frequency: kept
            assert g == pytest.approx(f, rel=1e-6)
        elif wavelen > 64 / 1:     # low frequency: divided by the factor
            assert g == pytest.approx(f / 8, rel=1e-6)
        else:                      # in between: strictly between the two
            assert f / 8 < g < f


def test_partial_rotary_leaves_the_rest_and_is_relative():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    cfg = M.Config(arch="gpt_neox", n_embd=16, n_head=1, rotary_pct=0.25)
    inv = M.rope_inv_freq(cfg)
    assert inv.numel() == 2  # rotary_dim 4 -> 2 frequencies

    def rot(x, p):
        f = torch.tensor([[float(p)]]) * inv
        emb = torch.cat((f, f), -1).view(1, 1, 1, -1)
        return M.apply_rope(x, emb.cos(), emb.sin())
    assert torch.equal(rot(q, 7)[..., 4:], q[..., 4:])
    assert torch.allclose(rot(q, 7).norm(), q.norm(), atol=1e-5)
    # q.k depends on the distance only
    d1 = (rot(q, 10) * rot(k, 3)).sum()
    d2 = (rot(q, 27) * rot(k, 20)).sum()
    assert torch.allclose(d1, d2, atol=1e-5)


@pytest.mark.parametrize("name", ["neox_rot25_parallel", "llama_gqa_untied"])
def test_left_padded_batch_matches_rows_alone(name):
    m = M.load(os.path.join(FIX, name))
    ids = expected(name)["ids"]
    lens = [24, 9]
    pad = torch.zeros_like(ids)
    mask = torch.zeros(2, 24, dtype=torch.bool)
    for b, n in enumerate(lens):
        pad[b, 24 - n:] = ids[b, :n]
        mask[b, 24 - n:] = True
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        batched = m(pad, pos=pos, mask=mask)
        for b, n in enumerate(lens):
            alone = m(ids[b:b + 1, :n])
            torch.testing.assert_close(batched[b, 24 - n:], alone[0], atol=1e-5, rtol=1e-5)
        assert torch.isfinite(batched).all()  # pad rows see themselves: no NaN


def test_right_padded_training_batch_needs_no_mask():
    m = M.load(os.path.join(FIX, "llama_gqa_untied"))
    ids = expected("llama_gqa_untied")["ids"]
    short = ids[1, :10]
    padded = ids.clone()
    padded[1, 10:] = 0
    with torch.no_grad():
        torch.testing.assert_close(m(padded)[1, :10], m(short[None])[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_from_scratch_init_and_shapes(arch):
    torch.manual_seed(0)
    cfg = M.Config(arch=arch, vocab_size=50, n_layer=2, n_head=4, n_embd=64, max_seq_len=32,
                   parallel_residual=arch == "gpt_neox", tie_embeddings=arch == "llama")
    m = M.GPT(cfg)
    ids = torch.randint(0, 50, (3, 7))
    logits = m(ids)
    assert logits.shape == (3, 7, 50) and logits.dtype == torch.float32
    # a fresh model is close to uniform: loss near ln V, and the residual outputs start smaller than the inputs
    labels = torch.randint(0, 50, (3, 7))  # independent of the inputs (a tied head favours the input token)
    loss = torch.nn.functional.cross_entropy(logits.view(-1, 50), labels.view(-1))
    assert abs(loss.item() - math.log(50)) < 0.2
    assert m.h[0].attn.wo.weight.std() < m.h[0].attn.wqkv.weight.std()
    assert (m.lm_head.weight is m.wte.weight) == (arch == "llama")


def test_bf16_weights_give_fp32_logits_close_to_fp32():
    m32 = M.load(os.path.join(FIX, "llama_gqa_untied"))
    m16 = M.load(os.path.join(FIX, "llama_gqa_untied"), dtype=torch.bfloat16)
    assert next(m16.parameters()).dtype == torch.bfloat16
    ids = expected("llama_gqa_untied")["ids"]
    with torch.no_grad():
        a, b = m32(ids), m16(ids)
    assert b.dtype == torch.float32
    assert (a - b).abs().max() < 0.25 * a.abs().max()


def test_tied_model_saves_no_lm_head(tmp_path):
    m = M.load(os.path.join(FIX, "llama_gqa_tied_llama3"))
    assert m.lm_head.weight is m.wte.weight
    M.save(m, str(tmp_path / "t"))
    with safe_open(str(tmp_path / "t" / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()


# -----------------------------------------------------------------------------
# bad input: one clear error naming the file, field or tensor


def test_missing_directory_and_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        M.load(str(tmp_path / "nope"))
    d = copy_fixture("llama_gqa_untied", tmp_path)
    os.remove(os.path.join(d, "config.json"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        M.load(d)


def test_malformed_config(tmp_path):
    d = copy_fixture("llama_gqa_untied", tmp_path)
    open(os.path.join(d, "config.json"), "w").write("{not json")
    with pytest.raises(ValueError, match=r"config.json: malformed JSON"):
        M.load(d)
    cfg = json.load(open(os.path.join(FIX, "llama_gqa_untied", "config.json")))
    del cfg["hidden_size"]
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    with pytest.raises(ValueError, match=r"config.json: missing required field 'hidden_size'"):
        M.load(d)


def test_unknown_model_type(tmp_path):
    d = copy_fixture("llama_gqa_untied", tmp_path)
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg["model_type"] = "gpt2"
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    with pytest.raises(ValueError, match=r"config.json: unknown model_type 'gpt2'"):
        M.load(d)


def test_missing_shard(tmp_path):
    m = M.load(os.path.join(FIX, "llama_gqa_untied"))
    out = str(tmp_path / "sharded")
    M.save(m, out, max_shard_bytes=40_000)
    shards = sorted(set(json.load(open(os.path.join(out, "model.safetensors.index.json")))["weight_map"].values()))
    os.remove(os.path.join(out, shards[1]))
    with pytest.raises(FileNotFoundError, match=r"model-00002-of-\d+\.safetensors: shard listed in"):
        M.load(out)


def test_shape_mismatch_missing_and_unexpected_tensor(tmp_path):
    d = copy_fixture("llama_gqa_untied", tmp_path)
    path = os.path.join(d, "model.safetensors")
    sd = load_file(path)
    bad = dict(sd)
    bad["model.layers.1.mlp.up_proj.weight"] = torch.zeros(5, 64)
    save_file(bad, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"'model.layers.1.mlp.up_proj.weight' has shape \(5, 64\)"):
        M.load(d)
    bad = dict(sd)
    del bad["model.norm.weight"]
    save_file(bad, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"'model.norm.weight' is missing"):
        M.load(d)
    bad = dict(sd)
    bad["model.layers.7.extra.weight"] = torch.zeros(2)
    save_file(bad, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"unexpected tensor 'model.layers.7.extra.weight'"):
        M.load(d)


def test_pickle_weights_are_refused(tmp_path):
    d = copy_fixture("llama_gqa_untied", tmp_path)
    os.remove(os.path.join(d, "model.safetensors"))
    open(os.path.join(d, "pytorch_model.bin"), "wb").write(b"\x80\x04not really")
    with pytest.raises(FileNotFoundError, match="never unpickles"):
        M.load(d)


def test_sequence_longer_than_context_or_window():
    m = M.load(os.path.join(FIX, "mistral_gqa"))  # sliding_window 48, context 64
    assert m.config.sliding_window == 48
    with pytest.raises(ValueError, match="sliding window"):
        m(torch.zeros(1, 49, dtype=torch.long))
    m = M.load(os.path.join(FIX, "llama_gqa_untied"))
    with pytest.raises(ValueError, match="exceeds the model's context"):
        m(torch.zeros(1, 65, dtype=torch.long))


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_activation_checkpointing_gives_the_same_gradients(arch):
    torch.manual_seed(0)
    m = M.GPT(M.Config(arch=arch, vocab_size=50, n_layer=3, n_head=2, n_embd=32, max_seq_len=32,
                       parallel_residual=arch == "gpt_neox", tie_embeddings=arch == "llama"))
    x = torch.randint(0, 50, (3, 12))
    calls = []
    m.h[1].register_forward_pre_hook(lambda *_: calls.append(1))  # (the recompute may stop before its end)

    def grads(checkpointing):
        m.zero_grad(set_to_none=True)
        m.grad_checkpoint = checkpointing
        m.train()
        calls.clear()
        torch.nn.functional.cross_entropy(m(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()
        return {n: p.grad.clone() for n, p in m.named_parameters()}, len(calls)
    (plain, n_plain), (ckpt, n_ckpt) = grads(False), grads(True)
    assert (n_plain, n_ckpt) == (1, 2)  # checkpointed: each Block runs again during backward
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], atol=0, rtol=0, msg=n)  # the same operations, same numbers
    m.eval()
    with torch.no_grad():
        calls.clear()
        m(x)
        assert len(calls) == 1  # never in evaluation or sampling


def test_logits_at_picks_positions_and_a_cache_needs_explicit_positions():
    m = M.load(os.path.join(FIX, "llama_gqa_untied"))
    ids = expected("llama_gqa_untied")["ids"]
    B, T = ids.shape
    at = torch.tensor([[3, T - 1], [0, 5]])[:B]
    with torch.no_grad():
        full = m(ids)
        picked = m(ids, logits_at=at)  # the sampler's "logits only where needed"
        assert m(ids, logits_at=torch.empty(B, 0, dtype=torch.long)).shape == (B, 0, full.shape[-1])
    torch.testing.assert_close(picked, full.gather(1, at.unsqueeze(-1).expand(-1, -1, full.shape[-1])),
                               atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="needs explicit pos"):
        m(ids, cache=object())


@pytest.mark.parametrize("name", ["neox_rot25_parallel", "llama_gqa_tied_llama3"])
def test_transposed_head_gives_transformers_logits(name):
    m = M.load(os.path.join(FIX, name))  # the sampler's (C, V) copy of the output head (sampler.head_copy)
    e = expected(name)
    with torch.no_grad():
        logits = m(e["ids"], head=m.lm_head.weight.t().contiguous())
    torch.testing.assert_close(logits, e["logits"], atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        assert not torch.allclose(m(e["ids"], head=m.lm_head.weight.t().flip(1).contiguous()), logits)


def test_config_without_tie_word_embeddings_is_untied_as_in_transformers(tmp_path):
    """LlamaConfig, MistralConfig and GPTNeoXConfig default tie_word_embeddings to False: a config.json without the
    key has its own lm_head.weight, which must be loaded (not replaced by the embedding)."""
    d = tmp_path / "untied_no_key"
    shutil.copytree(os.path.join(FIX, "llama_gqa_untied"), d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.pop("tie_word_embeddings", None)
    (d / "config.json").write_text(json.dumps(cfg))
    m = M.load(str(d))
    assert not m.config.tie_embeddings and m.lm_head.weight.data_ptr() != m.wte.weight.data_ptr()
    ref = M.load(os.path.join(FIX, "llama_gqa_untied"))
    idx = torch.tensor([[1, 5, 9, 2]])
    torch.testing.assert_close(m(idx), ref(idx))
