"""common.py, files.py, memory.py, parallel.py: the command line, the tokenizer wrapper (on the real Pythia tokenizer),
JSONL files, the memory estimate, the optimizer-state guard."""
import gzip
import json
import os
import typing
from dataclasses import dataclass

import pytest

import common as C
import files as FL
import memory as MEM
import model as M
import parallel as PAR
from errors import BadInput

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


@dataclass
class TupleCfg:
    ks: tuple = (1, 2)
    names: tuple = ("decode",)


def test_parse_cli_tuple_fields_take_a_literal_a_single_value_or_a_comma_list():
    parse = lambda *argv: C.parse_cli(TupleCfg, list(argv))
    assert parse("--ks=(4, 16)").ks == parse("--ks=[4, 16]").ks == parse("--ks=4,16").ks == (4, 16)
    assert parse("--ks=4").ks == (4,) and parse("--ks=()").ks == () and parse("--ks=").ks == ()
    assert parse("--names=decode,mixed").names == ("decode", "mixed")  # bare words, no quotes needed
    assert parse("--names=toy").names == ("toy",)
    assert parse("--names=('a', 'b')").names == ("a", "b")
    with pytest.raises(SystemExit, match=r"--ks='\{1: 2\}' is not a valid"):
        parse("--ks={1: 2}")
    with pytest.raises(SystemExit, match=r"--ks='None' is not a valid"):
        parse("--ks=None")


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
    FL.write_jsonl(p, [{"a": 1}, {"b": [2]}])
    FL.append_jsonl(p, {"c": "x"})
    assert FL.read_jsonl(p) == [{"a": 1}, {"b": [2]}, {"c": "x"}]
    with open(p, "a") as f:
        f.write("{oops\n")
    with pytest.raises(ValueError, match=r"rows.jsonl:4: invalid JSON"):
        FL.read_jsonl(p)
    with pytest.raises(FileNotFoundError, match="missing.jsonl: not found"):
        FL.read_jsonl(str(tmp_path / "missing.jsonl"))
    FL.write_json(str(tmp_path / "m.json"), {"x": 1})
    assert json.load(open(tmp_path / "m.json")) == {"x": 1}
    assert not [f for f in os.listdir(tmp_path) if ".tmp." in f]


# -----------------------------------------------------------------------------
# memory estimate and the resume guard


