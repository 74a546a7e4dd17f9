"""
sample.py: draw completions from a checkpoint into a JSONL file: the policy samples that train_lock.py locks with
(--weak_samples, --strong_samples) and that elicit_sft.py can fine-tune on (--demo_source=file).

Algorithm:
  1. Read the prompts: a JSONL file with a "prompt" text field per row, or a split of a task's problems (--task).
  2. Draw `n_samples` completions per prompt with sampler.generate (temperature, top-k, top-p; greedy at 0).
  3. Write one row per sample: the input row's fields plus "completion" (text), "completion_ids", "sample_idx" and
     "stopped" (whether a stop id ended it). Task rows are {"id", "domain", "prompt"}: the format train_lock.py reads.

Commands:
  python sample.py --checkpoint=runs/lock --prompts=prompts.jsonl --out=samples.jsonl --n_samples=4 \\
      --temperature=1.0 --max_new_tokens=256
  python sample.py --checkpoint=WEAK_MODEL --task=math --split=lock --n_samples=4 --out=weak.jsonl
Writes `out` (atomically, at the end).
"""
import time
from dataclasses import dataclass
from typing import Literal

import torch

import model as model_lib
from common import Tokenizer, check_config, run_cli
from data.lock import Lock
from errors import BadInput
from files import read_jsonl, write_jsonl
from sampler import generate


@dataclass
class Config:
    checkpoint: str = "runs/lock"      # HF checkpoint directory (config.json, model.safetensors, tokenizer.json)
    tokenizer: str = ""                # tokenizer.json path; default: the one in the checkpoint directory
    prompts: str = ""                  # JSONL, each row with a "prompt" text field (or use --task)
    task: str = ""                     # instead of --prompts: a task of data/ (toy, math, gsm8k, mmlu, code, ...)
    task_path: str = ""                # the task's problems file; default: the shipped sample
    split: str = "all"                 # with --task: weak, lock, elicit, val or all, or a comma list (lock,elicit)
    split_seed: int = 0
    toy_problems: int = 20000          # with --task=toy: the problem set's size (as the lock's)
    password: bool = False             # with --task: put the task's password in the prompts
    prompt_format: Literal["plain", "user_assistant", "chatml"] = "plain"  # with --task (use the lock's)
    out: str = ""                      # output JSONL
    n_samples: int = 1                 # samples per prompt
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    batch_size: int = 32               # rows decoding at once (continuous batching)
    seed: int = 0
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    dtype: str = "bfloat16" if torch.cuda.is_available() else "float32"


def task_rows(lock, splits, password=False):
    """{"id", "domain", "prompt"} rows for the problems of some splits of a lock's task ("all": every problem), in
    the lock's prompt format."""
    for name in splits:
        if name != "all" and name not in lock.splits:
            raise BadInput(f"--split={name!r}: use one of {sorted(lock.splits)} or all (or a comma list)")
    problems = [p for name in splits for p in (lock.task.problems() if name == "all" else lock.splits[name])]
    pw = lock.task.password if password else None
    return [{"id": p["id"], "domain": p["domain"], "prompt": lock.task.prompt(p, password=pw)} for p in problems]


def prompt_rows(path):
    rows = read_jsonl(path)
    for i, r in enumerate(rows, 1):
        if not isinstance(r, dict) or not isinstance(r.get("prompt"), str):
            raise BadInput(f"{path}:{i}: each row needs a text field 'prompt'")
    return rows


def draw(model, tok, rows, n_samples, max_new_tokens, temperature=1.0, top_p=1.0, top_k=0, batch_size=32, seed=0):
    """n_samples completions of every row's prompt, one sampler.generate call (sample j of the whole list draws
    from the random stream (seed, j)). Returns the output rows (input fields plus "completion", "completion_ids",
    "sample_idx", "stopped") and the number of generated tokens."""
    jobs = [(r, k) for r in rows for k in range(n_samples)]
    stop = (tok.eos_id,) if tok.eos_id is not None else ()
    outs = generate(model, [tok.encode_prompt(r["prompt"]) for r, _ in jobs], max_new_tokens, temperature, top_p,
                    stop, seed=seed, top_k=top_k, batch_size=batch_size, vocab_size=tok.vocab_size,
                    pad_id=tok.pad_id, progress="sampling")
    results = [{**r, "completion": tok.decode(ids), "completion_ids": ids, "sample_idx": k,
                "stopped": bool(ids) and ids[-1] in stop} for (r, k), ids in zip(jobs, outs)]
    return results, sum(len(ids) for ids in outs)


def main(cfg):
    check_config(cfg)
    if not (cfg.prompts or cfg.task) or not cfg.out:
        raise BadInput("--prompts=FILE.jsonl (or --task=NAME) and --out=FILE.jsonl are required (see --help)")
    tok = Tokenizer(cfg.tokenizer or cfg.checkpoint)
    model = model_lib.load(cfg.checkpoint, device=cfg.device, dtype=getattr(torch, cfg.dtype))
    if cfg.task:
        lock = Lock.from_config({"task": cfg.task, "task_path": cfg.task_path, "toy_problems": cfg.toy_problems,
                                 "split_seed": cfg.split_seed, "prompt_format": cfg.prompt_format})
        rows = task_rows(lock, cfg.split.split(","), cfg.password)
    else:
        rows = prompt_rows(cfg.prompts)
    t0 = time.time()
    results, n_tok = draw(model, tok, rows, cfg.n_samples, cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.top_k,
                          cfg.batch_size, cfg.seed)
    write_jsonl(cfg.out, results)
    dt = time.time() - t0
    print(f"wrote {len(results)} samples to {cfg.out} | {n_tok} tokens in {dt:.1f}s "
          f"({n_tok / max(dt, 1e-9):.0f} tok/s)")


if __name__ == "__main__":
    run_cli(main, Config)
