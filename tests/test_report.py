"""report.py: the report's assembly on a tiny run (every section, two independent units, about a minute; the numbers
themselves are meaningless at that size), its store of finished runs (resume on a fresh checkout), exact commands,
and the statistics it reports."""
import glob
import json
import math
import os
import shutil
import shlex
import statistics

import pytest
import torch

import elicit_noise
import elicit_prompt
import elicit_rl
import elicit_sft
import elicit_steer
import report as RP
import stats
import train_lock
import train_policy
from common import parse_cli

SCRIPTS = {"train_lock.py": train_lock, "elicit_sft.py": elicit_sft, "elicit_rl.py": elicit_rl,
           "train_policy.py": train_policy, "elicit_noise.py": elicit_noise, "elicit_steer.py": elicit_steer,
           "elicit_prompt.py": elicit_prompt}
SECTIONS = ["Policies and locks", "Fig. 6: section 7", "Fig. 13: weak-sample unlocking", "Fig. 5 / 14: RL",
            "Fig. 16: SFT, then RL", "Fig. 3 / 15: weaker demonstrations", "Fig. 4 / 10: cross-domain",
            "Fig. 17: a domain left out of locking", "Fig. 9: setting trigger", "Prompting baselines",
            "Prompting: a lock trained with few-shot contexts",
            "Beyond the paper: methods x locks"]


def test_unknown_scale_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--scale='huge'"):
        RP.main(RP.Config(scale="huge", out_dir=str(tmp_path)))


def test_every_claim_threshold_is_fixed_in_the_module():
    for key in ("fig6_scratch", "fig6_amount", "fig13"):
        assert isinstance(RP.CLAIMS[key], stats.Claim)
    assert RP.CLAIMS["fig6_scratch"].low == 2 and RP.CLAIMS["fig6_scratch"].high == 4


def test_lock_labels_name_the_scale_s_own_amounts():
    assert RP.lock_label((12_500, 50_000, 200_000), "ft12k") == "fine-tuning lock, 12.5k locking examples"
    assert RP.lock_label((12_500, 50_000, 200_000), "scratch") == "locked from scratch (200k locking examples)"
    assert RP.lock_label((6_250, 25_000), "scratch") == "locked from scratch (25k locking examples)"
    assert RP.lock_label((200, 800), "ft200") == "fine-tuning lock, 200 locking examples"
    assert RP.lock_label((200, 800), "ft50k") == "ft50k"  # not this scale's amount: the key itself


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny report made by one process with one thread: what --workers processes (one thread each) must match."""
    root = tmp_path_factory.mktemp("report")
    cfg = RP.Config(scale="tiny", out_dir=str(root / "out"), work_dir=str(root / "work"), plots=True, device="cpu",
                    workers=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        RP.main(cfg)
    finally:
        torch.set_num_threads(threads)
    return cfg, root


def test_report_has_every_section_with_claim_numbers_verdict_rule_and_commands(tiny):
    cfg, _ = tiny
    text = open(os.path.join(cfg.out_dir, "REPORT.md")).read()
    res = json.load(open(os.path.join(cfg.out_dir, "results.json")))
    assert list(res["sections"]) == SECTIONS
    for name in SECTIONS:
        sec = res["sections"][name]
        body = text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        assert f"**The paper.** {sec['claim']}" in body and all(line in body for line in sec["table"])
        assert f"**Verdict: {sec['verdict']['result']}**, decided by the threshold fixed before the run: " \
               f"{sec['verdict']['rule']}." in body
        assert f"| {name} | {sec['verdict']['result']} |" in text
        assert res["commands"][name] and all(c in body for c in res["commands"][name])
    assert res["wall_seconds"] > 0 and len(res["run_seconds"]) > 60


def test_every_command_rebuilds_the_config_of_its_run(tiny):
    """The commands in the report are exact: parsed back with the script's own parser they give the config stored
    with the run's result."""
    cfg, _ = tiny
    res = json.load(open(os.path.join(cfg.out_dir, "results.json")))
    stored = {}
    for path in glob.glob(os.path.join(cfg.out_dir, "store", "**", "*.json"), recursive=True):
        if not os.path.basename(path).startswith("_"):
            d = json.load(open(path))
            stored[d["config"]["out_dir"]] = d["config"]
    n = 0
    for cmds in res["commands"].values():
        for line in cmds:
            argv = shlex.split(line)
            assert argv[0] == "python"
            got = json.loads(json.dumps(parse_cli(SCRIPTS[argv[1]].Config, argv[2:]).__dict__))
            assert got == stored[got["out_dir"]], line
            n += 1
    assert n > 60


