"""bench.py's matmul ceiling: the profiler count it rests on sees matmuls and nothing else."""
import torch

import bench


def test_matmul_seconds_counts_matmuls_only():
    a = torch.randn(256, 256)
    assert bench.matmul_seconds(lambda: [a @ a for _ in range(5)]) > 0
    assert bench.matmul_seconds(lambda: [torch.nn.functional.linear(a, a, a[0]) for _ in range(5)]) > 0  # addmm
    assert bench.matmul_seconds(lambda: [a.exp().sum() for _ in range(5)]) == 0
