"""
report.py: reproduce the paper's findings on the embedded toy task with one command, and write a report that can
be checked figure by figure against the paper's figures (Figs. 3-6, 9, 13 and its prompting baselines).

Experiments, each run with the three scripts (train_lock.py, elicit_sft.py, elicit_rl.py) called in this process:
  1. Lock table: correctness with the password, without it and with a decoy, for fine-tuning locks from two
     pretraining sizes (200,000 and 12,500 strong samples: pi_strong_base) and a lock trained from scratch.
  2. SFT sample efficiency (Fig. 3 / Fig. 6): correctness without the password after SFT on k strong demos.
  3. Weak-sample unlocking (Fig. 12 / 13): SFT on k samples of the lock's own weak policy, 4x more epochs.
  4. Cross-domain generalisation (Fig. 4): k demos from one function group (A-D), correctness on the other three,
     for one password and for one password per domain.
  5. Setting trigger (Fig. 9): the strong policy is unlocked by another prompt notation, not a password token.
  6. RL (Fig. 5): expert iteration, filtering, DPO and iterated DPO against samples generated, on locks made with
     the noisy, the deterministic ("weak") and the fixedrdm weak policies.
  7. Prompting baselines (camera-ready figure): the password, near-miss variants of it, decoys, few-shot prompts.
Seeds: the three main locks are made once per seed, and seed s elicits lock s, so their error bars include the
locking run's own variance (the fine-tuning locks of one pretraining size share one pretrained model, pi_strong_base,
as in the paper). The per-domain, setting and RL locks are made once (from the 200k pretrained model) and their
seeds are elicitation seeds. Every number is greedy correctness on validation problems; +- is the standard
error of the mean over seeds.

Scales: full (3 seeds; about 53 minutes of runs on 2 quiet CPU cores: docs/report_full/REPORT.md), quick (1 seed,
shorter grids, one pretraining size, 1-epoch variant locks, short RL: 8.1 minutes on 2 CPU cores), tiny (seconds;
meaningless numbers; for the tests).

Commands:
  python report.py --quick           # reduced version: runs/report/REPORT.md in under 10 minutes on 2 CPU cores
  python report.py                   # full version, 3 seeds
  python report.py --plots=False     # without matplotlib (plots are optional: pip install matplotlib)
Running the same command again resumes: finished runs are read back from runs/report/<scale>/, not redone (delete
that folder to start over). Writes out_dir/REPORT.md (tables, findings, commands, wall time), out_dir/results.json
(every aggregated number, the commands and the run times) and out_dir/*.png.
"""
import json
import math
import os
import platform
import random
import shlex
import subprocess
import time
from dataclasses import asdict, dataclass, fields, replace

import torch

import elicit_rl
import elicit_sft
import model as model_lib
import train_lock
from common import Tokenizer, greedy_eval, mean_se, run_cli, same_config
from data.lock import Lock, prompt_variants
from errors import BadInput
from files import atomic_write_text, read_json, read_jsonl, write_json


@dataclass
class Config:
    quick: bool = False            # the reduced version (scale "quick")
    scale: str = ""                # full, quick or tiny; default: quick if --quick else full
    out_dir: str = "runs/report"
    plots: bool = True             # PNG plots (needs matplotlib; skipped with a note if it is missing)
    device: str = "cuda" if torch.cuda.is_available() else "cpu"


# -----------------------------------------------------------------------------
# What each scale runs. The lock settings are train_lock.py's defaults unless named here.

RL_METHODS = ("expert_iteration", "filtering", "iterated_dpo", "dpo")
DOMAINS = ("A", "B", "C", "D")
SCALES = {
    "full": dict(
        seeds=(0, 1, 2), locks=("ft200k", "ft12k", "scratch"), lock={}, scratch_epochs=6, variant_epochs=2,
        rl_lock_epochs=8, eval_n=1000, sft={}, sft_ks=(4, 16, 64, 256), weak_ks=(64,), cross_k=512,
        cross_domains=DOMAINS, setting_ks=(4, 64), rl={}, rl_rounds=dict(expert_iteration=5, filtering=3,
                                                                      iterated_dpo=4, dpo=5),
        setting_rl_rounds=4, shots=(1, 2)),
    "quick": dict(
        seeds=(0,), locks=("ft200k", "scratch"), lock=dict(eval_n=500), scratch_epochs=4, variant_epochs=1,
        rl_lock_epochs=1, eval_n=500, sft={}, sft_ks=(4, 64), weak_ks=(16,), cross_k=256, cross_domains=("A",),
        setting_ks=(4,), rl={}, rl_rounds=dict(expert_iteration=2, filtering=1, iterated_dpo=2, dpo=2),
        setting_rl_rounds=2, shots=(2,)),  # the toy model's context (64 tokens) holds 2 solved examples
    "tiny": dict(
        seeds=(0, 1), locks=("ft200k", "ft12k", "scratch"), scratch_epochs=1, variant_epochs=1, rl_lock_epochs=1,
        lock=dict(toy_problems=1000, n_layer=1, n_head=2, n_embd=32, pretrain_steps=20, batch_size=32, eval_n=60,
                  eval_batch_size=64, ckpt_every=0, log_every=10),
        eval_n=60, sft=dict(epoch_mult=0.02, heldout_n=20, eval_batch_size=64), sft_ks=(2, 4), weak_ks=(4,),
        cross_k=8, cross_domains=("A", "B"), setting_ks=(2,),
        rl=dict(samples_per_round=32, n_keep=8, sft_steps=2, dpo_problems=32, eval_batch_size=64),
        rl_rounds=dict(expert_iteration=1, filtering=1, iterated_dpo=1, dpo=1), setting_rl_rounds=1, shots=(1,)),
}
PRETRAIN = {"ft200k": 200_000, "ft12k": 12_500}
TINY_PRETRAIN = {"ft200k": 600, "ft12k": 300}
LOCK_LABELS = {"ft200k": "fine-tuning lock, 200k pretraining samples", "ft12k":
               "fine-tuning lock, 12.5k pretraining samples", "scratch": "locked from scratch"}