def test_fig6_intervals_come_from_the_units_curves(tiny):
    cfg, _ = tiny
    data = json.load(open(os.path.join(cfg.out_dir, "results.json")))["sections"]["Fig. 6: section 7"]["data"]
    for kind, units in data["units"].items():
        assert len(units) == 2  # independent units: one lock per seed
        curves = [stats.Curve(tuple(u["ks"]), tuple(u["ys"]), u["locked"], u["ceiling"]) for u in units]
        want = stats.bootstrap_k(curves, RP.FRAC, level=RP.LEVEL)
        got = data["k90"][kind]
        assert str(want["point"]) == str(got["point"]) or want["point"] == pytest.approx(got["point"])
        for i, k in enumerate(data["ks"]):
            m = statistics.mean(u["ys"][i] for u in units)
            assert data["curves"][kind][str(k)][0] == pytest.approx(m)


def without_checkpoints(cfg, root):
    """Move the fixture's work dir away (a fresh checkout has none) for the length of a with-block."""
    class Ctx:
        def __enter__(self):
            os.rename(cfg.work_dir, str(root / "work_saved"))

        def __exit__(self, *exc):
            shutil.rmtree(cfg.work_dir, ignore_errors=True)
            os.rename(str(root / "work_saved"), cfg.work_dir)
    return Ctx()


def test_a_fresh_checkout_resumes_from_the_store_without_running_anything(tiny, tmp_path, capsys):
    """out_dir/store/ is all a later session needs: with the checkpoints gone (a fresh checkout keeps only what was
    committed) the report is rebuilt from the stored results, with the same numbers and no run. A stored result made
    on another machine is kept as it is, with a warning at start, and REPORT.md says that it mixes machines."""
    cfg, root = tiny
    made = open(os.path.join(cfg.out_dir, "REPORT.md")).read()
    assert "Mixed machines" not in made and f"stored results were made on {RP.machine_label(RP.machine())}." in made
    out = tmp_path / "out"
    shutil.copytree(cfg.out_dir, out)
    before = json.load(open(out / "results.json"))
    stored = json.load(open(out / "store" / "pi_lo_s0.json"))
    assert stored["machine"]["torch"] == torch.__version__ and stored["machine"]["cpu"]  # where the run was made
    stored["machine"] = {**stored["machine"], "cpu": "Other CPU 9000", "threads": 7}
    json.dump(stored, open(out / "store" / "pi_lo_s0.json", "w"))
    capsys.readouterr()
    with without_checkpoints(cfg, root):
        RP.main(RP.Config(scale="tiny", out_dir=str(out), work_dir=cfg.work_dir, plots=False, device="cpu"))
        assert os.listdir(cfg.work_dir) == []  # nothing was trained or elicited
    after = json.load(open(out / "results.json"))
    for name in SECTIONS:
        assert json.dumps(after["sections"][name]["data"]) == json.dumps(before["sections"][name]["data"]), name
    assert len(after["invocation_seconds"]) == len(before["invocation_seconds"]) + 1
    said = capsys.readouterr().out
    assert "warning" in said and "1 result(s) made elsewhere (1 on Other CPU 9000, kernels" in said
    n = len(after["run_seconds"])  # every run is stored, the RL methods in their lock's folder
    assert n == len(glob.glob(str(out / "store" / "**" / "[!_]*.json"), recursive=True)) > 10
    assert f"made on 2 machines ({n - 1} on {RP.machine_label(RP.machine())}; 1 on Other CPU 9000" in \
        open(out / "REPORT.md").read()
    assert RP.mixed_machines_note({"a": 3}) == "" and RP.machine_label(None) == "not recorded"
    assert "predate the machine record" in RP.machines_note({"not recorded": 5})


