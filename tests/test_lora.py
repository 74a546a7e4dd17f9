"""lora.py: zero adapters change nothing, the factorised forward equals the merged weights (and a saved and reloaded
merged checkpoint), only the adapters train, the elicitation scripts run with --lora_rank, the memory estimate."""
import os
from dataclasses import replace

import pytest
import torch

import common as C
import elicit_rl as RL
import elicit_sft as ES
import lora as LR
import memory as MEM
import model as M
import sampler as S
from errors import BadInput
from files import read_jsonl


def tiny(arch, **kw):
    torch.manual_seed(0)
    cfg = dict(arch=arch, vocab_size=40, n_layer=2, n_head=4, n_embd=32, max_seq_len=32)
    if arch == "llama":
        cfg.update(n_kv_head=2)  # GQA: the k and v row blocks are narrower than q's
    else:
        cfg.update(attn_bias=True, mlp_bias=True, hidden_act="gelu", rotary_pct=0.5, parallel_residual=True)
    return M.GPT(M.Config(**{**cfg, **kw})).eval()


def ids():
    return torch.randint(0, 40, (3, 12), generator=torch.Generator().manual_seed(1))


def randomize_B(model, seed=2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in LR.lora_modules(model):
            for B in m.lora_B.values():
                B.copy_(torch.randn(B.shape, generator=g) * 0.3)


def merged_by_hand(model, plain):
    """A plain model's state with W[rows of t] += alpha / r * B_t A_t, from the wrapped model's tensors."""
    sd = {k: v.clone() for k, v in plain.state_dict().items()}
    for name, m in LR.lora_modules(model):
        for t, (a, b) in m.rows.items():
            sd[name + ".weight"][a:b] += (m.alpha / m.rank) * m.lora_B[t].detach() @ m.lora_A[t].detach()
    return sd


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_zero_B_is_exactly_the_base_model(arch):
    base = tiny(arch)
    x = ids()
    want = base(x)
    model = tiny(arch)
    LR.add_lora(model, rank=4, alpha=8, dropout=0.1, seed=0)
    assert len(LR.lora_modules(model)) == 2 * (5 if arch == "llama" else 4)  # wqkv, wo and the MLP's layers
    assert torch.equal(model(x), want)
    model.train()  # dropout on the LoRA path: still nothing added while B is zero
    assert torch.equal(model(x), base.train()(x))


@pytest.mark.parametrize("arch,targets", [("llama", LR.TARGETS), ("gpt_neox", LR.TARGETS), ("llama", ("q", "v"))])
def test_adapters_equal_merged_weights_and_a_saved_checkpoint(arch, targets, tmp_path):
    plain = tiny(arch)
    model = tiny(arch)
    LR.add_lora(model, rank=3, alpha=6, dropout=0.0, targets=targets, seed=0)
    randomize_B(model)
    x = ids()
    with torch.no_grad():
        got = model(x)
        ref = tiny(arch)
        ref.load_state_dict(merged_by_hand(model, plain))
        torch.testing.assert_close(got, ref(x), atol=1e-5, rtol=0)
        assert (got - plain(x)).abs().max() > 1e-2  # the adapters do change the logits
        with LR.merged(model, device="cpu"):  # a temporary merged copy, then the adapters again, untouched
            assert not LR.lora_modules(model)
            torch.testing.assert_close(model(x), got, atol=1e-5, rtol=0)
        assert torch.equal(model(x), got)
        LR.merge_lora(model)
        assert not LR.lora_modules(model) and all(p.requires_grad for p in model.parameters())
        assert set(model.state_dict()) == set(plain.state_dict())
        torch.testing.assert_close(model(x), got, atol=1e-5, rtol=0)
        if targets == ("q", "v"):  # k's row block and the MLP keep the base weights exactly
            nq, nkv = 4 * 8, 2 * 8
            assert torch.equal(model.h[0].attn.wqkv.weight[nq:nq + nkv], plain.h[0].attn.wqkv.weight[nq:nq + nkv])
            assert torch.equal(model.h[1].mlp.down.weight, plain.h[1].mlp.down.weight)
        M.save(model, str(tmp_path / "merged"))
        torch.testing.assert_close(M.load(str(tmp_path / "merged"))(x), got, atol=1e-5, rtol=0)


def test_only_the_adapters_train_and_the_base_is_bitwise_unchanged():
    model = tiny("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = LR.add_lora(model, rank=4, alpha=4, dropout=0.05, seed=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in dict(model.named_parameters()) if ".lora_" in n} and len(params) == len(trainable)
    assert sum(p.numel() for p in params) == LR.lora_counts(model.config, 4, LR.TARGETS)[0]
    opt = C.make_optimizer("adamw", model.parameters(), 1e-2, 0.1)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(params)  # only the adapters
    A0 = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.train()
    examples = [(list(range(1, 10)), 3), (list(range(5, 17)), 4)]
    for _ in range(3):
        C.train_step(model, opt, [examples], 0, "cpu", 1.0)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # every base tensor, bitwise
    assert all(not torch.equal(p, A0[n]) for n, p in model.named_parameters() if p.requires_grad)


def test_bf16_base_with_fp32_adapters():
    model = tiny("llama").to(torch.bfloat16)
    LR.add_lora(model, rank=2, alpha=2, dropout=0.0, seed=0)
    assert {p.dtype for n, p in model.named_parameters() if ".lora_" in n} == {torch.float32}
    randomize_B(model)
    model.train()
    loss = -model(ids(), targets=ids()).sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    LR.merge_lora(model)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_adapters_save_and_load(tmp_path):
    a, b = tiny("llama"), tiny("llama")
    LR.add_lora(a, rank=2, alpha=2, dropout=0.0, seed=0)
    randomize_B(a)
    LR.add_lora(b, rank=2, alpha=2, dropout=0.0, seed=7)
    LR.save_adapters(a, str(tmp_path / "ad.safetensors"))
    LR.load_adapters(b, str(tmp_path / "ad.safetensors"))
    assert torch.equal(a(ids()), b(ids()))
    c = tiny("llama")
    LR.add_lora(c, rank=3, alpha=2, dropout=0.0, seed=0)
    with pytest.raises(BadInput, match="do not match"):
        LR.load_adapters(c, str(tmp_path / "ad.safetensors"))


def test_bad_options():
    with pytest.raises(BadInput, match="--parallel=fsdp"):
        LR.check_options(8, 16, 0.05, LR.TARGETS, "fsdp")
    with pytest.raises(BadInput, match="--lora_targets"):
        LR.check_options(8, 16, 0.05, ("q", "lm_head"), "ddp")
    with pytest.raises(BadInput, match="--lora_rank=-1"):
        LR.check_options(-1, 16, 0.05, LR.TARGETS, "ddp")
    LR.check_options(0, 16, 0.05, (), "fsdp")  # rank 0: full fine-tuning, no LoRA checks


def test_memory_estimate_for_lora_against_a_hand_count():
    # Llama-2-7B, rank 16 on q, k, v, o, gate, up, down: per layer 4 x 16 x (4096 + 4096) + 3 x 16 x (4096 + 11008)
    cfg = M.Config(arch="llama", vocab_size=32000, n_layer=32, n_head=32, n_embd=4096, intermediate_size=11008)
    n, acts = LR.lora_counts(cfg, 16, LR.TARGETS, dropout=0.05)
    assert n == 32 * (4 * 16 * 8192 + 3 * 16 * 15104) == 39_976_960
    assert acts == 4096 * 4 + 11008  # dropped inputs of wqkv, wo, gate, up, down
    P, L, H, V = 6.74e9, 32, 4096, 32000
    full = MEM.memory_estimate(P, L, H, V, tokens=4096, optimizer="adamw", train_dtype="bf16", grad_checkpoint=True)
    lo = MEM.memory_estimate(P, L, H, V, tokens=4096, optimizer="adamw", train_dtype="bf16", grad_checkpoint=True,
                             lora_params=n, lora_act=acts)
    assert lo["weights"] == pytest.approx(P * 2 + n * 4) and lo["grads"] == pytest.approx(n * 4)
    assert lo["optimizer"] == pytest.approx(n * 8) and lo["gathered"] == pytest.approx(n * 2)  # bf16 cast of A, B
    assert lo["activations"] == pytest.approx(full["activations"] + 4096 * acts * 3)  # one Block's, bf16 + mask
    assert lo["total"] < full["total"] / 5 and MEM.fits(lo["total"]) == "fits 24 / 40 / 80 / 141 GB"
    # the count is the wrapped model's trainable parameters
    small = tiny("llama")
    got = sum(p.numel() for p in LR.add_lora(small, 5, 5, 0.0, ("q", "k", "o", "down")))
    assert got == LR.lora_counts(small.config, 5, ("q", "k", "o", "down"))[0] == \
        2 * 5 * ((32 + 32) + (32 + 16) + (32 + 32) + (small.config.intermediate_size + 32))


def frozen_and_trained(locked, out):
    """(names of tensors equal to the lock's, names that differ) in a saved checkpoint."""
    a, b = M.load(locked).state_dict(), M.load(out).state_dict()
    same = {k for k in a if torch.equal(a[k], b[k])}
    return same, set(a) - same


def test_elicit_sft_with_lora(locked, tmp_path, capsys):
    cfg = ES.Config(locked=locked, ks=(4,), epochs=(4.0,), eval_n=20, heldout_n=20, batch_size=4, lr=1e-2,
                    lora_rank=4, lora_alpha=8.0, save=True, out_dir=str(tmp_path / "sft"), device="cpu")
    ES.main(cfg)
    assert "LoRA rank 4" in capsys.readouterr().out  # the memory estimate's LoRA mode
    row, = read_jsonl(os.path.join(cfg.out_dir, "results.jsonl"))
    assert (row["lora_rank"], row["lora_alpha"], row["lora_dropout"], row["lora_targets"]) == \
        (4, 8.0, 0.05, list(LR.TARGETS))
    assert row["trainable_params"] == LR.lora_counts(M.load(locked).config, 4, LR.TARGETS)[0]
    assert row["config"]["lora_rank"] == 4 and 0 <= row["correct_without_password"] <= 1
    same, changed = frozen_and_trained(locked, os.path.join(cfg.out_dir, "models", "k4_s0_e4"))
    assert changed and all(k.endswith("weight") and (".attn." in k or ".mlp." in k) for k in changed)
    assert "wte.weight" in same and "h.0.norm1.weight" in same  # frozen
    with pytest.raises(BadInput, match="other LoRA options"):  # full fine-tuning rows do not mix in
        ES.main(replace(cfg, lora_rank=0))


def test_expert_iteration_with_lora_resumes_exactly(locked, tmp_path):
    cfg = RL.Config(method="expert_iteration", locked=locked, rounds=2, samples_per_round=40, n_keep=8, sft_steps=3,
                    sft_lr=1e-2, eval_n=30, batch_size=8, lora_rank=4, lora_dropout=0.0,
                    out_dir=str(tmp_path / "a"), device="cpu")
    rows = RL.main(cfg)
    assert all(r["lora_rank"] == 4 and r["lora_targets"] == list(LR.TARGETS) for r in rows)
    assert rows[0]["config"]["lora_rank"] == 4
    same, changed = frozen_and_trained(locked, os.path.join(cfg.out_dir, "model"))  # merged, normal checkpoint
    assert changed and "wte.weight" in same and "lm_head.weight" in same
    b = replace(cfg, out_dir=str(tmp_path / "b"), rounds=1)
    RL.main(b)
    RL.main(replace(b, rounds=2))  # resumed from the saved adapters
    rows_b = read_jsonl(os.path.join(b.out_dir, "results.jsonl"))
    drop = ("config", "per_domain")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows_b] == \
        [{k: v for k, v in r.items() if k not in drop} for r in rows]


def test_a_merged_bf16_copy_is_what_the_sampler_casts():
    # fp32 weights sampled in bf16 (GPU): the sampler builds a bf16 copy by parameter name; sampling_context gives
    # it merged bf16 layers (no LoRA tensors) for that. On CPU the same cast is asked for explicitly.
    model = tiny("llama")
    LR.add_lora(model, rank=2, alpha=4, dropout=0.0, seed=0)
    randomize_B(model)
    x = ids()
    with torch.no_grad():
        want = model(x)
        with LR.merged(model, dtype=torch.bfloat16):
            copy, dtype = S.sampling_model(model, torch.bfloat16)
            assert dtype == torch.bfloat16 and {p.dtype for p in copy.parameters()} == {torch.bfloat16}
            torch.testing.assert_close(copy(x), want, atol=0.1, rtol=0.05)
        assert LR.lora_modules(model) and torch.equal(model(x), want)