def test_memory_estimate_against_a_hand_worked_7b_llama():
    # Llama-2-7B: 6.74e9 parameters, 32 layers, hidden 4096, vocabulary 32000 (embeddings + head: 2.62e8)
    P, L, H, V = 6.74e9, 32, 4096, 32000
    # the paper's setup: full weights, Lion, one GPU; bf16 weights and gradients, compensated updates
    b = MEM.memory_estimate(P, L, H, V, tokens=4096, optimizer="lion", train_dtype="bf16", grad_checkpoint=True)
    assert b["weights"] == pytest.approx(13.48e9) and b["grads"] == pytest.approx(13.48e9)  # 2 bytes each
    assert b["optimizer"] == pytest.approx(26.96e9)  # bf16 momentum + bf16 compensation: 4 bytes a parameter
    assert "gathered" not in b and "ddp_buckets" not in b  # one process, weights already in bf16
    per_token_layer = 22 * 4096 + 8 * 11008 + 6 * 4096  # bf16 weights (memory.SAVED): 202,752 bytes, 49.5 a unit
    assert b["activations"] == pytest.approx(4096 * 4096 * 2 * 32 + 4096 * per_token_layer)  # 1.07e9 + 0.83e9
    assert b["logits"] == pytest.approx(1024 * 32000 * 12)  # one 1,024-token chunk of the head: 0.39e9
    assert b["total"] == pytest.approx(56.21e9, rel=1e-3) and MEM.fits(b["total"]) == "fits 80 / 141 GB"
    adamw = MEM.memory_estimate(P, L, H, V, tokens=4096, train_dtype="bf16", grad_checkpoint=True)
    assert adamw["optimizer"] == pytest.approx(67.4e9)  # fp32 moments + compensation: 10 bytes; does not fit 80 GB
    assert MEM.fits(adamw["total"]) == "fits 141 GB"
    fp32 = MEM.memory_estimate(P, L, H, V, tokens=4096, optimizer="lion")
    assert fp32["optimizer"] == pytest.approx(26.96e9) and fp32["gathered"] == pytest.approx(13.48e9)  # autocast
    autocast = 28 * 4096 + 8 * 11008 + 6 * 4096  # fp32 residual stream and norms: 227,328 bytes, 55.5 a unit
    assert fp32["activations"] == pytest.approx(4096 * autocast * 32)  # 29.8e9 without checkpointing
    # fp32 weights, bf16 compute; FSDP over 8 GPUs, one 1024-token sequence each, checkpointing
    f = MEM.memory_estimate(P, L, H, V, tokens=1024, world=8, fsdp=True, grad_checkpoint=True)
    assert (f["weights"], f["grads"], f["optimizer"]) == pytest.approx((3.37e9, 3.37e9, 6.74e9))
    # two Blocks of (6.74e9 - 2.62e8) / 32 = 2.02e8 parameters, plus the root's 2.62e8, in bf16: 1.33e9
    assert f["gathered"] == pytest.approx(1.334e9, rel=1e-3)
    assert f["activations"] == pytest.approx(1024 * 4096 * 4 * 32 + 1024 * autocast)  # fp32 Block inputs + one Block
    assert f["total"] == pytest.approx(15.98e9, rel=1e-3) and MEM.fits(f["total"]) == "fits 24 / 40 / 80 / 141 GB"
    assert MEM.memory_estimate(P, L, H, V, 1024, world=8, fsdp=True)["grads"] == pytest.approx(3.37e9)  # sharded
    # the same with DDP: everything whole on every GPU, plus DDP's buckets and autocast's bf16 copies: 153 GB
    d = MEM.memory_estimate(P, L, H, V, tokens=1024, world=8)
    assert (d["weights"], d["grads"], d["ddp_buckets"], d["optimizer"], d["gathered"]) == \
        pytest.approx((26.96e9, 26.96e9, 26.96e9, 53.92e9, 13.48e9))
    assert d["total"] == pytest.approx(156.1e9, rel=1e-3) and MEM.fits(d["total"]).startswith("fits none")
    # Llama-3's 128k vocabulary: the head's chunk is 1.6 GB, where (B, T, V) logits at 64 x 1,024 would be 100 GB
    big = MEM.memory_estimate(P, L, H, 128256, tokens=64 * 1024)
    assert big["logits"] == pytest.approx(1024 * 128256 * 12)


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_saved_activation_bytes_match_what_backward_keeps(arch):
    """memory.SAVED against the bytes autograd actually saves (saved-tensor hooks, each storage once, parameters
    and their autocast copies left out by taking the growth per token), per layer (3 layers minus 1), for each
    compute mode; CPU bf16 autocast casts the same ops as CUDA's (linear, SDPA)."""
    import torch

    def saved(c, weights, autocast, T):
        torch.manual_seed(0)
        m = M.GPT(c).to(weights).train()
        x = torch.randint(0, c.vocab_size, (2, T))
        seen = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        params = {p.untyped_storage().data_ptr() for p in m.parameters()}
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            m(x, targets=x)
        return sum(v for p, v in seen.items() if p not in params)

    for C, I, H, kv_heads in ((128, 256, 4, 4), (128, 512, 4, 2)):
        kv_heads = kv_heads if arch == "llama" else H
        cfgs = [M.Config(arch=arch, vocab_size=64, n_layer=n, n_head=H, n_kv_head=kv_heads, n_embd=C,
                         intermediate_size=I) for n in (1, 3)]
        for mode, weights, autocast in (("fp32", torch.float32, False), ("bf16", torch.bfloat16, False),
                                        ("autocast", torch.float32, True)):
            per_layer = [(saved(cfgs[1], weights, autocast, T) - saved(cfgs[0], weights, autocast, T)) / 2
                         for T in (64, 128)]
            measured = (per_layer[1] - per_layer[0]) / (2 * 64)  # bytes a token and layer
            kv = kv_heads * C // H if arch == "llama" else 0
            assert MEM.saved_bytes(arch, C, I, kv, mode) == pytest.approx(measured, rel=0.02), (mode, C, I, kv)


def test_resume_refuses_an_optimizer_state_of_the_other_parallel_mode():
    import torch
    m = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(m.parameters())
    fsdp_state = {"state": {"weight": {"step": torch.tensor(1.0)}}, "param_groups": []}  # keys are names: FSDP's
    with pytest.raises(SystemExit, match=r"saved with --parallel=fsdp; resume with the same --parallel"):
        PAR.load_optimizer_state(m, opt, fsdp_state)


def test_same_config_treats_a_missing_newer_field_as_its_default():
    stored = {"lr": 1e-4, "steps": 10, "name": "run", "resume": False, "ks": [1, 2], "max_len": None}
    assert C.same_config(stored, Cfg(ks=(1, 2)))  # tuples compare as the JSON lists they were written as
    assert not C.same_config(stored, Cfg(ks=(1, 2), steps=11))
    older = {k: v for k, v in stored.items() if k != "max_len"}  # a run made before max_len existed
    assert C.same_config(older, Cfg(ks=(1, 2)))
    assert not C.same_config(older, Cfg(ks=(1, 2), max_len=5))  # ...did not use a non-default max_len
    assert C.same_config({**stored, "resume": True}, Cfg(ks=(1, 2)), ignore=("resume",))
    assert C.same_config({**stored, "removed_option": 3}, Cfg(ks=(1, 2)))
    nested = {**stored, "ks": [[1, {"2": [3]}]]}  # nested tuples and int dict keys, as json.dump writes them
    assert C.same_config(nested, Cfg(ks=((1, {2: (3,)}),))) and not C.same_config(nested, Cfg(ks=((1, {2: (4,)}),)))


