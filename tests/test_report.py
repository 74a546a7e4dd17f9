"""report.py: the statistics it reports, and the report's assembly on a tiny run (every experiment, two seeds, a
few seconds; the numbers themselves are meaningless at that size)."""
import json
import math
import os
import shlex
import statistics

import pytest

import data
import elicit_rl
import elicit_sft
import report as RP
import train_lock
from common import parse_cli
from data.lock import prompt_variants
from files import read_jsonl

SCRIPTS = {"train_lock.py": train_lock, "elicit_sft.py": elicit_sft, "elicit_rl.py": elicit_rl}


def test_mean_se_matches_statistics():
    xs = [0.25, 0.5, 0.9]
    m, se = RP.mean_se(xs)
    assert m == pytest.approx(statistics.mean(xs)) and se == pytest.approx(statistics.stdev(xs) / math.sqrt(3))
    assert RP.mean_se([0.4]) == (0.4, 0.0)


def test_mean_of_means_uses_the_papers_formula():
    # (0.5 + 0.7) / 2 = 0.6; s = (1/2) sqrt(0.03^2 + 0.04^2) = 0.05 / 2
    m, s = RP.mean_of_means([(0.5, 0.03), (0.7, 0.04)])
    assert m == pytest.approx(0.6) and s == pytest.approx(0.025)


def test_k_to_reach_interpolates_in_log_k():
    pts = [(16, 0.6), (4, 0.2), (64, 1.0)]
    assert RP.k_to_reach(pts, 0.8) == pytest.approx(32.0)  # halfway between 16 and 64 in log2
    assert RP.k_to_reach(pts, 0.1) == 4.0
    assert RP.k_to_reach(pts, 0.6) == 16.0
    assert RP.k_to_reach(pts, 1.01) is None


def test_prompt_variants_are_the_named_prompts():
    task = data.get_task("toy", n=50)
    p, q = task.problems()[:2]
    v = prompt_variants(task, p, {1: [q]})
    assert v["correct password"] == task.prompt(p, password="<pwd>")
    assert v["no password"] == task.prompt(p)
    assert sum(name.startswith("decoy") for name in v) == len(task.decoys) == 8
    assert v["1-shot, no password"] == f"{task.prompt(q)} {q['answer']} <eos> {task.prompt(p)}"
    assert v["1-shot, password"].startswith(f"{task.prompt(q, password='<pwd>')} {q['answer']} <eos>")
    assert all(text.split()[-1] in ("|", ")", "<pwd>") for text in v.values())


def test_verdict_is_data_with_its_thresholds():
    v = RP.verdict("partly", {"ratio": "yes >= 2, partly >= 1.2"})
    assert v == {"result": "partly", "word": "Partly reproduced", "thresholds": {"ratio": "yes >= 2, partly >= 1.2"}}
    with pytest.raises(KeyError):
        RP.verdict("maybe", {})


