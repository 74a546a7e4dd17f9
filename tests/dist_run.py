"""Helper for tests/test_distributed.py: run several script command lines one after another in this process, so
that one torchrun launch (one process group) serves them all. Each line is a script and its --field=value options:
    python tests/dist_run.py "train_lock.py --out_dir=X ..." "elicit_sft.py --locked=X ..."
    torchrun --standalone --nproc_per_node=2 tests/dist_run.py "train_lock.py --parallel=fsdp ..." ...
"""
import importlib
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import parse_cli  # noqa: E402
from parallel import finish_dist  # noqa: E402

for line in sys.argv[1:]:
    script, *argv = shlex.split(line)
    mod = importlib.import_module(os.path.basename(script).removesuffix(".py"))
    mod.main(parse_cli(mod.Config, argv))
finish_dist()
