"""bench/bench_gpu.py --quick runs end to end on the CPU and its digits accuracy check holds."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_gpu_quick():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "bench/bench_gpu.py", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    print(out)
    rates = {label: float(v) for label, v in re.findall(r"^(\S.*?)\s{2,}(\d+)\s+[\d.]+\s+[\d.]+x$", out, re.M)}
    assert set(rates) == {"reference (DataLoader, fp32)", "dynstudy, no capture", "dynstudy, capture every epoch"}
    assert all(v > 0 for v in rates.values())
    assert re.search(r"capture: [\d.]+ s per epoch = [\d.]+% of the epoch", out)
    packed = dict(re.findall(r"(\d): (\d+) images/s", out))
    assert set(packed) == {"1", "2", "4"} and all(int(v) > 0 for v in packed.values())
    gap = re.search(r"digits accuracy .* dynstudy ([\d.]+)%, reference ([\d.]+)%, gap ([-+][\d.]+) points", out)
    assert gap and abs(float(gap[1]) - float(gap[2])) <= 1.0, out  # the goal: within 1 point
