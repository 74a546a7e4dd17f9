"""torchrun on CPU (gloo): two processes must train to the same weights and evaluate to the same greedy results as one,
with DDP and with FSDP2. Two launches serve every check (tests/dist_run.py runs several script command lines in one
process): one process, and `torchrun --nproc_per_node=2` running the lines with --parallel=ddp, then with
--parallel=fsdp (plus activation checkpointing, and an interruption and --resume=True in the lock). Each launch
runs, on the same tiny toy: the evaluation check (greedy and temperature-1 sampling), a lock, an SFT elicitation and
expert iteration and iterated DPO rounds; elicitation always starts from the one-process lock, so it is compared
like for like. Measured on 2 CPU cores (torch 2.13): weights agree to 3e-8 (lock), 5e-9 (SFT), 4e-8 (expert
iteration) and 1.2e-7 (DPO); greedy metrics and all samples are identical. The tolerances below leave a wide margin
for other CPUs."""
import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

import model as M
from files import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
ATOL, RTOL = 1e-6, 1e-5  # weights: the same steps, up to the order of floating-point sums (measured: <= 1.2e-7)


NETWORK_ERRORS = ("rendezvous", "Address already in use", "Connection refused", "Connection reset", "timed out")


def run(cmd):
    for attempt in range(2):  # one retry, only for a transient failure of torchrun's local rendezvous or sockets
        r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)
        if r.returncode == 0 or not any(e in r.stderr for e in NETWORK_ERRORS):
            break
    if r.returncode != 0:  # the first lines that say what went wrong, then the end of the log
        said = [line for line in r.stderr.splitlines() if any(w in line for w in ("Error", "error:", "what()"))]
        raise AssertionError("\n".join(said[:20]) + "\n...\n" + r.stderr[-3000:])
    return r


LOCK = ("train_lock.py --toy_problems=1000 --n_layer=2 --n_head=2 --n_embd=32 --pretrain_samples=600 "
        "--pretrain_steps=20 --epochs=2 --batch_size=32 --grad_accum=2 --eval_n=100 --eval_batch_size=16 "
        "--ckpt_every=0 --log_every=5 --device=cpu")
# k=1 for 1 epoch is one example: the second rank gets none and runs a weight-0 stand-in
SFT = ("elicit_sft.py --ks=(1,4) --epochs=(1.0,3.0) --eval_n=40 --heldout_n=20 --batch_size=4 --save=True "
       "--device=cpu")
# 40 samples in batches of 16: three whole batches, two on rank 0 and one on rank 1
EI = ("elicit_rl.py --method=expert_iteration --rounds=1 --samples_per_round=40 --n_keep=8 --sft_steps=3 --eval_n=30 "
      "--eval_batch_size=16 --batch_size=8 --device=cpu")
DPO = ("elicit_rl.py --method=iterated_dpo --rounds=1 --dpo_problems=40 --dpo_pairs_per_batch=8 --continuous=True "
       "--eval_n=30 --eval_batch_size=16 --device=cpu")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("dist"))
    lock = f"--locked={d}/one/lock"

    def lines(name, extra=""):  # (under FSDP the evaluation check is not rerun: it samples from a plain model)
        return [f"dist_eval_check.py --out={d}/{name}_eval.json", f"{LOCK} {extra} --out_dir={d}/{name}/lock",
                f"{SFT} {extra} {lock} --out_dir={d}/{name}/sft", f"{EI} {extra} {lock} --out_dir={d}/{name}/ei",
                f"{DPO} {extra} {lock} --out_dir={d}/{name}/dpo"]
    run([sys.executable, "tests/dist_run.py", *lines("one")])
    fsdp = lines("fsdp", "--parallel=fsdp --grad_checkpoint=True")[1:]
    fsdp[:1] = [fsdp[0] + " --stop_after_steps=5", fsdp[0] + " --resume=True"]  # interrupted, then resumed
    run(TORCHRUN + ["tests/dist_run.py", *lines("ddp"), *fsdp])  # one launch (one process group) for both
    return d


def assert_same_weights(a, b):
    ma, mb = M.load(a), M.load(b)  # (an FSDP run's checkpoint is gathered and written by rank 0: a normal one)
    for (n, x), (_, y) in zip(ma.state_dict().items(), mb.state_dict().items()):
        torch.testing.assert_close(x, y, atol=ATOL, rtol=RTOL, msg=n)


def without(rows, *keys):
    return [{k: v for k, v in r.items() if k not in ("config",) + keys} for r in rows]