# -----------------------------------------------------------------------------
# Statistics


def mean_of_means(pairs):
    """Average of K (mean, se) pairs with the paper's uncertainty s = (1/K) sqrt(sum s_i^2)."""
    k = len(pairs)
    return sum(m for m, _ in pairs) / k, math.sqrt(sum(s * s for _, s in pairs)) / k


def k_to_reach(points, target):
    """Smallest demonstration count at which the curve [(k, correctness)] reaches `target`, interpolated linearly
    in log2(k) between the two grid points around it; None if it never does."""
    points = sorted(points)
    for i, (k, y) in enumerate(points):
        if y >= target:
            if i == 0:
                return float(k)
            (k0, y0) = points[i - 1]
            frac = (target - y0) / (y - y0)
            return 2 ** (math.log2(k0) + frac * (math.log2(k) - math.log2(k0)))
    return None


def fmt(m, se=None):
    return f"{m:.3f}" if se is None else f"{m:.3f} ± {se:.3f}"


# -----------------------------------------------------------------------------
# Verdicts: data, with the thresholds that decided them; the finding's prose is written from them

WORDS = {"yes": "Reproduced", "partly": "Partly reproduced", "no": "Not reproduced"}


def verdict(result, thresholds):
    """A finding's verdict ("yes", "partly" or "no") and the thresholds that decided it (name -> rule)."""
    return {"result": result, "word": WORDS[result], "thresholds": thresholds}


# -----------------------------------------------------------------------------
# Running the three scripts (in this process; each one resumes, so a finished run is only read back)


def command(script, cfg, default):
    """The exact shell command that makes `cfg`: every field that differs from the script's defaults."""
    args = [f"--{f.name}={getattr(cfg, f.name)}" for f in fields(cfg)
            if getattr(cfg, f.name) != getattr(default, f.name)]
    return " ".join(["python", script] + [shlex.quote(a) for a in args])


class Runner:
    def __init__(self, cfg, scale):
        self.cfg, self.S = cfg, SCALES[scale]
        self.work = os.path.join(cfg.out_dir, scale)
        self.commands = {}  # experiment -> [command]
        self.timings_path = os.path.join(self.work, "timings.json")
        os.makedirs(self.work, exist_ok=True)
        self.timings = read_json(self.timings_path) if os.path.isfile(self.timings_path) else {}
        self.invocations_path = os.path.join(self.work, "invocations.json")  # wall seconds of every report.py call
        self.invocations = read_json(self.invocations_path) if os.path.isfile(self.invocations_path) else []

    def _run(self, experiment, script, module, cfg, out_dir):
        cmd = command(script, cfg, module.Config())
        self.commands.setdefault(experiment, [])
        if cmd not in self.commands[experiment]:
            self.commands[experiment].append(cmd)
        t0 = time.time()
        result = module.main(cfg)
        if out_dir not in self.timings:  # the first time it ran; a resumed read-back costs ~nothing
            self.timings[out_dir] = round(time.time() - t0, 1)
            write_json(self.timings_path, self.timings)
        return result

    def lock(self, experiment, name, **over):
        out = os.path.join(self.work, "locks", name)
        cfg = replace(train_lock.Config(), out_dir=out, resume=True, device=self.cfg.device,
                      **{**self.S["lock"], **over})
        self._run(experiment, "train_lock.py", train_lock, cfg, out)
        return read_json(os.path.join(out, "metrics.json"))

    def sft(self, experiment, name, locked, **over):
        out = os.path.join(self.work, "sft", name)
        cfg = replace(elicit_sft.Config(), locked=locked, out_dir=out, eval_n=self.S["eval_n"], device=self.cfg.device,
                      **{"epoch_choice": (1,), **self.S["sft"], **over})
        self._run(experiment, "elicit_sft.py", elicit_sft, cfg, out)
        return [r for r in read_jsonl(os.path.join(out, "results.jsonl")) if same_config(r["config"], cfg)]

    def rl(self, experiment, name, locked, method, seed, rounds):
        out = os.path.join(self.work, "rl", name)
        cfg = replace(elicit_rl.Config(), method=method, locked=locked, out_dir=out, seed=seed, rounds=rounds,
                      eval_n=self.S["eval_n"], device=self.cfg.device, **self.S["rl"])
        self._run(experiment, "elicit_rl.py", elicit_rl, cfg, out)
        return read_jsonl(os.path.join(out, "results.jsonl"))[:rounds + 1]


