import os
import sys

# the scripts are top-level modules: make `import model` work from any working directory
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def locked(tmp_path_factory):
    """A tiny toy checkpoint made by train_lock.py (barely trained): the starting point of the elicitation tests."""
    import train_lock as TL
    out = str(tmp_path_factory.mktemp("lock") / "lock")
    TL.main(TL.Config(toy_problems=3000, n_layer=1, n_head=2, n_embd=32, pretrain_samples=400, pretrain_steps=4,
                      epochs=1, batch_size=64, eval_n=20, out_dir=out, device="cpu", ckpt_every=0, log_every=0))
    return out