def test_an_invocation_stopped_midway_keeps_its_wall_clock(tmp_path):
    """store/_invocations.json is rewritten as an invocation runs: what a killed one leaves (read before stop()) is
    its time so far, to within the beat; the next invocation adds an entry instead of overwriting it."""
    import time

    class R:
        store, invocations = str(tmp_path), [100.0]
    first = RP.InvocationClock(R, every=0.05)
    time.sleep(0.4)
    left = json.load(open(tmp_path / "_invocations.json"))  # what a kill now would leave
    assert left[0] == 100.0 and len(left) == 2 and 0.25 <= left[1] <= 0.45
    first.stop()
    second = RP.InvocationClock(R, every=0.05)
    second.stop()
    final = json.load(open(tmp_path / "_invocations.json"))
    assert len(final) == 3 and final[:2] == R.invocations[:2] and final[1] >= left[1] and final[2] < 0.2


def test_each_section_alone_reads_the_store_and_runs_nothing(tiny, tmp_path):
    """The sections run in any order (--workers walks them backwards too): each one, called first in a fresh process
    with every result stored and no checkpoint on disk, declares the checkpoints it reads itself, so its stored
    results match their recorded inputs and nothing runs; its data are those of the full report."""
    cfg, root = tiny
    out = tmp_path / "out"
    shutil.copytree(cfg.out_dir, out)
    full = json.load(open(out / "results.json"))["sections"]
    with without_checkpoints(cfg, root):
        for name, fn in RP.sections(RP.Runner(RP.Config(scale="tiny", out_dir=str(out), work_dir=cfg.work_dir,
                                                        device="cpu"), "tiny")):
            R = RP.Runner(RP.Config(scale="tiny", out_dir=str(out), work_dir=cfg.work_dir, device="cpu"), "tiny")
            got = RP.jsonable(fn(R)["data"])
            assert R.ran == 0 and os.listdir(cfg.work_dir) == [], name
            assert json.dumps(got) == json.dumps(full[name]["data"]), name


def test_a_missing_result_rebuilds_only_what_it_needs(tiny, tmp_path):
    """Delete one stored elicitation result, with no checkpoints on disk: the rerun retrains the lock it needs (and
    that lock's pretrained base, by the base lock's pretraining alone; the same seed gives the same models) and runs
    that one elicitation again, with the same rows."""
    cfg, root = tiny
    out = tmp_path / "out"
    shutil.copytree(cfg.out_dir, out)
    name = "sft_det_ft200_s1"
    old = json.load(open(out / "store" / f"{name}.json"))["result"]
    os.remove(out / "store" / f"{name}.json")
    with without_checkpoints(cfg, root):
        RP.main(RP.Config(scale="tiny", out_dir=str(out), work_dir=cfg.work_dir, plots=False, device="cpu"))
        assert sorted(os.listdir(cfg.work_dir)) == ["det_ft200_s1", "det_ft800_s1", name]  # lock, its base, the run
        base = os.path.join(cfg.work_dir, "det_ft800_s1")  # only what the lock read: pretrained/, not the 800 lock
        assert os.path.isfile(os.path.join(base, "pretrained", "config.json"))
        assert not os.path.exists(os.path.join(base, "config.json"))
    new = json.load(open(out / "store" / f"{name}.json"))["result"]
    strip = (lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "train_seconds", "wall_seconds")}
                           for r in rows])
    assert strip(new["rows"]) == strip(old["rows"]) and new["locked"] == old["locked"]