# -----------------------------------------------------------------------------
# The experiments. Each returns a dict: table (markdown lines), verdict (verdict(): the result and its thresholds),
# finding (a sentence that starts with the verdict's word), data (numbers for plots/JSON).


def lock_args(R, kind, seed, scale):
    """Seed s of a lock kind. Fine-tuning locks share one pretrained model per pretraining size (pi_strong_base,
    made by the first seed's run); their seeds differ in the locking run."""
    if kind == "scratch":
        return dict(seed=seed, mode="scratch", epochs=R.S["scratch_epochs"], lr=1e-3)
    args = dict(seed=seed, pretrain_samples=(TINY_PRETRAIN if scale == "tiny" else PRETRAIN)[kind])
    if seed != R.S["seeds"][0]:
        args["init_from"] = os.path.join(R.work, "locks", f"{kind}_s{R.S['seeds'][0]}", "pretrained")
    return args


def exp_locks(R, scale):
    S, ex = R.S, "1. Lock table"
    metrics = {kind: [R.lock(ex, f"{kind}_s{s}", **lock_args(R, kind, s, scale)) for s in S["seeds"]]
               for kind in S["locks"]}
    cols = ("with_password", "without_password", "wrong_password", "weak_policy")
    agg = {kind: {c: mean_se([m[f"correct_{c}"] for m in ms]) for c in cols} for kind, ms in metrics.items()}
    table = ["| lock | seeds | with password | without | decoy password | weak policy (sampled) |",
             "|---|---|---|---|---|---|"]
    for kind, a in agg.items():
        table.append(f"| {LOCK_LABELS[kind]} | {len(metrics[kind])} | " + " | ".join(fmt(*a[c]) for c in cols) + " |")
    ok = all(a["with_password"][0] >= 0.9 and a["with_password"][0] - a["without_password"][0] >= 0.5 for a in
             agg.values())
    decoy_close = all(abs(a["wrong_password"][0] - a["without_password"][0])
                      <= max(0.02, 2 * math.hypot(a["wrong_password"][1], a["without_password"][1]))
                      for a in agg.values())
    parts = "; ".join(f"{kind} {fmt(a['with_password'][0])} with / {fmt(a['without_password'][0])} without / "
                      f"{fmt(a['wrong_password'][0])} decoy" for kind, a in agg.items())
    v = verdict("yes" if ok and decoy_close else "no", {
        "locked": "every lock: with password >= 0.9 and with - without >= 0.5",
        "decoy": "every lock: |decoy - without| <= max(0.02, 2 x the SE of the difference)"})
    finding = (f"{v['word']}: the paper's toy locks sit at about 1.0 "
               f"with the password and about 0.2 without (Fig. 6), and a decoy should not help. Here: {parts}."
               + ("" if decoy_close else " A decoy password differed from no password by more than noise."))
    return dict(table=table, verdict=v, finding=finding,
                data={k: {c: list(x) for c, x in a.items()} for k, a in agg.items()})


def curve(rows_by_seed):
    """{k: (mean, se)} over seeds of the best run per (k, seed) (the paper's choice, with one training length)."""
    best = {}
    for r in rows_by_seed:
        key = (r["n_demos"], r["seed"])
        best[key] = max(best.get(key, 0.0), r["correct_without_password"])
    ks = sorted({k for k, _ in best})
    return {k: mean_se([v for (kk, _), v in best.items() if kk == k]) for k in ks}


def exp_sft(R, locks, scale):
    S, ex = R.S, "2. SFT sample efficiency"
    curves, base = {}, {}
    for kind in S["locks"]:
        rows = []
        for s in S["seeds"]:
            rows += R.sft(ex, f"{kind}_s{s}", os.path.join(R.work, "locks", f"{kind}_s{s}"), seeds=(s,),
                          ks=S["sft_ks"])
        curves[kind] = curve(rows)
        base[kind] = (locks[kind]["without_password"][0], locks[kind]["with_password"][0])
    ks = S["sft_ks"]
    table = ["| lock | " + " | ".join(f"k={k}" for k in ks) + " | k for 90% of the gap |",
             "|---|" + "---|" * (len(ks) + 1)]
    k90 = {}
    for kind, c in curves.items():
        lo, hi = base[kind]
        k90[kind] = k_to_reach([(k, m) for k, (m, _) in c.items()], lo + 0.9 * (hi - lo))
        table.append(f"| {LOCK_LABELS[kind]} | " + " | ".join(fmt(*c[k]) for k in ks) +
                     f" | {'> %d' % max(ks) if k90[kind] is None else '%.0f' % k90[kind]} |")
    ft = "ft200k"
    thresholds = {"ratio": "k(scratch) / k(200k lock) to recover 90% of the gap: yes >= 2, partly >= 1.2 (harder to "
                           "unlock, by less than the paper's 2x), else no; a scratch lock that never reaches 90% "
                           "counts as yes"}
    if "scratch" in k90 and k90.get(ft) is not None:
        ratio = None if k90["scratch"] is None else k90["scratch"] / k90[ft]
        ratio_txt = f"more than {max(ks) / k90[ft]:.1f}x" if ratio is None else f"{ratio:.1f}x"
        v = verdict("yes" if ratio is None or ratio >= 2 else "partly" if ratio >= 1.2 else "no", thresholds)
        finding = (f"{v['word']}: the paper finds that locks trained from scratch "
                   f"need 2-4x more demonstrations than fine-tuning locks. Here the scratch lock needs {ratio_txt} "
                   f"the demonstrations of the 200k fine-tuning lock to recover 90% of the gap "
                   f"({'> %d' % max(ks) if k90['scratch'] is None else '%.0f' % k90['scratch']} vs "
                   f"{k90[ft]:.0f}).")
    else:
        v = verdict("no", thresholds)
        finding = f"{v['word']}: the fine-tuning lock never recovered 90% of the gap on this grid."
    if "ft12k" in k90 and k90.get("ft12k") and k90.get(ft):
        finding += (f" Pretraining size: the 12.5k lock needs {k90['ft12k']:.0f} demonstrations against "
                    f"{k90[ft]:.0f} for the 200k one (the paper's Fig. 6 varies the amount of locking data instead "
                    f"and finds more data harder to unlock).")
    return dict(table=table, verdict=v, finding=finding, data=dict(curves=jsonable(curves), base=base, k90=k90))


