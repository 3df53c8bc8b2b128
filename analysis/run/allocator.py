"""Keep freed memory in an analysis worker process, so that arrays of one capture reuse the last one's pages.

A capture of 128 channels x 2048 samples is a 2 MiB float64 array, and the
fast path makes a few dozen arrays of that size per capture (the pseudo-time
series, the noise draw, the FFT's spectra). glibc's malloc hands blocks that
size back to the operating system when they are freed: as separate mappings
above its mmap threshold (128 KiB, raised at run time up to 32 MiB), or by
trimming the top of the heap once more than twice that threshold is free.
The next array then starts on fresh pages, and each 4 KiB page costs a page
fault on first touch. On this 2-core machine (a virtual machine, where a page
fault is dear) that was about a fifth of the fast path's CPU time per capture
(95 ms against 76 ms, one process over a 2-run x 30-capture generated store),
and tests/test_allocator.py counts about 2,000 faults per round of four 2 MiB
arrays by default and none with memory kept.

:func:`keep_freed_memory` raises both thresholds (glibc's ``mallopt``) in the
process that calls it: allocations below 64 MiB come from the heap, and up to
256 MiB of free heap stays mapped. It is called by the worker processes and
Ray tasks of ``dynstudy analyze`` (:func:`dynstudy.analysis.run.run_analysis.analyze_in_worker`),
whose lifetime the analysis owns; the peak memory of a worker is unchanged
(what is kept is what was in use a moment before), only not returned early.
Elsewhere than glibc it does nothing.
"""
from __future__ import annotations

import ctypes
import sys

#: glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: Allocations below this come from the heap (no mapping of their own).
MMAP_THRESHOLD = 64 << 20
#: Free memory at the top of the heap kept mapped, up to this.
TRIM_THRESHOLD = 256 << 20

_kept = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds in this process (once); True where that took effect."""
    global _kept
    if _kept is None:
        _kept = False
        if sys.platform.startswith("linux"):
            try:
                mallopt = ctypes.CDLL(None).mallopt
            except (OSError, AttributeError):  # not glibc (musl has it, as a no-op that returns 0)
                return False
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            _kept = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _kept
