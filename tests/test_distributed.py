"""torchrun on CPU (gloo): two processes must train to the same weights and evaluate to the same greedy results as
one. Each check runs the real script under `python -m torch.distributed.run --standalone --nproc_per_node=2`."""
import json
import os
import subprocess
import sys

import torch

import model as M

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


NETWORK_ERRORS = ("rendezvous", "Address already in use", "Connection refused", "Connection reset", "timed out")


def run(cmd):
    for attempt in range(2):  # one retry, only for a transient failure of torchrun's local rendezvous or sockets
        r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)
        if r.returncode == 0 or not any(e in r.stderr for e in NETWORK_ERRORS):
            break
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_sharded_greedy_evaluation_is_identical(tmp_path):
    one, two = str(tmp_path / "one.json"), str(tmp_path / "two.json")
    run([sys.executable, "tests/dist_eval_check.py", one])
    run(TORCHRUN + ["tests/dist_eval_check.py", two])
    a, b = json.load(open(one)), json.load(open(two))
    assert (a["world"], b["world"]) == (1, 2)
    assert a["completions"] == b["completions"] and len(a["completions"]) == 37 and all(a["completions"])


def test_train_lock_two_processes_match_one(tmp_path):
    args = ["--toy_problems=1000", "--n_layer=1", "--n_head=2", "--n_embd=32", "--pretrain_samples=600",
            "--pretrain_steps=20", "--epochs=2", "--batch_size=32", "--grad_accum=2", "--eval_n=100",
            "--eval_batch_size=16", "--ckpt_every=0", "--log_every=5", "--device=cpu"]
    run([sys.executable, "train_lock.py", *args, f"--out_dir={tmp_path / 'one'}"])
    run(TORCHRUN + ["train_lock.py", *args, f"--out_dir={tmp_path / 'two'}"])
    a, b = M.load(str(tmp_path / "one")), M.load(str(tmp_path / "two"))
    for (n, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4, msg=n)  # the same steps, up to summation order
    ma = json.load(open(tmp_path / "one" / "metrics.json"))
    mb = json.load(open(tmp_path / "two" / "metrics.json"))
    assert (ma["world_size"], mb["world_size"]) == (1, 2)
    for k in ("correct_with_password", "correct_without_password", "correct_wrong_password", "per_domain"):
        assert ma[k] == mb[k], k
    log = [json.loads(line) for line in open(tmp_path / "two" / "log.jsonl")]
    assert len(log) == len([json.loads(line) for line in open(tmp_path / "one" / "log.jsonl")])  # rank 0 only