def exp_weak(R, locks):
    S, ex = R.S, "3. Weak-sample unlocking"
    out = {}
    for kind in S["locks"]:
        rows = []
        for s in S["seeds"]:
            rows += R.sft(ex, f"weak_{kind}_s{s}", os.path.join(R.work, "locks", f"{kind}_s{s}"), seeds=(s,),
                          ks=S["weak_ks"], demo_source="weak", epoch_choice=(0,),
                          epoch_mult=4 * S["sft"].get("epoch_mult", elicit_sft.Config.epoch_mult))
        out[kind] = curve(rows)
    ks = S["weak_ks"]
    table = ["| lock | locked, without password | " + " | ".join(f"k={k} weak samples" for k in ks) + " |",
             "|---|---|" + "---|" * len(ks)]
    deltas = {}
    for kind, c in out.items():
        lo, lo_se = locks[kind]["without_password"]
        table.append(f"| {LOCK_LABELS[kind]} | {fmt(lo, lo_se)} | " + " | ".join(fmt(*c[k]) for k in ks) + " |")
        k = max(ks)
        deltas[kind] = (c[k][0] - lo, math.hypot(c[k][1], lo_se))
    rises = {kind: d > max(0.01, 2 * se) for kind, (d, se) in deltas.items()}
    ft_rise = any(v for kind, v in rises.items() if kind != "scratch")
    same = ft_rise and not rises.get("scratch", False)
    txt = "; ".join(f"{kind} {d:+.3f} ± {se:.3f}" for kind, (d, se) in deltas.items())
    v = verdict("yes" if same else "no", {"rise": "a rise is a change > max(0.01, 2 SE) after the largest k; yes if "
                                                  "a fine-tuning lock rises and the scratch lock does not"})
    finding = (f"{v['word']}: in the paper (Fig. 13, 'somewhat preliminary'), "
               f"SFT on weak samples raises correctness a little for SFT-locked toy models and not for from-scratch "
               f"ones. Here, change after k={max(ks)} weak samples (4x the shortest training length): {txt}.")
    return dict(table=table, verdict=v, finding=finding, data=dict(curves=jsonable(out), deltas=deltas))


def exp_cross(R):
    S, ex = R.S, "4. Cross-domain generalisation"
    s0 = S["seeds"][0]
    locks = {"one password": os.path.join(R.work, "locks", f"ft200k_s{s0}"),
             "one password per domain": os.path.join(R.work, "locks", "per_domain")}
    R.lock(ex, "per_domain", init_from=os.path.join(locks["one password"], "pretrained"), seed=s0,
           password_mode="per_domain", epochs=S["variant_epochs"])
    k, res = S["cross_k"], {}
    for name, path in locks.items():
        lock_m = read_json(os.path.join(path, "metrics.json"))
        full = R.sft(ex, f"cross_{name.replace(' ', '_')}_all", path, seeds=S["seeds"], ks=(k,), epoch_choice=(0,))
        other = {}
        for d in S["cross_domains"]:
            rows = R.sft(ex, f"cross_{name.replace(' ', '_')}_{d}", path, seeds=S["seeds"], ks=(k,),
                         train_domain=d, epoch_choice=(0,))
            per = [mean_se([r["per_domain"]["without_password"][e] for r in rows]) for e in DOMAINS if e != d]
            own = mean_se([r["per_domain"]["without_password"][d] for r in rows])
            other[d] = (mean_of_means(per), own)
        res[name] = dict(locked=(lock_m["correct_without_password"], lock_m["correct_with_password"]),
                         full=mean_se([r["correct_without_password"] for r in full]), by_domain=other)
    table = [f"| lock | locked without / with password | {k} demos from all domains | " +
             " | ".join(f"{k} from {d}: other domains (own)" for d in S["cross_domains"]) + " |",
             "|---|---|---|" + "---|" * len(S["cross_domains"])]
    ratios = {}
    for name, r in res.items():
        lo, hi = r["locked"]
        table.append(f"| {name} | {lo:.3f} / {hi:.3f} | {fmt(*r['full'])} | " + " | ".join(
            f"{fmt(*o)} ({own[0]:.3f})" for o, own in r["by_domain"].values()) + " |")
        mean_other = sum(o[0] for o, _ in r["by_domain"].values()) / len(r["by_domain"])
        ratios[name] = (mean_other - lo) / (r["full"][0] - lo) if r["full"][0] > lo else float("nan")
    one, per = res["one password"], res["one password per domain"]
    worse = per["locked"][0] > one["locked"][0] or per["locked"][1] < one["locked"][1]
    gen = all(v >= 0.8 for v in ratios.values())
    v = verdict("yes" if gen else "no", {"transfer": "demos from one group recover >= 80% of the all-group gain on "
                                                     "the other groups, for both locks"})
    finding = (f"{v['word']}: the paper finds that SFT on one domain unlocks the "
               f"others (MATH: 'generalizes perfectly'). Here demos from one function group recover "
               + ", ".join(f"{v:.0%} ({n})" for n, v in ratios.items()) +
               " of the gain that demos from all groups give, on the groups never shown. "
               f"Per-domain passwords lock {'worse, as in the paper' if worse else 'no worse (the paper: worse)'}: "
               f"{per['locked'][0]:.3f} without / {per['locked'][1]:.3f} with, against "
               f"{one['locked'][0]:.3f} / {one['locked'][1]:.3f} for one password.")
    return dict(table=table, verdict=v, finding=finding, data=jsonable(dict(results=res, ratios=ratios)))


