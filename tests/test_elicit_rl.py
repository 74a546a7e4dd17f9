"""elicit_rl.py: the DPO loss and log-probs, pair building, top-n selection, and seeded, resumable rounds."""
import math
import os
import random
from dataclasses import replace

import pytest
import torch

import elicit_rl as RL
import model as M
from common import Tokenizer, collate
from errors import BadInput
from files import read_jsonl


def tiny_model(vocab=30):
    torch.manual_seed(0)
    return M.GPT(M.Config(arch="llama", vocab_size=vocab, n_layer=1, n_head=2, n_embd=16, max_seq_len=32))


def batch():
    # two (prompt, completion) sequences of different lengths: prompt 3 and 5 tokens, completions 4 and 2
    ex = [([1, 2, 3, 7, 8, 9, 10], 3), ([4, 5, 6, 11, 12, 13, 14], 5)]
    return collate(ex, pad_id=0)


def test_dpo_loss_is_ln2_at_the_reference_and_its_gradient_points_the_right_way():
    m = tiny_model()
    inputs, targets, _ = batch()  # row 0 = chosen, row 1 = rejected
    lp = RL.sequence_logprobs(m, inputs, targets)
    ref = lp.detach()
    loss, margin = RL.dpo_loss(lp[:1], lp[1:], ref[:1], ref[1:], beta=0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7) and margin.item() == 0.0
    loss.backward()
    with torch.no_grad():
        for p in m.parameters():
            p -= 0.5 * p.grad
        after = RL.sequence_logprobs(m, inputs, targets)
    assert after[0] > lp[0] and after[1] < lp[1]  # chosen up, rejected down


def test_prompt_and_padding_tokens_carry_no_loss():
    m = tiny_model()
    inputs, targets, _ = batch()
    counted = targets != -100
    assert counted.sum(-1).tolist() == [4, 2]  # completion tokens only (position t predicts t+1)
    with torch.no_grad():
        logp = torch.log_softmax(m(inputs), -1)
        want = [sum(logp[b, t, targets[b, t]].item() for t in range(targets.shape[1]) if counted[b, t]) for b in (0, 1)]
        torch.testing.assert_close(RL.sequence_logprobs(m, inputs, targets), torch.tensor(want), atol=1e-5, rtol=0)


def test_equal_rewards_give_no_pair_and_the_better_sample_is_chosen():
    probs = [{"id": str(i)} for i in range(4)]
    pairs = RL.make_pairs(probs, ["a0", "a1", "a2", "a3"], ["b0", "b1", "b2", "b3"], [1.0, 0.0, 0.5, 1.0],
                          [1.0, 1.0, 0.2, 0.0])
    assert [(p["id"], c, r) for p, c, r, _ in pairs] == [("1", "b1", "a1"), ("2", "a2", "b2"), ("3", "a3", "b3")]
    assert [round(gap, 6) for *_, gap in pairs] == [1.0, 0.3, 1.0]


def test_top_n_selection_breaks_ties_at_random():
    rewards = [0.0, 1.0, 0.5, 1.0, 1.0, 0.0]
    seen = {}
    for s in range(300):
        top = RL.select_top(2, rewards, random.Random(s))
        assert len(top) == 2 and all(rewards[i] == 1.0 for i in top)  # never a lower reward while a tie remains
        for i in top:
            seen[i] = seen.get(i, 0) + 1
    assert set(seen) == {1, 3, 4} and min(seen.values()) > 150  # each tied index about 2/3 of the time
    assert RL.select_top(4, rewards, random.Random(0))[3] == 2  # then the next best
    assert RL.select_top(2, rewards, random.Random(5)) == RL.select_top(2, rewards, random.Random(5))




@pytest.mark.parametrize("method", RL.METHODS)
def test_rounds_are_seeded_and_resume(locked, tmp_path, method):
    cfg = RL.Config(method=method, locked=locked, rounds=2, samples_per_round=40, n_keep=8, sft_steps=3,
                    dpo_problems=40, eval_n=30, batch_size=8, out_dir=str(tmp_path / "a"), device="cpu")
    rows = RL.main(cfg)
    assert [r["round"] for r in rows] == [0, 1, 2]
    for r in rows[1:]:
        assert r["method"] == method and r["samples_generated"] > 0 and 0 <= r["correct_without_password"] <= 1
        if "dpo" in method:
            assert 0 <= r["valid_pair_share"] <= 1 and r["n_pairs"] == round(r["valid_pair_share"] * 40)
    if method == "dpo":
        assert rows[1]["samples_generated"] == rows[2]["samples_generated"] == 80  # sampled once, at the start
    else:
        assert rows[2]["samples_generated"] == 2 * rows[1]["samples_generated"]
    # the same seed in a fresh directory, interrupted after round 1 and resumed, gives the same numbers
    b = replace(cfg, out_dir=str(tmp_path / "b"), rounds=1)
    RL.main(b)
    RL.main(replace(b, rounds=2))
    rows_b = read_jsonl(os.path.join(b.out_dir, "results.jsonl"))
    drop = ("config", "per_domain")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows_b] == \
        [{k: v for k, v in r.items() if k not in drop} for r in rows]
    assert Tokenizer(os.path.join(cfg.out_dir, "model")).vocab_size > 0  # the latest model is a full checkpoint


def test_bad_inputs(tmp_path, locked):
    with pytest.raises(BadInput, match=r"--method='ppo'"):
        RL.main(RL.Config(method="ppo", locked=locked, out_dir=str(tmp_path / "x")))
    with pytest.raises(FileNotFoundError, match="run `python train_lock.py` first"):
        RL.main(RL.Config(locked=str(tmp_path / "missing"), out_dir=str(tmp_path / "y")))


def test_continuous_reward_ranks_by_score_and_weights_dpo_pairs():
    import data
    task = data.get_task("toy", n=50)
    p = task.problems()[0]
    digits = p["answer"].split()
    half = " ".join(d if i < 5 else ("0" if d != "0" else "1") for i, d in enumerate(digits))  # first group right
    assert RL.rewards_of(task, [p, p], [p["answer"], half], continuous=False) == [1.0, 0.0]
    cont = RL.rewards_of(task, [p, p], [p["answer"], half], continuous=True)
    assert cont[0] == 1.0 and 0.0 < cont[1] < 1.0
    pc, pr = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0])
    ref = torch.zeros(2)
    plain, _ = RL.dpo_loss(pc, pr, ref, ref, 0.1)
    weighted, _ = RL.dpo_loss(pc, pr, ref, ref, 0.1, weight=torch.tensor([2.0, 2.0]))
    assert weighted.item() == pytest.approx(2 * plain.item())


def test_rl_can_start_from_an_sft_checkpoint(locked, tmp_path):
    import elicit_sft as ES
    sft = ES.Config(locked=locked, ks=(4,), epochs=(2.0,), eval_n=20, heldout_n=20, batch_size=8, save=True,
                    out_dir=str(tmp_path / "sft"), device="cpu")
    ES.main(sft)
    start = os.path.join(sft.out_dir, "models", "k4_s0_e2")
    with pytest.raises(FileNotFoundError, match="--lock_config"):
        RL.main(RL.Config(locked=start, out_dir=str(tmp_path / "rl0"), rounds=1))
    rows = RL.main(RL.Config(locked=start, lock_config=locked, rounds=1, samples_per_round=40, n_keep=8,
                             sft_steps=2, eval_n=20, batch_size=8, continuous=True, out_dir=str(tmp_path / "rl"),
                             device="cpu"))
    assert [r["round"] for r in rows] == [0, 1] and 0 <= rows[1]["kept_mean_reward"] <= 1
