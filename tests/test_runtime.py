"""Process-wide settings (runtime.py): memory reuse, the attention kernel, cuDNN autotuning."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from personalive_core import runtime
from personalive_core.config import SpeedOptions

ROOT = Path(__file__).resolve().parents[1]

FAULTS = """
import resource, sys, torch
from personalive_core import runtime
if sys.argv[1] == "reuse":
    assert runtime.reuse_freed_memory()
def faults_of_a_fresh_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(25_000_000).fill_(1.0)  # 100 MB, freed at once
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults = [faults_of_a_fresh_block() for _ in range(30)]
print(sum(faults[20:]))  # the heap takes a few blocks to settle (alignment splits), then reuses
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_reuse_freed_memory_stops_refaulting_large_blocks():
    """Each process its own allocator: by default a freed 100 MB block is unmapped, so the next one
    is page-faulted again (~25 000 faults of 4 kB, every time); with reuse it comes back from the heap
    (measured: from the 3rd to 7th block on, none)."""

    def faults(mode):
        run = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, cwd=ROOT, check=True)
        return int(run.stdout.split()[-1])

    plain, reused = faults("plain"), faults("reuse")
    assert plain > 10 * 20_000 and reused < plain / 20, (plain, reused)


def test_sdpa_preference_keeps_the_result():
    q, k, v = (torch.randn(1, 2, 8, 4, generator=torch.Generator().manual_seed(i)) for i in range(3))
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    for name in ("auto", "math"):
        with runtime.sdpa_preference(name):
            torch.testing.assert_close(torch.nn.functional.scaled_dot_product_attention(q, k, v), want)
    with pytest.raises(ValueError, match="SDPA kernel"):
        runtime.sdpa_preference("fastest")


def test_cudnn_benchmark_is_restored():
    before = torch.backends.cudnn.benchmark
    with runtime.cudnn_benchmark(not before):
        assert torch.backends.cudnn.benchmark is (not before)
    assert torch.backends.cudnn.benchmark is before


def test_process_settings_apply_and_restore():
    before = torch.backends.cudnn.benchmark
    speed = SpeedOptions(cudnn_benchmark=not before, reuse_memory=False)
    with runtime.process_settings(speed) as applied:
        assert torch.backends.cudnn.benchmark is (not before) and applied == speed
    assert torch.backends.cudnn.benchmark is before