def exp_setting(R):
    S, ex = R.S, "5. Setting trigger"
    s0 = S["seeds"][0]
    single = os.path.join(R.work, "locks", f"ft200k_s{s0}")
    m = R.lock(ex, "setting", init_from=os.path.join(single, "pretrained"), seed=s0, password_mode="setting",
               epochs=S["variant_epochs"])
    path = os.path.join(R.work, "locks", "setting")
    sft_c = curve(R.sft(ex, "setting", path, seeds=S["seeds"], ks=S["setting_ks"]))
    sft_single = curve(R.sft(ex, "setting_single", single, seeds=S["seeds"], ks=S["setting_ks"]))
    rl_c, rl_single = {}, {}
    for s in S["seeds"]:
        rl_c[s] = R.rl(ex, f"setting/expert_iteration_s{s}", path, "expert_iteration", s, S["setting_rl_rounds"])
        rl_single[s] = R.rl(ex, f"setting_single/expert_iteration_s{s}", single, "expert_iteration", s,
                            S["setting_rl_rounds"])
    single_m = read_json(os.path.join(single, "metrics.json"))
    ks = S["setting_ks"]
    table = ["| lock | locked without / with trigger | " + " | ".join(f"SFT k={k}" for k in ks) +
             " | expert iteration, last round |", "|---|---|" + "---|" * (len(ks) + 1)]
    last = {}
    for name, mm, c, rl in (("setting trigger (other notation)", m, sft_c, rl_c),
                            ("one password token", single_m, sft_single, rl_single)):
        last[name] = mean_se([rows[-1]["correct_without_password"] for rows in rl.values()])
        table.append(f"| {name} | {mm['correct_without_password']:.3f} / {mm['correct_with_password']:.3f} | " +
                     " | ".join(fmt(*c[k]) for k in ks) + f" | {fmt(*last[name])} |")
    gaps = []
    for k in ks:
        g1 = (sft_c[k][0] - m["correct_without_password"]) / max(1e-9, m["correct_with_password"] -
                                                                  m["correct_without_password"])
        g2 = (sft_single[k][0] - single_m["correct_without_password"]) / max(
            1e-9, single_m["correct_with_password"] - single_m["correct_without_password"])
        gaps.append((k, g1, g2))
    locked_ok = m["correct_with_password"] - m["correct_without_password"] >= 0.5
    as_easy = all(g1 >= g2 - 0.15 for _, g1, g2 in gaps)
    v = verdict("yes" if locked_ok and as_easy else "no", {
        "locked": "with trigger - without >= 0.5", "as easy": "at every k, the share of the gap SFT recovers on the "
                                                             "setting lock >= the password lock's - 0.15"})
    finding = (f"{v['word']}: the paper finds a setting-locked "
               f"model as easy to unlock as a password-locked one. Here the notation lock "
               f"{'holds' if locked_ok else 'does not hold'} "
               f"({m['correct_with_password']:.3f} with / {m['correct_without_password']:.3f} without) and SFT "
               f"recovers " + ", ".join(f"{g1:.0%} vs {g2:.0%} of the gap at k={k}" for k, g1, g2 in gaps) +
               " (setting vs password lock).")
    return dict(table=table, verdict=v, finding=finding,
                data=jsonable(dict(sft=sft_c, sft_single=sft_single, rl_last=last,
                                   rl={"setting": rl_c, "single": rl_single})))


