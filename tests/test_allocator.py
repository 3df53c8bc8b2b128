"""dynstudy.analysis.run.allocator: a worker that keeps freed memory touches no fresh pages for arrays it made
before."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ROUNDS = """
import resource, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from dynstudy.analysis.run.allocator import keep_freed_memory
print(keep_freed_memory() if sys.argv[2] == "keep" else None)
def rounds(k=20):  # a capture's worth of 2 MiB arrays, made and freed again and again
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(k):
        arrays = [np.ones(1 << 18) for _ in range(4)]
        del arrays
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / k
rounds(2)
print(rounds())
"""


def _faults_per_round(mode: str) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", ROUNDS, str(ROOT), mode], capture_output=True, text=True, check=True)
    took, faults = out.stdout.split()
    return took, float(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_is_reused_without_page_faults():
    took, kept = _faults_per_round("keep")
    assert took == "True"
    # each round touches 4 x 512 pages; kept memory is reused, with no fault
    assert kept < 64, f"{kept} page faults per round with freed memory kept"
    _, default = _faults_per_round("default")
    assert default > 10 * max(kept, 1), "glibc trims the heap between rounds by default (what the module avoids)"