def test_a_stored_result_whose_input_changed_is_run_again(tiny, tmp_path):
    """Each stored result records the configs of the checkpoints it read (transitively). If one of them is no longer
    the config the report would use (here: the lock was made with another number of epochs), the stored result is
    stale and runs again; a result stored before inputs were recorded is trusted."""
    cfg, _ = tiny
    out = tmp_path / "out"
    shutil.copytree(cfg.out_dir, out)
    name = "prompt_lock_pi_lo_s0"
    path = out / "store" / f"{name}.json"
    entry = json.load(open(path))
    assert {"lock_pi_lo_s0", "pi_lo_s0", "det_ft800_s0"} <= set(entry["deps"])  # the lock, its samples, its base
    other = json.load(open(out / "store" / "prompt_lock_pi_lo_s1.json"))
    del other["deps"]
    json.dump(other, open(out / "store" / "prompt_lock_pi_lo_s1.json", "w"))
    entry["deps"]["lock_pi_lo_s0"]["epochs"] += 1
    entry["result"] = "stale"
    json.dump(entry, open(path, "w"))
    RP.main(RP.Config(scale="tiny", out_dir=str(out), work_dir=cfg.work_dir, plots=False, device="cpu"))
    rerun = json.load(open(path))
    assert rerun["result"] != "stale"
    assert rerun["deps"] == json.load(open(os.path.join(cfg.out_dir, "store", f"{name}.json")))["deps"]
    assert "deps" not in json.load(open(out / "store" / "prompt_lock_pi_lo_s1.json"))  # trusted, not rerun


def test_beyond_prompting_attacks_leave_out_prompts_that_hold_the_password(tiny):
    """The table's prompting attack is the best informative prompt without the password token (decoys, N-shot,
    prefill); near misses hold the real password, so they get their own row."""
    cfg, _ = tiny
    data = json.load(open(os.path.join(cfg.out_dir, "results.json")))["sections"][SECTIONS[-1]]["data"]
    lock_type = "password lock, model pi_weak (pi_lo)"
    got = data[f"{lock_type} | best prompting attack (no password token; informative rows)"]
    near = data[f"{lock_type} | best near miss (holds the password token)"]
    for s, (g, n) in enumerate(zip(got, near)):
        conds = json.load(open(os.path.join(cfg.out_dir, "store", f"beyond_prompt_lock_pi_lo_s{s}.json")))
        usable = [c for c in conds["result"]["conditions"]
                  if not c["password"] and c["correct"] is not None and not c["uninformative"]]
        assert g == max(c["correct"] for c in usable if c["kind"] != "near miss")
        assert n == max(c["correct"] for c in usable if c["kind"] == "near miss")
        assert all("<pwd>" not in c["example"] for c in usable if c["kind"] != "near miss")


def test_plots_are_written_when_matplotlib_is_installed(tiny):
    pytest.importorskip("matplotlib")
    cfg, _ = tiny
    text = open(os.path.join(cfg.out_dir, "REPORT.md")).read()
    for name in ("fig6_sft.png", "fig13_weak.png", "fig5_rl.png"):
        assert os.path.getsize(os.path.join(cfg.out_dir, name)) > 5000 and f"]({name})" in text


def test_verdict_is_data():
    v = RP.verdict("partly", "rule text", x=1)
    assert v == {"result": "partly", "rule": "rule text", "numbers": {"x": 1}}
    assert math.isinf(stats.k_to_reach((4, 16), (0.1, 0.2), 0.5))


def test_rl_after_sft_rebuilds_the_saved_sft_model_it_starts_from(tiny, tmp_path):
    """Fig. 16's RL starts from a model that elicit_sft.py saved: with its result deleted and no checkpoints on disk,
    the rerun rebuilds that SFT model (and the lock and policy it needs) and then the RL run, with the same rows."""
    cfg, root = tiny
    out = tmp_path / "out"
    shutil.copytree(cfg.out_dir, out)
    name = "rl_after_sft_lock_pi_lo_s1"
    old = json.load(open(out / "store" / f"{name}.json"))
    assert old["config"]["lock_config"].endswith("lock_pi_lo_s1") and "/models/k4_s1_e" in old["config"]["locked"]
    os.remove(out / "store" / f"{name}.json")
    with without_checkpoints(cfg, root):
        RP.main(RP.Config(scale="tiny", out_dir=str(out), work_dir=cfg.work_dir, plots=False, device="cpu"))
        made = set(os.listdir(cfg.work_dir))
        assert {"pre_rl_sft_lock_pi_lo_s1", "lock_pi_lo_s1", "pi_hi_s1", name} <= made  # demos: pi_hi's samples
        assert "lock_pi_hi_s1" not in made
    new = json.load(open(out / "store" / f"{name}.json"))["result"]
    strip = (lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows])
    assert strip(new) == strip(old["result"])