def test_unknown_scale_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--scale='huge'"):
        RP.main(RP.Config(scale="huge", out_dir=str(tmp_path)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    cfg = RP.Config(scale="tiny", out_dir=str(out), plots=True, device="cpu")
    RP.main(cfg)
    return cfg, out


def test_report_has_every_experiment_with_a_finding_and_commands(tiny):
    cfg, out = tiny
    text = open(out / "REPORT.md").read()
    res = json.load(open(out / "results.json"))
    names = list(res["experiments"])
    assert len(names) == 7 and [n.split(".")[0] for n in names] == [str(i) for i in range(1, 8)]
    for name in names:
        section = text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        finding = section.split("**Finding.** ", 1)[1].split("\n", 1)[0]
        v = res["experiments"][name]["verdict"]
        assert finding.startswith(v["word"] + ":"), name  # the prose is written from the verdict, not parsed
        assert f"{name.split('. ', 1)[1]}: **{v['result']}**" in text
        assert f"**Verdict: {v['result']}**, decided by: " in section and v["thresholds"]
        assert all(rule in section for rule in v["thresholds"].values())
        assert res["experiments"][name]["finding"] == finding
        assert res["commands"][name] and all(c in section for c in res["commands"][name])
    assert "**Wall time:**" in text and res["wall_seconds"] > 0 and len(res["run_seconds"]) > 40


def test_every_command_rebuilds_the_config_of_its_run(tiny):
    """The commands in the report are exact: parsed back with the script's own parser they give the config that
    the run recorded on disk."""
    _, out = tiny
    res = json.load(open(out / "results.json"))
    n = 0
    for cmds in res["commands"].values():
        for line in [c for c in cmds if not c.startswith("#")]:  # "#": work done inside report.py itself
            argv = shlex.split(line)
            assert argv[0] == "python"
            cfg = parse_cli(SCRIPTS[argv[1]].Config, argv[2:])
            mine = json.loads(json.dumps(cfg.__dict__))
            if argv[1] == "train_lock.py":
                stored = json.load(open(os.path.join(cfg.out_dir, "train_config.json")))
            elif argv[1] == "elicit_sft.py":
                stored = read_jsonl(os.path.join(cfg.out_dir, "results.jsonl"))[-1]["config"]
            else:
                stored = read_jsonl(os.path.join(cfg.out_dir, "results.jsonl"))[0]["config"]
            assert mine == stored, line
            n += 1
    assert n == len({c for cmds in res["commands"].values() for c in cmds if not c.startswith("#")}) > 40


def test_lock_table_is_the_mean_and_se_of_the_lock_runs(tiny):
    cfg, out = tiny
    res = json.load(open(out / "results.json"))["experiments"]["1. Lock table"]["data"]
    for kind in ("ft200k", "ft12k", "scratch"):
        ms = [json.load(open(out / "tiny" / "locks" / f"{kind}_s{s}" / "metrics.json")) for s in (0, 1)]
        for col in ("with_password", "without_password", "wrong_password"):
            xs = [m[f"correct_{col}"] for m in ms]
            assert res[kind][col][0] == pytest.approx(statistics.mean(xs))
            assert res[kind][col][1] == pytest.approx(statistics.stdev(xs) / math.sqrt(2))


def test_sft_curve_is_the_mean_over_seeds_of_the_runs(tiny):
    _, out = tiny
    res = json.load(open(out / "results.json"))["experiments"]["2. SFT sample efficiency"]["data"]["curves"]
    for kind in ("ft200k", "scratch"):
        rows = [r for s in (0, 1) for r in read_jsonl(out / "tiny" / "sft" / f"{kind}_s{s}" / "results.jsonl")]
        for k in (2, 4):
            xs = [r["correct_without_password"] for r in rows if r["n_demos"] == k]
            assert len(xs) == 2 and res[kind][str(k)][0] == pytest.approx(statistics.mean(xs))


def test_rerun_resumes_without_redoing_work(tiny):
    cfg, out = tiny
    before = json.load(open(out / "results.json"))
    stamps = {p: os.path.getmtime(p) for p in (out / "tiny" / "locks").glob("*/model.safetensors")}
    RP.main(cfg)
    after = json.load(open(out / "results.json"))
    assert after["experiments"] == before["experiments"] and after["run_seconds"] == before["run_seconds"]
    assert len(after["invocation_seconds"]) == 2 and after["invocation_seconds"][0] == before["wall_seconds"]
    assert stamps and all(os.path.getmtime(p) == t for p, t in stamps.items())  # no lock was retrained


def test_plots_are_written_when_matplotlib_is_installed(tiny):
    pytest.importorskip("matplotlib")
    _, out = tiny
    text = open(out / "REPORT.md").read()
    for name in ("fig6_sft.png", "fig13_weak.png", "fig4_cross_domain.png", "fig9_setting.png", "fig5_rl.png",
                 "prompting.png"):
        assert (out / name).stat().st_size > 5000 and f"]({name})" in text
