"""Scripts as a new user meets them: the project's own errors (a missing file, a malformed config.json, a bad JSONL
line, a tensor of the wrong shape, a corrupt model.safetensors) end the run with one line, `error: <file>: <what is
wrong>`, and exit code 1, without a traceback."""
import json
import os
import shutil
import subprocess
import sys

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "llama_gqa_untied")


def run_all(*commands):
    """Several independent command lines at once (each is a fresh process, as a user's would be); their results."""
    procs = [subprocess.Popen([sys.executable, *c], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]
    out = []
    for p, c in zip(procs, commands):
        stdout, stderr = p.communicate(timeout=120)
        out.append(subprocess.CompletedProcess([sys.executable, *c], p.returncode, stdout, stderr))
    return out


def one_line_error(r, *must):
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for m in must:
        assert m in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny checkpoint directory (the llama fixture) with a word-level tokenizer for its 96 ids."""
    d = tmp_path_factory.mktemp("ckpt") / "ckpt"
    shutil.copytree(FIX, d)
    os.remove(d / "expected.safetensors")
    words = ["<pad>", "<eos>"] + [f"w{i}" for i in range(94)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(d / "tokenizer.json"))
    (d / "prompts.jsonl").write_text(json.dumps({"prompt": "w3 w4"}) + "\n")
    return d


def broken_copy(ckpt, root, name, edit):
    d = root / name
    shutil.copytree(ckpt, d)
    edit(d)
    return d


def sample_cmd(d, out):
    return ("sample.py", f"--checkpoint={d}", f"--prompts={d / 'prompts.jsonl'}",
            f"--out={out / 'out.jsonl'}", "--max_new_tokens=2", "--device=cpu", "--dtype=float32")


def widen(d):
    cfg = json.loads((d / "config.json").read_text())
    cfg["hidden_size"] *= 2
    (d / "config.json").write_text(json.dumps(cfg))


def truncate(d):
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:5])


@pytest.fixture(scope="module")
def runs(ckpt, tmp_path_factory):
    """Every command line of this module, each a fresh process as a user's would be, all started at once (most of
    each one's time is importing torch): {case: (CompletedProcess, its output folder)}."""
    root = tmp_path_factory.mktemp("cli")
    bad = root / "bad.jsonl"
    bad.write_text('{"id": "math/1", "completion": "x"}\n{oops\n')
    cases = {"missing_jsonl": ("train_lock.py", "--task=math", f"--weak_samples={root / 'missing.jsonl'}"),
             "bad_jsonl": ("train_lock.py", "--task=math", f"--weak_samples={bad}"),
             "no_lock": ("elicit_sft.py", f"--locked={root / 'nope'}"),
             "bad_choice": ("train_lock.py", "--parallel=zero")}
    outs = {}
    for name, edit in (("control", None), ("badcfg", lambda d: (d / "config.json").write_text("{not json")),
                       ("badshape", widen), ("truncated", truncate)):
        d = ckpt if edit is None else broken_copy(ckpt, root, name, edit)
        outs[name] = root / f"out_{name}"
        outs[name].mkdir()
        cases[name] = sample_cmd(d, outs[name])
    return {name: (r, outs.get(name)) for name, r in zip(cases, run_all(*cases.values()))}


def test_missing_and_malformed_jsonl(runs):
    want = {"missing_jsonl": "missing.jsonl: not found", "bad_jsonl": "bad.jsonl:2: invalid JSON",
            "no_lock": "run `python train_lock.py` first", "bad_choice": "--parallel='zero': use one of ddp, fsdp"}
    for name, text in want.items():
        one_line_error(runs[name][0], text)


def test_a_working_sample_command_is_the_control(runs):
    r, out = runs["control"]
    assert r.returncode == 0, r.stderr
    assert len((out / "out.jsonl").read_text().splitlines()) == 1


def test_malformed_config_json(runs):
    one_line_error(runs["badcfg"][0], "config.json: malformed JSON")


def test_tensor_of_the_wrong_shape(runs):
    one_line_error(runs["badshape"][0], "badshape: tensor 'model.embed_tokens.weight' has shape")


def test_truncated_safetensors_names_the_file(runs):
    one_line_error(runs["truncated"][0], "model.safetensors")