@dataclass
class Choice:
    """A script with a field of fixed choices."""
    parallel: typing.Literal["ddp", "fsdp"] = "ddp"


def test_literal_fields_take_only_their_choices(capsys):
    assert C.parse_cli(Choice, ["--parallel=fsdp"]).parallel == "fsdp"
    with pytest.raises(SystemExit, match=r"--parallel='zero': use one of ddp, fsdp"):
        C.parse_cli(Choice, ["--parallel=zero"])
    with pytest.raises(ValueError, match=r"--parallel='zero': use one of ddp, fsdp"):
        C.check_config(Choice(parallel="zero"))  # a Config built in Python is checked the same way
    C.check_config(Choice())
    with pytest.raises(SystemExit):
        C.parse_cli(Choice, ["--help"])
    assert "--parallel='ddp'  (ddp | fsdp)" in capsys.readouterr().out


def test_run_cli_turns_bad_input_into_one_line(capsys):
    def main(cfg):
        raise BadInput("some/file.jsonl:3: what is wrong")
    with pytest.raises(SystemExit) as e:
        C.run_cli(main, Choice, [])
    assert e.value.code == 1
    assert capsys.readouterr().err == "error: some/file.jsonl:3: what is wrong\n"

    def bug(cfg):
        raise KeyError("a bug keeps its traceback")
    with pytest.raises(KeyError):
        C.run_cli(bug, Choice, [])


def test_read_json_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="x.json: not found"):
        FL.read_json(str(tmp_path / "x.json"))
    (tmp_path / "x.json").write_text("{oops")
    with pytest.raises(BadInput, match=r"x.json: malformed JSON"):
        FL.read_json(str(tmp_path / "x.json"))


@pytest.mark.parametrize("name", ["lion", "adamw"])
def test_bf16_weights_with_compensated_updates_follow_fp32(name):
    """At the paper's lr (1.5e-6) a plain bf16 update rounds to nothing; the compensated one moves the weights as fp32
    does: over 300 steps of the same gradients the bf16 weight plus its compensation is within 5% (mean) of the fp32
    weight's movement (measured: Lion 2.7%, from bf16 momentum's occasional sign flips; AdamW 1.4%)."""
    import torch
    torch.manual_seed(0)
    w0 = (torch.randn(64, 64) * 0.02).to(torch.bfloat16).float()  # both runs start from the same weights
    grads = [torch.randn(64, 64).to(torch.bfloat16).float() for _ in range(300)]
    runs = {}
    for kind in ("fp32", "bf16", "naive"):
        w = torch.nn.Parameter(w0.clone() if kind == "fp32" else w0.to(torch.bfloat16))
        opt = C.make_optimizer(name, [w], lr=1.5e-6, weight_decay=0.01)
        for g in grads:
            w.grad = g.to(w.dtype)
            if kind == "naive":  # what a bf16 weight gets without compensation: the update rounded away
                with torch.no_grad():
                    w.add_(-1.5e-6 * g.sign().to(w.dtype))
            else:
                opt.step()
        runs[kind] = w.detach().float() + (opt.state[w]["comp"].float() if kind == "bf16" else 0)
    moved = (runs["fp32"] - w0).abs().mean()
    assert moved > 1e-5
    assert (runs["naive"] != w0).float().mean() < 0.05  # plain bf16: only weights near 0 (fine spacing) move
    assert (runs["bf16"] - runs["fp32"]).abs().mean() < 0.05 * moved


def test_length_buckets_keep_the_examples_and_cut_padding():
    import random
    from common import length_buckets
    rng = random.Random(0)
    examples = [([1] * rng.randint(5, 900), 3) for _ in range(1000)]
    rng.shuffle(examples)
    out = length_buckets(examples, 8, random.Random(1))
    assert sorted(map(id, out)) == sorted(map(id, examples))  # the same examples, each once

    def padded(ex):  # tokens run when every batch of 8 is padded to its longest
        return sum(8 * max(len(e[0]) for e in ex[b:b + 8]) for b in range(0, len(ex), 8))
    real = sum(len(e[0]) for e in examples)
    assert padded(out) - real < 0.1 * (padded(examples) - real)  # over 10x less padding than shuffled batches
    assert out != sorted(examples, key=lambda e: len(e[0]))  # batches come in random order, not shortest first
    assert length_buckets(out, 8, random.Random(2)) != length_buckets(out, 8, random.Random(3))
    same = [([1, 2, 3], 1) for _ in range(20)]
    assert length_buckets(same, 4, random.Random(0)) is same  # one length: unchanged (the toy)