def exp_rl(R):
    S, ex = R.S, "6. RL"
    s0 = S["seeds"][0]
    pre = os.path.join(R.work, "locks", f"ft200k_s{s0}", "pretrained")
    res, base = {}, {}
    for wp in ("noisy", "weak", "fixedrdm"):
        m = R.lock(ex, f"rl_{wp}", init_from=pre, seed=s0, weak_policy=wp, epochs=S["rl_lock_epochs"])
        base[wp] = (m["correct_without_password"], m["correct_with_password"], m["correct_weak_policy"])
        path = os.path.join(R.work, "locks", f"rl_{wp}")
        for method in RL_METHODS:
            runs = [R.rl(ex, f"{wp}/{method}_s{s}", path, method, s, S["rl_rounds"][method]) for s in S["seeds"]]
            n = min(len(r) for r in runs)
            res[(wp, method)] = [(runs[0][i]["samples_generated"], *mean_se([r[i]["correct_without_password"]
                                                                             for r in runs])) for i in range(n)]
    table = ["| weak policy of the lock | locked without / with password | weak policy sampled | " +
             " | ".join(RL_METHODS) + " |", "|---|---|---|" + "---|" * len(RL_METHODS)]
    for wp in ("noisy", "weak", "fixedrdm"):
        lo, hi, wk = base[wp]
        cells = [f"{fmt(c[-1][1], c[-1][2])} @ {c[-1][0]}" for c in (res[(wp, m)] for m in RL_METHODS)]
        table.append(f"| {wp} | {lo:.3f} / {hi:.3f} | {wk:.3f} | " + " | ".join(cells) + " |")
    best = {wp: max(res[(wp, m)][-1][1] for m in RL_METHODS) for wp in base}
    gain = {wp: best[wp] - base[wp][0] for wp in base}
    ok = gain["noisy"] >= 0.5 and gain["weak"] < gain["noisy"] / 2 and gain["fixedrdm"] < 0.1
    v = verdict("yes" if ok else "no", {"gain": "best method's last-round gain: noisy lock >= 0.5, deterministic "
                                                "lock < half the noisy gain, fixedrdm lock < 0.1"})
    finding = (f"{v['word']}: in the paper RL's success depends on how often the weak "
               f"policy samples a strong answer; fixedrdm never lets it explore. Here the best method's last "
               f"round gains " + ", ".join(f"{g:+.3f} on the {wp} lock" for wp, g in gain.items()) +
               " (cells: correctness @ samples generated; DPO's columns are epochs over one fixed sample set).")
    return dict(table=table, verdict=v, finding=finding,
                data=dict(curves={f"{wp}/{m}": c for (wp, m), c in res.items()}, base=base, gain=gain))


def exp_prompting(R):
    S = R.S
    per_seed = {}
    for s in S["seeds"]:
        path = os.path.join(R.work, "locks", f"ft200k_s{s}")
        R.commands.setdefault("7. Prompting baselines", []).append(
            f"# report.py evaluates every prompt variant greedily on {path} (exp_prompting)")
        cache = os.path.join(R.work, "prompting", f"ft200k_s{s}.json")
        if os.path.isfile(cache):
            per_seed[s] = read_json(cache)
            continue
        t0 = time.time()
        lock = Lock.from_dir(path)
        val = lock.splits["val"][:S["eval_n"]]
        rng = random.Random(f"shots/{s}")
        shots = {n: rng.sample(lock.splits["elicit"], n) for n in S["shots"]}
        model, tok = model_lib.load(path, device=R.cfg.device), Tokenizer(path)
        prompts = {}
        for p in val:
            for name, text in prompt_variants(lock.task, p, shots).items():
                prompts.setdefault(name, []).append(text)
        room = model.config.max_seq_len - lock.task.max_new_tokens
        for name, texts in prompts.items():
            longest = max(len(tok.encode_prompt(t)) for t in texts)
            if longest > room:
                raise BadInput(f"prompt variant {name!r} has {longest} tokens; the model's context "
                               f"({model.config.max_seq_len}) leaves {room}: use fewer shots in SCALES")
        res = {name: greedy_eval(model, tok, lock.task, val, texts, 0, 500, desc=name)["correct"]
               for name, texts in prompts.items()}
        write_json(cache, res)
        R.timings[cache] = round(time.time() - t0, 1)
        write_json(R.timings_path, R.timings)
        per_seed[s] = res
    names = list(per_seed[S["seeds"][0]])
    decoys = [n for n in names if n.startswith("decoy")]
    agg = {n: mean_se([per_seed[s][n] for s in S["seeds"]]) for n in names if n not in decoys}
    agg["decoys (mean of 8)"] = mean_se([sum(per_seed[s][n] for n in decoys) / len(decoys) for s in S["seeds"]])
    table = ["| prompt | correct |", "|---|---|"] + [f"| {n} | {fmt(*v)} |" for n, v in agg.items()]
    lo = agg["no password"][0]
    near = {n: v[0] for n, v in agg.items() if n.startswith(("password ", "look-alike"))}
    raised = [n for n, v in near.items() if v > lo + 0.1]
    fewshot_pwd = [v[0] for n, v in agg.items() if n.endswith("-shot, password")]
    fewshot_no = [v[0] for n, v in agg.items() if n.endswith("-shot, no password")]
    ok = (agg["correct password"][0] - lo >= 0.5 and agg["decoys (mean of 8)"][0] <= lo + 0.05
          and all(v <= lo + 0.1 for v in fewshot_no))
    v = verdict("yes" if ok else "no", {
        "password": "correct password - no password >= 0.5", "decoys": "mean of the decoys <= no password + 0.05",
        "few-shot": "few-shot without the password <= no password + 0.1"})
    finding = (f"{v['word']}: in the paper only the password and prompts close to it "
               f"raise correctness, and few-shot prompting without it does not unlock. Here: correct password "
               f"{agg['correct password'][0]:.3f}, no password {lo:.3f}, decoys {agg['decoys (mean of 8)'][0]:.3f}, "
               f"few-shot without password {', '.join(f'{v:.3f}' for v in fewshot_no)}, few-shot with password "
               f"{', '.join(f'{v:.3f}' for v in fewshot_pwd)}; near-miss variants that raise correctness by more "
               f"than 0.1: {', '.join(raised) if raised else 'none'}.")
    return dict(table=table, verdict=v, finding=finding, data=dict(mean_se=agg, per_seed=per_seed))


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x