def test_new_sections_report_their_statistics(tiny):
    cfg, _ = tiny
    secs = json.load(open(os.path.join(cfg.out_dir, "results.json")))["sections"]
    f3 = secs["Fig. 3 / 15: weaker demonstrations"]["data"]
    for kind in ("regular lock", "adversarial lock"):
        units = f3["units"][kind]
        assert len(units) == 2 and all(0 <= u["inter"] <= 1 for u in units)
        over = [max(y for ys in u["by_len"].values() for y in ys.values()) - u["inter"] for u in units]
        assert f3["overshoot"][kind] == pytest.approx(over)
    f16 = secs["Fig. 16: SFT, then RL"]["data"]
    assert len(f16["units"]) == 3 and all(len(u) == 2 for u in f16["units"].values())
    assert all(min(u["ks"]) > 0 for us in f16["units"].values() for u in us)  # round 0 is left out (log x)
    f17 = secs["Fig. 17: a domain left out of locking"]["data"]
    assert set(f17["units"]) == {"regular lock", "never locked on A"}
    reg, held = f17["units"]["regular lock"], f17["units"]["never locked on A"]
    gap = statistics.mean(u["hi"] - u["lo"] for u in reg)
    leak = (statistics.mean(u["lo"] for u in held) - statistics.mean(u["lo"] for u in reg)) / max(1e-9, gap)
    assert f17["leak"] == pytest.approx(leak)


def test_units_report_reads_the_store_for_some_seeds_only(tiny, tmp_path):
    """--units=(1,): a report of one unit from the store, written apart (REPORT_units.md), nothing run, the full
    report and the invocation log left alone."""
    cfg, root = tiny
    out = tmp_path / "out"
    shutil.copytree(cfg.out_dir, out)
    before = (out / "REPORT.md").read_text()
    inv = json.load(open(out / "store" / "_invocations.json"))
    with without_checkpoints(cfg, root):
        RP.main(RP.Config(scale="tiny", out_dir=str(out), work_dir=cfg.work_dir, device="cpu", units=(1,)))
        assert os.listdir(cfg.work_dir) == []
    res = json.load(open(out / "results_units.json"))
    units = res["sections"]["Fig. 6: section 7"]["data"]["units"]
    assert all(len(u) == 1 for u in units.values())
    full = json.load(open(out / "results.json"))["sections"]["Fig. 6: section 7"]["data"]["units"]
    assert all(units[k][0] == full[k][1] for k in units)  # seed 1 is the second unit of the full report
    assert (out / "REPORT.md").read_text() == before and "--units=\"(1,)\"" in (out / "REPORT_units.md").read_text()
    assert json.load(open(out / "store" / "_invocations.json")) == inv


def test_two_workers_make_the_same_report_as_one_process(tiny, tmp_path):
    """--workers=2 with unit 1 to make (unit 0's results stored, no checkpoint on disk): two processes share unit 1's
    runs through store/_claims, every section of it, and the report (every section's numbers, verdicts and commands)
    is the one process's, run for run; no claim is left behind."""
    cfg, root = tiny
    out = tmp_path / "out"
    shutil.copytree(os.path.join(cfg.out_dir, "store"), out / "store",  # unit 0's results (rl_*_s0/ folders too)
                    ignore=lambda d, names: [n for n in names if "_s1" in n or n.startswith("_")])
    assert 0 < len(os.listdir(out / "store")) < len(os.listdir(os.path.join(cfg.out_dir, "store")))
    with without_checkpoints(cfg, root):
        RP.main(RP.Config(scale="tiny", out_dir=str(out), work_dir=cfg.work_dir, plots=False, device="cpu",
                          workers=2))
    one, two = (json.load(open(os.path.join(d, "results.json"))) for d in (cfg.out_dir, out))
    def untimed(x):  # wall and training seconds differ from run to run; every other number must not
        if isinstance(x, dict):
            return {k: untimed(v) for k, v in x.items() if not k.endswith("seconds")}
        return [untimed(v) for v in x] if isinstance(x, list) else x
    paths = (lambda x: json.dumps(untimed(x)).replace(cfg.work_dir, "W").replace(str(tmp_path / "work"), "W"))
    for name in SECTIONS:
        for key in ("data", "verdict", "table"):
            assert paths(two["sections"][name][key]) == paths(one["sections"][name][key]), (name, key)
    assert paths(two["commands"]) == paths(one["commands"])
    made = {n for n in one["run_seconds"] if "_s1" in n}
    assert made and set(two["run_seconds"]) == made  # unit 1's runs, each timed once, by whichever worker made it
    assert [f for f in os.listdir(out / "store" / "_claims") if f.endswith(".claim")] == []