def test_sharded_greedy_and_sampled_evaluation_is_identical(runs):
    a = json.load(open(os.path.join(runs, "one_eval.json")))
    b = json.load(open(os.path.join(runs, "ddp_eval.json")))
    assert (a["world"], b["world"]) == (1, 2)
    assert a["completions"] == b["completions"] and len(a["completions"]) == 37 and all(a["completions"])
    assert a["sampled"] == b["sampled"] and a["sampled"] != a["completions"]  # same samples, and really sampled
    assert b["copy_dtype"] == "torch.bfloat16" and b["copy_exact"]  # the FSDP evaluation copy: the bf16 cast
    assert a["copy_dtype"] == "torch.float32" and a["copy_exact"]  # one process: no copy
    assert a["bf16_completions"] == b["bf16_completions"]  # (one process: the plain model cast for the call)
    agree = sum(x == y for x, y in zip(a["bf16_completions"], a["completions"]))
    assert agree >= 30, agree  # bf16 greedy mostly follows fp32 on this fixture (near-ties may flip)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_train_lock_two_processes_match_one(runs, mode):
    one, two = os.path.join(runs, "one", "lock"), os.path.join(runs, mode, "lock")
    assert_same_weights(one, two)
    ma, mb = json.load(open(os.path.join(one, "metrics.json"))), json.load(open(os.path.join(two, "metrics.json")))
    assert (ma["world_size"], mb["world_size"]) == (1, 2) and mb["config"]["parallel"] == mode
    for k in ("correct_with_password", "correct_without_password", "correct_wrong_password", "per_domain"):
        assert ma[k] == mb[k], k
    log_one = [json.loads(line) for line in open(os.path.join(one, "log.jsonl"))]
    log_two = [json.loads(line) for line in open(os.path.join(two, "log.jsonl"))]
    assert len(log_one) == len(log_two)  # written by rank 0 only (and, for fsdp, continued after the resume)
    assert [r["loss"] for r in log_one] == pytest.approx([r["loss"] for r in log_two], rel=1e-5)
    for f in ("config.json", "model.safetensors", "tokenizer.json", "pretrained/model.safetensors"):
        assert os.path.isfile(os.path.join(two, f)), f
    assert not os.path.exists(os.path.join(two, "resume"))


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_elicit_sft_two_processes_match_one(runs, mode):
    one, two = os.path.join(runs, "one", "sft"), os.path.join(runs, mode, "sft")
    rows_one, rows_two = read_jsonl(os.path.join(one, "results.jsonl")), read_jsonl(os.path.join(two, "results.jsonl"))
    assert len(rows_one) == 4 and without(rows_one) == without(rows_two)  # greedy metrics identical
    base = [json.load(open(os.path.join(d, "locked_eval.json"))) for d in (one, two)]
    assert base[0] == base[1]
    for name in ("k1_s0_e1", "k1_s0_e3", "k4_s0_e1", "k4_s0_e3"):
        assert_same_weights(os.path.join(one, "models", name), os.path.join(two, "models", name))


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_elicit_rl_two_processes_match_one(runs, mode):
    for method, exact in (("ei", ("samples_generated", "mean_reward", "kept_mean_reward", "kept_correct",
                                  "correct_without_password", "per_domain")),
                          ("dpo", ("samples_generated", "n_pairs", "valid_pair_share", "correct_without_password"))):
        one, two = os.path.join(runs, "one", method), os.path.join(runs, mode, method)
        a, b = read_jsonl(os.path.join(one, "results.jsonl")), read_jsonl(os.path.join(two, "results.jsonl"))
        assert without(a[:1]) == without(b[:1]) and [r["round"] for r in b] == [0, 1]
        for k in exact:  # the same samples (so the same rewards, kept samples and pairs)
            assert a[1][k] == b[1][k], (method, k)
        for k in set(a[1]) - set(exact) - {"config", "method", "round"}:  # training logs
            assert a[1][k] == pytest.approx(b[1][k], rel=1e-5, abs=1e-5), (method, k)
        assert_same_weights(os.path.join(one, "model"), os.path.join(two, "model"))
    assert read_jsonl(os.path.join(runs, "one", "dpo", "results.jsonl"))[1]["n_pairs"] > 0  # DPO steps did run


def test_parallel_option_is_checked(tmp_path):
    import elicit_rl as RL
    import elicit_sft as ES
    import train_lock as TL
    for main, cfg in ((TL.main, TL.Config(out_dir=str(tmp_path / "a"))), (ES.main, ES.Config(locked=str(tmp_path))),
                      (RL.main, RL.Config(locked=str(tmp_path)))):
        with pytest.raises(ValueError, match=r"--parallel='zero': use one of ddp, fsdp"):
            main(replace(cfg, parallel="zero"))
