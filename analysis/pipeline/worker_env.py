"""The environment analysis worker processes start with (no numpy import here).

Each worker analyses one run at a time on one core, so its BLAS library must
not start threads of its own: on a machine whose cores all run workers they
only contend with the other workers, and numpy's small matrix products (the
DFA detrending) then take many times longer while the threads wait on each
other. A BLAS library reads its thread count when it loads, so the setting
must be in the environment a worker process starts with.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@contextmanager
def single_threaded_children():
    """Processes started inside this block get one BLAS thread (unless the environment already sets one)."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
