"""sample.py, the command line that writes policy samples (JSONL in, JSONL out)."""
import json
import os

import pytest
import torch

import model as M
import sample as S

FIX = os.path.join(os.path.dirname(__file__), "fixtures")


def test_command_line_writes_jsonl(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    words = ["<pad>", "<eos>"] + [f"w{i}" for i in range(94)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    ckpt = tmp_path / "ckpt"
    M.save(M.load(os.path.join(FIX, "llama_gqa_untied")), str(ckpt))  # vocab 96 = len(words)
    tok.save(str(ckpt / "tokenizer.json"))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(["w3 w4 w5", "w9"])))
    out = tmp_path / "out.jsonl"
    cfg = S.Config(checkpoint=str(ckpt), prompts=str(prompts), out=str(out), n_samples=3, max_new_tokens=6,
                   temperature=1.0, batch_size=4, device="cpu", dtype="float32")
    S.main(cfg)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and sorted((r["id"], r["sample_idx"]) for r in rows) == [(i, k) for i in (0, 1)
                                                                                     for k in range(3)]
    for r in rows:
        assert 1 <= len(r["completion_ids"]) <= 6
        assert r["stopped"] == (r["completion_ids"][-1] == 1)
        assert r["completion"] == " ".join(words[i] for i in r["completion_ids"] if i != 1)
    S.main(cfg)  # same seed, same samples
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "w1"}\n{"text": "w2"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: each row needs a text field 'prompt'"):
        S.main(S.Config(checkpoint=str(ckpt), prompts=str(bad), out=str(out), device="cpu", dtype="float32"))


def test_command_line_with_a_task_split(tmp_path):
    import gzip

    import data
    ckpt = tmp_path / "ckpt"
    torch.manual_seed(0)
    M.save(M.GPT(M.Config(arch="gpt_neox", vocab_size=50304, n_layer=1, n_head=2, n_embd=16, max_seq_len=2048,
                          parallel_residual=True, attn_bias=True, mlp_bias=True, hidden_act="gelu",
                          eos_token_id=0)), str(ckpt))
    tok_gz = os.path.join(FIX, "tokenizers", "pythia_tokenizer.json.gz")
    (ckpt / "tokenizer.json").write_bytes(gzip.open(tok_gz).read())
    out = tmp_path / "weak.jsonl"
    S.main(S.Config(checkpoint=str(ckpt), task="gsm8k", split="val", out=str(out), max_new_tokens=3,
                    batch_size=64, device="cpu", dtype="float32"))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    val = data.split(data.get_task("gsm8k").problems(), seed=0)["val"]
    assert [r["id"] for r in rows] == [p["id"] for p in val]
    assert all(r["prompt"] == data.get_task("gsm8k").prompt(p) for r, p in zip(rows, val))
    assert all(all(i < 50277 for i in r["completion_ids"]) for r in rows)  # padded ids never sampled
    with pytest.raises(ValueError, match=r"--split='train'"):
        S.main(S.Config(checkpoint=str(ckpt), task="gsm8k", split="train", out=str(out), device="cpu",
                        dtype="float32"))