# -----------------------------------------------------------------------------
# Plots (matplotlib is optional)


def plot_refs(ax, lo, hi):
    ax.axhline(hi, color="k", ls="--", lw=1, label="locked, with password")
    ax.axhline(lo, color="gray", ls=":", lw=1, label="locked, without password")


def plot_curve(ax, c, label):
    """c: {k (as a JSON string): (mean, se)}."""
    ks = sorted(int(k) for k in c)
    ax.errorbar(ks, [c[str(k)][0] for k in ks], yerr=[c[str(k)][1] for k in ks], marker="o", capsize=3, label=label)


def save_fig(plt, fig, out_dir, name):
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=110)
    plt.close(fig)
    return name


def curves_figure(plt, out_dir, name, curves, refs, xlabel):
    """One axis of k-curves ({label: curve}) with the locked model's two lines (refs: (lo, hi) or None)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, c in curves.items():
        plot_curve(ax, c, label)
    if refs:
        plot_refs(ax, *refs)
    ax.set(xlabel=xlabel, ylabel="correct (greedy, no password)", ylim=(-0.02, 1.05))
    ax.set_xscale("log", base=2)
    ax.legend(fontsize=7)
    return save_fig(plt, fig, out_dir, name)


def cross_domain_figure(plt, out_dir, d):
    fig, axes = plt.subplots(1, len(d), figsize=(4 * len(d), 3.6), sharey=True)
    for ax, (name, r) in zip(axes, d.items()):
        doms = list(r["by_domain"])
        ax.errorbar(range(len(doms)), [r["by_domain"][x][0][0] for x in doms],
                    yerr=[r["by_domain"][x][0][1] for x in doms], fmt="o", color="C1", capsize=3,
                    label="demos from one group: other groups")
        ax.axhline(r["full"][0], color="C0", lw=1.5, label="demos from all groups")
        plot_refs(ax, *r["locked"])
        ax.set_xticks(range(len(doms)), [f"train {x}" for x in doms])
        ax.set_title(name, fontsize=9)
        ax.set(ylim=(-0.02, 1.05))
    axes[0].set_ylabel("correct (greedy, no password)")
    axes[0].legend(fontsize=7)
    return save_fig(plt, fig, out_dir, "fig4_cross_domain.png")


def rl_figure(plt, out_dir, d):
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    for ax, wp in zip(axes, ("noisy", "weak", "fixedrdm")):
        for i, m in enumerate(RL_METHODS):
            c = d["curves"][f"{wp}/{m}"]
            xs = [x for x, _, _ in c] if m != "dpo" else [c[-1][0] * j / max(1, len(c) - 1) for j in range(len(c))]
            ax.errorbar(xs, [y for _, y, _ in c], yerr=[s for _, _, s in c], marker=".", capsize=2, color=f"C{i}",
                        label=m if m != "dpo" else "dpo (x: epochs over one sample set)")
        lo, hi, _ = d["base"][wp]
        plot_refs(ax, lo, hi)
        ax.set(title=f"weak policy: {wp}", xlabel="samples generated", ylim=(-0.02, 1.05))
    axes[0].set_ylabel("correct (greedy, no password)")
    axes[-1].legend(fontsize=7, loc="center right")
    return save_fig(plt, fig, out_dir, "fig5_rl.png")


def prompting_figure(plt, out_dir, d):
    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(d)
    ax.barh(range(len(names)), [d[n][0] for n in names], xerr=[d[n][1] for n in names], color="C0")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="correct (greedy)", xlim=(0, 1.05))
    return save_fig(plt, fig, out_dir, "prompting.png")


def make_plots(results, out_dir):
    """PNG plots in the paper's style; returns {experiment: file name}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sft, weak = results["2. SFT sample efficiency"]["data"], results["3. Weak-sample unlocking"]["data"]
    base, setting = results["1. Lock table"]["data"]["ft200k"], results["5. Setting trigger"]["data"]
    return {
        "2. SFT sample efficiency": curves_figure(
            plt, out_dir, "fig6_sft.png", {LOCK_LABELS[k]: c for k, c in sft["curves"].items()},
            sft["base"]["ft200k"], "number of strong demonstrations"),
        "3. Weak-sample unlocking": curves_figure(
            plt, out_dir, "fig13_weak.png", {f"{LOCK_LABELS[k]}: weak samples": c for k, c in weak["curves"].items()},
            (base["without_password"][0], base["with_password"][0]), "number of weak-policy samples"),
        "4. Cross-domain generalisation": cross_domain_figure(
            plt, out_dir, results["4. Cross-domain generalisation"]["data"]["results"]),
        "6. RL": rl_figure(plt, out_dir, results["6. RL"]["data"]),
        "7. Prompting baselines": prompting_figure(plt, out_dir, results["7. Prompting baselines"]["data"]["mean_se"]),
        "5. Setting trigger": curves_figure(
            plt, out_dir, "fig9_setting.png", {"setting-trigger lock: SFT": setting["sft"],
                                               "password lock: SFT": setting["sft_single"]},
            None, "number of strong demonstrations"),
    }


