"""tools/gpu_check.py on CPU with --tiny=True: every section is recorded with a status, the sections that can run on a
CPU run, their numbers agree with closed forms (KV-cache bytes, weight bytes, ln V at init, the fp32 fixture
tolerance of tests/test_model.py), and a section that fails or hangs is recorded without losing the others."""
import json
import math
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gpu_check as G  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def check(tmp, *args):
    out = os.path.join(tmp, "gpu_check.json")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gpu_check.py"), "--tiny=True", "--device=cpu",
                        f"--out={out}", *args], env=ENV, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(out) as f:
        return json.load(f), r.stdout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    result, stdout = check(str(tmp_path_factory.mktemp("gpu_check")), "--isolate=False")
    return result, stdout


def test_every_section_has_a_status_and_the_cpu_ones_ran(tiny):
    result, stdout = tiny
    assert list(result["sections"]) == list(G.SECTIONS)
    for name, r in result["sections"].items():
        assert r["status"] in ("ok", "skipped", "failed"), name
        assert r["status"] != "skipped" or r["reason"], name
        assert r["status"] != "failed" or r["error"], name
        assert r["status"] == "ok", (name, r.get("error"))  # on CPU every section can run
        assert name in stdout  # the summary has a line a section
    assert result["config"]["tiny"] is True and not any(f.endswith(".part") for f in os.listdir(
        os.path.dirname(result["config"]["out"])))


def test_environment_and_sdpa(tiny):
    env, sdpa = tiny[0]["sections"]["environment"], tiny[0]["sections"]["sdpa"]
    assert env["gpu"] == {"status": "skipped", "reason": "no CUDA"}
    assert env["copy_GBps"] > 0 and all(v > 0 for v in env["gemm_TFLOPs"].values())
    assert len(sdpa["calls"]) == 2 * (3 + len(G.Config().batches))  # two shapes: train, scoring, prefill, decodes
    for c in sdpa["calls"]:
        assert c["chosen"]["status"] == "ok" and c["MATH"]["status"] == "ok", c["call"]
        for b in G.BACKENDS:  # a backend that refuses the call is a finding with its reason, not a failure
            assert c[b]["status"] == "ok" and c[b]["ms"] > 0 and c[b]["max_abs_err"] < 1e-4 or \
                c[b]["status"] == "refused" and c[b]["error"], (c["call"], b)
        assert c["default"] in [b for b in G.BACKENDS if c[b]["status"] == "ok"]


def test_parity_on_the_fixtures(tiny):
    p = tiny[0]["sections"]["parity"]
    fixtures = [d for d in os.listdir(os.path.join(ROOT, "tests", "fixtures"))
                if os.path.isfile(os.path.join(ROOT, "tests", "fixtures", d, "expected.safetensors"))]
    assert len(p["rows"]) == 2 * len(fixtures)
    assert p["float32"]["max_abs_err"] < 1e-4  # tests/test_model.py's tolerance
    assert p["float32"]["greedy_equal"] == p["float32"]["greedy_of"] == 2 * len(fixtures)
    # bf16 really ran (8 bits of mantissa: errors well above fp32's) and stays within a few % of the logits
    assert 1e-3 < p["bfloat16"]["max_abs_err"] < 0.1 * p["bfloat16"]["logit_scale"]
    assert p["bfloat16"]["argmax_agree"] >= 0.9


