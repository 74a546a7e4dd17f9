"""common.py: the command-line parser, the tokenizer wrapper (on the real Pythia tokenizer), JSONL files."""
import gzip
import json
import os
from dataclasses import dataclass

import pytest

import common as C

TOK_GZ = os.path.join(os.path.dirname(__file__), "fixtures", "tokenizers", "pythia_tokenizer.json.gz")


@dataclass
class Cfg:
    """A test script."""
    lr: float = 1e-4
    steps: int = 10
    name: str = "run"
    resume: bool = False
    ks: list = None
    max_len: int | None = None


def test_parse_cli_types_and_defaults():
    cfg = C.parse_cli(Cfg, ["--lr=3e-4", "--steps=5", "--name=123", "--resume=True", "--ks=[1, 2]",
                            "--max_len=None"])
    assert cfg == Cfg(lr=3e-4, steps=5, name="123", resume=True, ks=[1, 2], max_len=None)
    assert C.parse_cli(Cfg, ["--lr=1"]).lr == 1.0 and isinstance(C.parse_cli(Cfg, ["--lr=1"]).lr, float)
    assert C.parse_cli(Cfg, []) == Cfg()
    assert C.parse_cli(Cfg, ["--name=runs/a b"]).name == "runs/a b"
    assert C.parse_cli(Cfg, ["--resume"]).resume is True  # a bare boolean flag


def test_parse_cli_bare_flag_only_for_booleans():
    with pytest.raises(SystemExit, match="expected --field=value, got '--steps'"):
        C.parse_cli(Cfg, ["--steps"])


def test_parse_cli_rejects_unknown_and_badly_typed():
    with pytest.raises(SystemExit, match="unknown option --lrr"):
        C.parse_cli(Cfg, ["--lrr=1"])
    with pytest.raises(SystemExit, match="expected --field=value"):
        C.parse_cli(Cfg, ["steps=3"])
    with pytest.raises(SystemExit, match=r"--steps='abc' is not a valid"):
        C.parse_cli(Cfg, ["--steps=abc"])
    with pytest.raises(SystemExit, match=r"--steps='1.5' is not a valid"):
        C.parse_cli(Cfg, ["--steps=1.5"])


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit) as e:
        C.parse_cli(Cfg, ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for f in ("--lr=0.0001", "--steps=10", "--name='run'", "--resume=False", "--max_len=None"):
        assert f in out


@pytest.fixture(scope="module")
def pythia(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    (d / "tokenizer.json").write_bytes(gzip.open(TOK_GZ).read())
    return C.Tokenizer(str(d))


def test_real_pythia_tokenizer(pythia):
    assert pythia.vocab_size == 50277  # the embedding has 50304 rows: the sampler masks the 27 padding ids
    assert pythia.encode("Hello world") == [12092, 1533]
    assert pythia.eos_id == 0  # <|endoftext|>
    text = "def f(x):\n    return x ** 2  # ½ 世界"
    assert pythia.decode(pythia.encode(text)) == text


def test_prompt_and_completion_are_encoded_separately(pythia):
    prompt, completion = "Hello wor", "ld"
    ids, n = pythia.encode_pair(prompt, completion)
    assert ids[:n] == pythia.encode(prompt) and ids[n:] == pythia.encode(completion) + [pythia.eos_id]
    # the joined text would tokenise differently at the boundary; the pair keeps the prompt's ids intact
    assert pythia.encode(prompt + completion) == [12092, 1533] != ids[:-1]


def test_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json not found"):
        C.Tokenizer(str(tmp_path))
    (tmp_path / "tokenizer.json").write_text("{bad")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        C.Tokenizer(str(tmp_path))


def test_jsonl_roundtrip_and_bad_line(tmp_path):
    p = str(tmp_path / "a" / "rows.jsonl")
    C.write_jsonl(p, [{"a": 1}, {"b": [2]}])
    C.append_jsonl(p, {"c": "x"})
    assert C.read_jsonl(p) == [{"a": 1}, {"b": [2]}, {"c": "x"}]
    with open(p, "a") as f:
        f.write("{oops\n")
    with pytest.raises(ValueError, match=r"rows.jsonl:4: invalid JSON"):
        C.read_jsonl(p)
    with pytest.raises(FileNotFoundError, match="missing.jsonl: not found"):
        C.read_jsonl(str(tmp_path / "missing.jsonl"))
    C.write_json(str(tmp_path / "m.json"), {"x": 1})
    assert json.load(open(tmp_path / "m.json")) == {"x": 1}
    assert not [f for f in os.listdir(tmp_path) if ".tmp." in f]