def test_a_worker_skips_a_run_another_process_holds(tmp_path):
    """A worker never runs what a live process has claimed: it gets Later, and any use of Later raises Pending (so no
    decision is taken on a missing result). A claim whose process is gone is taken over."""
    R = RP.Runner(RP.Config(scale="tiny", out_dir=str(tmp_path / "out"), work_dir=str(tmp_path / "work"),
                            device="cpu"), "tiny")
    R.coop = True
    holder = RP.Runner(RP.Config(scale="tiny", out_dir=str(tmp_path / "out"), work_dir=str(tmp_path / "work"),
                                 device="cpu"), "tiny")
    os.makedirs(R.claims, exist_ok=True)
    with open(R._claim_path("pi_lo_s0"), "w") as f:
        f.write(str(os.getppid()))  # a live process that is not this one
    got = R.policy("s", "pi_lo_s0", seed=0, **R.S["policies"]["pi_lo"])
    assert isinstance(got, RP.Later) and not os.path.exists(R.path("pi_lo_s0"))
    for use in (lambda: got["correct_greedy"], lambda: bool(got), lambda: list(got), lambda: got + 1,
                lambda: got.get("x"), lambda: f"{got:.3f}", lambda: os.path.join(got, "x")):
        with pytest.raises(RP.Pending):
            use()
    # a lock that reads the held policy's samples is not run either
    lock = R.lock("s", "lock_pi_lo_s0", seed=0, weak_samples=os.path.join(R.path("pi_lo_s0"), "samples.jsonl"))
    assert isinstance(lock, RP.Later) and not os.path.exists(R.path("lock_pi_lo_s0"))
    assert not holder.busy("nothing") and R.busy("pi_lo_s0")
    with open(R._claim_path("pi_lo_s0"), "w") as f:
        f.write("999999999")  # no such process: a stopped run's claim
    assert not R.busy("pi_lo_s0") and R.claim("pi_lo_s0") and R._holder("pi_lo_s0") == os.getpid()
    R.release("pi_lo_s0")
    assert R._holder("pi_lo_s0") is None


def test_fig16_compares_the_two_sft_lengths_unit_by_unit(tiny):
    """Fig. 16's "stop fine-tuning earlier": per unit, EI's last correctness after each SFT length is the stored RL
    run's, and the statistic is the mean of the per-unit differences (shorter minus longer)."""
    cfg, _ = tiny
    data = json.load(open(os.path.join(cfg.out_dir, "results.json")))["sections"]["Fig. 16: SFT, then RL"]["data"]
    per = data["earlier"]["per_length"]
    assert sorted(map(int, per)) == list(RP.SCALES["tiny"]["pre_rl_epochs"])
    for e, p in per.items():
        for i, s in enumerate(RP.SCALES["tiny"]["seeds"]):
            stored = json.load(open(os.path.join(cfg.out_dir, "store", f"rl_after_sft_e{e}_lock_pi_lo_s{s}.json")))
            assert p["rl"][i] == stored["result"][-1]["correct_without_password"]
            assert stored["config"]["locked"].endswith(f"pre_rl_sft_e{e}_lock_pi_lo_s{s}/models/k4_s{s}_e"
                                                       f"{int(e) * RP.SCALES['tiny']['sft']['epoch_mult']:g}")
    few, many = per[str(min(map(int, per)))], per[str(max(map(int, per)))]
    want = statistics.mean(a - b for a, b in zip(few["rl"], many["rl"]))
    assert data["earlier"]["diff"]["point"] == pytest.approx(want)