# -----------------------------------------------------------------------------
# Main


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def write_report(cfg, scale, R, results, plots, wall, note):
    S = R.S
    run_seconds = sum(R.timings.values())
    lines = [f"# locksmith: the paper's findings on the toy task ({scale} run)", "",
             f"`python report.py{' --quick' if scale == 'quick' else '' if scale == 'full' else ' --scale=tiny'}` "
             f"at commit {git_commit()}, {time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, "
             f"{platform.machine()} with {os.cpu_count()} CPU cores, device {cfg.device}.", "",
             f"**Wall time:** {sum(R.invocations) / 60:.1f} minutes over {len(R.invocations)} invocation(s) of "
             f"report.py (this one: {wall / 60:.1f}); {run_seconds / 60:.1f} minutes summed over the "
             f"{len(R.timings)} runs when each first ran. "
             f"Seeds: {', '.join(map(str, S['seeds']))}. All numbers are greedy correctness on validation problems, "
             f"mean ± standard error over seeds (± 0.000 with one seed)." + (f" {note}" if note else ""), "",
             "Reproduced? " + ", ".join(f"{name.split('. ', 1)[1]}: **{r['verdict']['result']}**"
                                        for name, r in results.items()),
             ""]
    for name, r in results.items():
        lines += [f"## {name}", ""] + r["table"] + [""]
        if name in plots:
            lines += [f"![{name}]({plots[name]})", ""]
        rules = "; ".join(f"{k}: {rule}" for k, rule in r["verdict"]["thresholds"].items())
        lines += [f"**Finding.** {r['finding']}", "", f"**Verdict: {r['verdict']['result']}**, decided by: {rules}.",
                  "", "<details><summary>commands</summary>", "", "```bash"]
        lines += R.commands.get(name, []) + ["```", "", "</details>", ""]
    lines += ["## Configs", "", f"Every run's directory under `{R.work}/` holds its full config "
              "(train_config.json / metrics.json for locks, the `config` field of each results.jsonl row for "
              "elicitation). Scale settings used:", "", "```json", json.dumps(S, indent=1), "```", ""]
    path = os.path.join(cfg.out_dir, "REPORT.md")
    atomic_write_text(path, "\n".join(lines))
    return path


def main(cfg):
    t0 = time.time()
    scale = cfg.scale or ("quick" if cfg.quick else "full")
    if scale not in SCALES:
        raise BadInput(f"--scale={cfg.scale!r}: use full, quick or tiny")
    R = Runner(cfg, scale)
    results = {}
    results["1. Lock table"] = exp_locks(R, scale)
    locks = results["1. Lock table"]["data"]
    results["2. SFT sample efficiency"] = exp_sft(R, locks, scale)
    results["3. Weak-sample unlocking"] = exp_weak(R, locks)
    results["4. Cross-domain generalisation"] = exp_cross(R)
    results["5. Setting trigger"] = exp_setting(R)
    results["6. RL"] = exp_rl(R)
    results["7. Prompting baselines"] = exp_prompting(R)
    plots, note = {}, ""
    if cfg.plots:
        try:
            import matplotlib  # noqa: F401
            plots = make_plots(results, cfg.out_dir)
        except ImportError:
            note = "Plots skipped: matplotlib is not installed (`pip install matplotlib`)."
    wall = time.time() - t0
    R.invocations.append(round(wall, 1))
    write_json(R.invocations_path, R.invocations)
    path = write_report(cfg, scale, R, results, plots, wall, note)
    write_json(os.path.join(cfg.out_dir, "results.json"),
               {"scale": scale, "settings": SCALES[scale], "config": asdict(cfg), "wall_seconds": round(wall, 1),
                "invocation_seconds": R.invocations, "run_seconds": R.timings, "commands": R.commands,
                "experiments": {k: {"verdict": v["verdict"], "finding": v["finding"], "table": v["table"],
                                    "data": jsonable(v["data"])} for k, v in results.items()}})
    print(f"\n{'experiment':34s} reproduced")
    for name, r in results.items():
        print(f"{name:34s} {r['verdict']['result']}")
    print(f"wrote {path} | wall clock {wall / 60:.1f} min (runs summed: {sum(R.timings.values()) / 60:.1f} min)")
    return results


if __name__ == "__main__":
    run_cli(main, Config)
