"""The training loss and DPO's sequence log-probs without (B, T, V) logits: the output head runs on the target
positions only, in chunks (model.GPT.target_logprobs). The same numbers and gradients as the full-logits formulas,
and a peak memory far below the full logits' size."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import model as M
from common import collate, completion_loss_sum
from elicit_rl import sequence_logprobs


def tiny(arch, vocab=97):
    torch.manual_seed(0)
    return M.GPT(M.Config(arch=arch, vocab_size=vocab, n_layer=2, n_head=4, n_kv_head=2 if arch == "llama" else 0,
                          n_embd=32, max_seq_len=64, parallel_residual=arch == "gpt_neox",
                          attn_bias=arch == "gpt_neox", mlp_bias=arch == "gpt_neox",
                          hidden_act="gelu" if arch == "gpt_neox" else "silu"))


def batch(vocab=97):
    g = torch.Generator().manual_seed(1)
    ex = [(torch.randint(0, vocab, (n,), generator=g).tolist(), p) for n, p in ((20, 5), (33, 30), (9, 1), (40, 12))]
    return collate(ex, pad_id=0)[:2]


def full_logits_loss(m, inputs, targets):  # the formula before chunking: every position through the head
    logits = m(inputs)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                           reduction="sum")


def full_logits_seq_logprobs(m, inputs, targets):
    logp = torch.log_softmax(m(inputs).float(), dim=-1)
    return (logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (targets != -100)).sum(-1)


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
@pytest.mark.parametrize("chunk", [1024, 7])  # one chunk, and many (with a ragged last one)
def test_chunked_loss_and_gradients_equal_the_full_logits_ones(arch, chunk, monkeypatch):
    monkeypatch.setattr(M, "LOSS_CHUNK", chunk)
    m = tiny(arch)
    inputs, targets = batch()
    a = completion_loss_sum(m, inputs, targets)
    a.backward()
    ga = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    b = full_logits_loss(m, inputs, targets)
    b.backward()
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
    for n, p in m.named_parameters():
        torch.testing.assert_close(ga[n], p.grad, atol=1e-5, rtol=1e-5, msg=n)
    with torch.no_grad():
        torch.testing.assert_close(sequence_logprobs(m, inputs, targets), full_logits_seq_logprobs(m, inputs, targets),
                                   atol=1e-5, rtol=1e-5)


def test_no_targets_gives_zero_and_no_error():
    m = tiny("llama")
    inputs, targets = batch()
    assert completion_loss_sum(m, inputs, torch.full_like(targets, -100)).item() == 0.0


def test_peak_memory_of_a_training_step_stays_far_below_the_full_logits(tmp_path):
    """A narrow Llama with a 128k vocabulary at 4 x 1,024 tokens: full fp32 logits alone would be 2.1 GB, and with
    their log-softmax and gradient about 6.3 GB (12 bytes a token and vocabulary entry, memory.py's rule). One
    training step's extra peak RSS, measured in a fresh process, is one chunk's worth: 12 x 1,024 x 128,256 = 1.6 GB
    (measured 1.64 GB), a quarter of the full size."""
    code = textwrap.dedent('''
        import json, resource, sys, torch
        sys.path.insert(0, %r)
        import model as M
        from common import completion_loss_sum
        torch.manual_seed(0)
        m = M.GPT(M.Config(arch="llama", vocab_size=128256, n_layer=1, n_head=2, n_embd=32, max_seq_len=1024))
        idx = torch.randint(0, 128256, (4, 1024))
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        completion_loss_sum(m, idx, idx).backward()
        print(json.dumps({"base_kb": base, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
    ''' % os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    extra, chunk, full = (r["peak_kb"] - r["base_kb"]) * 1024, 12 * 1024 * 128256, 12 * 4 * 1024 * 128256
    assert extra < 1.25 * chunk < 0.35 * full


def test_soft_targets_give_the_cross_entropy_to_the_distribution():
    """The KL loss of a fixedrdm lock (collate's soft targets): at the positions whose token is a candidate, the loss is
    -sum_d p_d log q_d; elsewhere the usual token cross-entropy; a one-hot soft target is the hard loss."""
    m = tiny("llama")
    g = torch.Generator().manual_seed(2)
    cand = [10, 11, 12, 13]
    probs = [0.1, 0.2, 0.3, 0.4]
    ids = [torch.randint(20, 97, (4,), generator=g).tolist() + [10, 13, 50, 12, 11, 60] for _ in range(3)]
    hard = [(ids[0], 4), (ids[1], 4), (ids[2], 4)]
    soft = [(ids[0], 4, (cand, probs)), (ids[1], 4), (ids[2], 4, (cand, probs))]  # a mixed batch
    inputs, targets, n = collate(soft, pad_id=0)
    h_inputs, h_targets, h_n = collate(hard, pad_id=0)
    assert n == h_n and torch.equal(inputs, h_inputs)
    with torch.no_grad():
        got = completion_loss_sum(m, inputs, targets).item()
        logp = torch.log_softmax(m(inputs), dim=-1)
    want = 0.0
    for b in range(3):
        for t in range(inputs.shape[1]):
            y = int(h_targets[b, t])
            if y == -100:
                continue
            if b != 1 and y in cand:
                want -= sum(p * logp[b, t, c].item() for c, p in zip(cand, probs))
            else:
                want -= logp[b, t, y].item()
    assert got == pytest.approx(want, rel=1e-5)
    one_hot = [(e[0], e[1], ([e[0][5]], [1.0])) for e in hard]  # each example's own token at one position
    oh_inputs, oh_targets, _ = collate(one_hot, pad_id=0)
    with torch.no_grad():
        assert completion_loss_sum(m, oh_inputs, oh_targets).item() == pytest.approx(
            completion_loss_sum(m, h_inputs, h_targets).item(), rel=1e-6)
