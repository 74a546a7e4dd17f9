"""The real-task path as a user meets it, end to end on CPU: policy samples drawn with sample.py, a lock trained
from them, SFT and RL elicitation, on the shipped GSM8K sample with a tiny random Llama and the real Pythia
tokenizer, in the paper's "User: / Assistant:" prompt format (recorded with the lock, used by every later step)."""
import gzip
import json
import os

import torch

import elicit_rl as RL
import elicit_sft as ES
import model as M
import sample as SA
import train_lock as TL
from files import read_jsonl

TOK_GZ = os.path.join(os.path.dirname(__file__), "fixtures", "tokenizers", "pythia_tokenizer.json.gz")


def test_sample_lock_sft_rl_on_gsm8k(tmp_path, capsys):
    ckpt = tmp_path / "base"
    torch.manual_seed(0)
    M.save(M.GPT(M.Config(arch="llama", vocab_size=50304, n_layer=1, n_head=2, n_embd=16, max_seq_len=512,
                          eos_token_id=0)), str(ckpt))
    (ckpt / "tokenizer.json").write_bytes(gzip.open(TOK_GZ).read())
    fmt = "user_assistant"
    weak = tmp_path / "weak.jsonl"
    SA.main(SA.Config(checkpoint=str(ckpt), task="gsm8k", split="lock", prompt_format=fmt, n_samples=2,
                      max_new_tokens=4, out=str(weak), device="cpu", dtype="float32"))
    rows = read_jsonl(weak)
    assert len(rows) == 2 * 120 and rows[0]["prompt"].startswith("User: ") and rows[0]["prompt"].endswith("Assistant:")

    lock_dir = tmp_path / "lock"
    m = TL.main(TL.Config(task="gsm8k", init_from=str(ckpt), weak_samples=str(weak), prompt_format=fmt,
                          optimizer="lion", lr=1e-5, epochs=1, batch_size=8, max_len=320, eval_n=6, eval_batch_size=6,
                          max_new_tokens=4, warmup_steps=1, ckpt_every=0, out_dir=str(lock_dir), device="cpu"))
    assert m["examples"]["with_password"]["prompt"].startswith("User: This problem is quite special")
    assert json.load(open(lock_dir / "train_config.json"))["prompt_format"] == fmt

    # elicitation on the shipped sample needs no flag: the held-out slice is sized from the split (90 -> 30)
    sft_dir = tmp_path / "sft"
    ES.main(ES.Config(locked=str(lock_dir), ks=(2,), epochs=(1.0,), eval_n=6, eval_batch_size=6, max_new_tokens=4,
                      batch_size=2, max_len=320, out_dir=str(sft_dir), device="cpu"))
    row = read_jsonl(sft_dir / "results.jsonl")[0]
    assert (row["optimizer"], row["lr"]) == ("lion", 1e-5)  # inherited from the lock (the paper's protocol)
    assert "memory estimate per device (one process, fp32 weights, lion, " in capsys.readouterr().out

    rl = RL.main(RL.Config(locked=str(lock_dir), rounds=1, samples_per_round=8, n_keep=2, sft_steps=1, batch_size=2,
                           eval_n=6, eval_batch_size=8, max_new_tokens=4, out_dir=str(tmp_path / "rl"), device="cpu"))
    summary = json.load(open(tmp_path / "rl" / "summary.json"))["resolved"]
    assert [r["round"] for r in rl] == [0, 1] and (summary["optimizer"], summary["sft_lr"]) == ("lion", 1e-5)