def test_decode_rows_against_their_floor(tiny):
    d = tiny[0]["sections"]["decode"]
    (P, N), batches, shapes = G.SIZES["decode"][1], G.Config().batches, G.Config().shapes
    assert len(d["rows"]) == 2 * len(batches) * len(shapes)
    for r in d["rows"]:
        if r["compile"]:  # CUDA graphs: skipped on CPU, with the reason
            assert r["status"] == "skipped" and "no CUDA" in r["reason"]
            continue
        assert r["status"] == "ok", r
        c = G.TINY[r["shape"]]
        kv_heads, head_dim = c.get("n_kv_head", c["n_head"]), c["n_embd"] // c["n_head"]
        # K and V, every layer, every slot, all P + N - 1 columns, 2 bytes (bf16)
        assert r["kv_bytes"] == r["batch"] * 2 * c["n_layer"] * kv_heads * head_dim * (P + N - 1) * 2
        per_layer = c["n_embd"] * (c["n_head"] + 2 * kv_heads) * head_dim + c["n_embd"] ** 2 + \
            3 * c["n_embd"] * c["intermediate_size"] + 2 * c["n_embd"]
        assert r["weight_bytes"] == 2 * (c["n_layer"] * per_layer + c["n_embd"] + c["vocab_size"] * c["n_embd"])
        assert r["floor_ms"] == pytest.approx(1000 * (r["weight_bytes"] + r["kv_bytes"]) / (d["copy_GBps"] * 1e9))
        assert r["ms_per_step"] > 0 and r["ratio"] == pytest.approx(r["ms_per_step"] / r["floor_ms"])


def test_training_step_memory_and_mfu(tiny):
    t = tiny[0]["sections"]["train"]
    assert [(r["shape"], r["train_dtype"], r["optimizer"], r["grad_checkpoint"]) for r in t["rows"]] == \
        [tuple(x) for x in G.TRAIN_RUNS]
    for r in t["rows"]:
        assert r["status"] == "ok", r
        bytes_a_param = {"fp32": 4, "bf16": 2}[r["train_dtype"]]
        assert r["peak_bytes"] >= 2 * r["params"] * bytes_a_param  # weights and their gradients at least
        assert 0.3 < r["peak_over_estimate"] < 3
        assert abs(r["loss"] - math.log(G.TINY[r["shape"]]["vocab_size"])) < 0.2  # random init: about ln V
        assert 0 < r["mfu"] <= r["mfu_hw"] and r["tokens"] == math.prod(G.SIZES["train"][1])


def test_fsdp_one_rank_matches_the_unsharded_model(tiny):
    checks = {c["check"].split(",")[0].split(":")[0]: c for c in tiny[0]["sections"]["fsdp"]["checks"]}
    assert all(c["status"] == "ok" for c in checks.values()) and len(checks) == 5
    assert checks["no-grad forward"]["max_abs_diff"] < 1e-5
    step = checks["train_step"]
    assert step["loss_fsdp"] == pytest.approx(step["loss_ref"], rel=1e-6) and step["weights_max_abs_diff_in_lr"] < 1e-2
    assert checks["evaluation copy"]["completions_equal"] and checks["evaluation copy"]["weights_max_abs_diff"] == 0
    assert checks["parallel.save_model"]["weights_max_abs_diff"] == 0
    assert checks["parallel.save_model"]["forward_max_abs_diff"] == 0
    assert checks["optimizer state saved (torch.save) and loaded"]["weights_max_abs_diff"] < 1e-7


def test_a_failed_section_is_recorded_in_its_own_process(tmp_path, capsys):
    out = str(tmp_path / "gpu_check.json")
    G.main(G.Config(tiny=True, device="cpu", sections=("parity", "environment"), fixtures="/no/such/dir", out=out))
    with open(out) as f:
        result = json.load(f)
    p, env = result["sections"]["parity"], result["sections"]["environment"]
    assert p["status"] == "failed" and "/no/such/dir" in p["error"] and "Traceback" in p["stderr_tail"]
    assert env["status"] == "ok" and env["copy_GBps"] > 0  # the next section still ran, in a process of its own
    assert "parity       failed" in capsys.readouterr().out


def test_a_hung_section_is_killed_and_keeps_its_rows(tmp_path):
    part = str(tmp_path / "x.part")
    hang = f"import json, time; json.dump({{'status': 'running', 'rows': [1]}}, open({part!r}, 'w')); time.sleep(60)"
    t0 = time.time()
    r = G.run_section([sys.executable, "-c", hang], part, timeout=2)
    assert time.time() - t0 < 30 and r["status"] == "failed" and "timeout" in r["error"] and r["rows"] == [1]
    r = G.run_section([sys.executable, "-c", "import sys; sys.exit(3)"], part, timeout=30)
    assert r["status"] == "failed" and "exit code 3" in r["error"]
