"""Fault injection for recovery drills: ``DYNSTUDY_INJECT_FAULT``.

Set ``DYNSTUDY_INJECT_FAULT="epoch=2,times=1,mode=exception"`` (or
``mode=exit`` for a hard process exit, as an OOM kill or lost node would) and
every trial fails at the first optimiser step of epoch 2, mid-epoch, at most
``times`` times per run. Optional keys: ``step=N`` (fail at that global step
instead), ``run=SUBSTRING`` (only runs whose id contains it). The count of
faults already injected is kept in marker files under
``DYNSTUDY_FAULT_DIR`` (default: the system temp folder), so a retried trial
on the same machine goes through once ``times`` is reached.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

ENV = "DYNSTUDY_INJECT_FAULT"
_KEYS = {"epoch", "step", "times", "mode", "run"}


class InjectedFault(RuntimeError):
    """The failure a drill asked for."""


def parse_fault(text: str) -> dict:
    """Parse ``key=value,...``; raise ValueError naming a bad key or value."""
    spec = {"times": 1, "mode": "exception"}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in _KEYS:
            raise ValueError(f"{ENV}: bad entry {part!r}; use key=value with keys {sorted(_KEYS)}")
        if key in ("epoch", "step", "times"):
            if not value.isdigit():
                raise ValueError(f"{ENV}: {key}={value!r} must be a non-negative integer")
            spec[key] = int(value)
        else:
            spec[key] = value
    if spec["mode"] not in ("exception", "exit"):
        raise ValueError(f"{ENV}: mode={spec['mode']!r}; allowed: exception, exit")
    if "epoch" not in spec and "step" not in spec:
        raise ValueError(f"{ENV}: give epoch=N or step=N")
    return spec


def maybe_inject(*, epoch: int, step: int, run_id: str) -> None:
    """Fail here if ``DYNSTUDY_INJECT_FAULT`` asks for it (no-op when unset)."""
    text = os.environ.get(ENV)
    if not text:
        return
    spec = parse_fault(text)
    if "run" in spec and spec["run"] not in run_id:
        return
    if "step" in spec:
        if step != spec["step"]:
            return
    elif epoch != spec["epoch"]:
        return
    marker_dir = Path(os.environ.get("DYNSTUDY_FAULT_DIR", Path(tempfile.gettempdir()) / "dynstudy-faults"))
    marker_dir.mkdir(parents=True, exist_ok=True)
    marker = marker_dir / f"{run_id}.count"
    done = int(marker.read_text()) if marker.exists() else 0
    if done >= spec["times"]:
        return
    marker.write_text(str(done + 1))
    if spec["mode"] == "exit":
        os._exit(17)
    raise InjectedFault(f"injected fault at epoch {epoch}, step {step} of run {run_id} ({done + 1}/{spec['times']})")
