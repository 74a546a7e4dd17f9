"""Helper for tests/test_distributed.py: completions of 37 prompts with common.greedy_completions, greedy and sampled
at temperature 1 (5 rows decoding at once), and the bf16 evaluation copy of an FSDP-sharded model (greedy
completions from it, and whether its weights are exactly the bf16 cast of the full ones), written as JSON by rank 0. Run alone or under torchrun (directly or
through tests/dist_run.py); the outputs must be identical.
    python tests/dist_eval_check.py --out=OUT.json
    torchrun --standalone --nproc_per_node=2 tests/dist_eval_check.py --out=OUT.json
"""
import json
import os
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torch  # noqa: E402
from tokenizers import Tokenizer as HFTokenizer, models, pre_tokenizers  # noqa: E402

import model as M  # noqa: E402
from common import Tokenizer, greedy_completions, parse_cli  # noqa: E402
from parallel import finish_dist, plain_model, prepare_model, setup_dist  # noqa: E402


@dataclass
class Config:
    out: str = "eval_check.json"


def main(cfg):
    rank, world, _ = setup_dist("cpu")
    here = os.path.dirname(os.path.abspath(__file__))
    m = M.load(os.path.join(here, "fixtures", "llama_gqa_untied"))  # vocab 96
    words = ["<pad>", "<eos>"] + [f"w{i}" for i in range(94)]
    hf = HFTokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = f"{cfg.out}.tok{rank}.json"
    hf.save(path)
    tok = Tokenizer(path, eos_id=1)
    g = torch.Generator().manual_seed(0)
    prompts = [" ".join(f"w{int(t)}" for t in torch.randint(2, 96, (int(n),), generator=g))
               for n in torch.randint(1, 12, (37,), generator=g)]
    out = {"world": world, "completions": greedy_completions(m, tok, prompts, 10, batch_size=5),
           "sampled": greedy_completions(m, tok, prompts, 10, batch_size=5, temperature=1.0, seed=3)}
    sharded = prepare_model(M.load(os.path.join(here, "fixtures", "llama_gqa_untied")), "fsdp")
    copy = plain_model(sharded, torch.bfloat16)  # under FSDP: gathered tensor by tensor, cast to bf16
    out["copy_dtype"] = str(next(copy.parameters()).dtype)  # one process: the model itself (generate casts it)
    out["copy_exact"] = all(torch.equal(a, b.to(a.dtype)) for a, b in zip(copy.state_dict().values(),
                                                                            m.state_dict().values()))
    out["bf16_completions"] = greedy_completions(sharded, tok, prompts, 10, batch_size=5, dtype=torch.bfloat16)
    if rank == 0:
        with open(cfg.out, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main(parse_cli(Config))
    finish_dist()
