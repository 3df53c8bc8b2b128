"""Fault injection for recovery drills: ``DYNSTUDY_INJECT_FAULT``.

Set ``DYNSTUDY_INJECT_FAULT="epoch=2,times=1,mode=exception"`` (or
``mode=exit`` for a hard process exit, as an OOM kill or lost node would) and
every trial fails at the first optimiser step of epoch 2, mid-epoch, at most
``times`` times per run. Optional keys: ``step=N`` (fail at that global step
instead), ``run=SUBSTRING`` (only runs whose id contains it). Each key may be
given once and needs a value; :func:`check_fault_env` parses the variable so
the study driver can refuse a malformed value before Ray starts.

The count of faults already injected is kept in one marker file per run,
scoped to one study invocation::

    <DYNSTUDY_FAULT_DIR>/<DYNSTUDY_INVOCATION>/<run_id>.count

``DYNSTUDY_FAULT_DIR`` defaults to ``dynstudy-faults`` in the system temp
folder. The driver sets ``DYNSTUDY_INVOCATION`` (:data:`INVOCATION_ENV`) to a
fresh id from :func:`new_invocation` for each ``dynstudy run`` and the
variable travels to the workers, so a retried trial of the same invocation
goes through once ``times`` is reached, while the next drill (a new
invocation) injects again. Without the variable the invocation is
``default``. Markers live on the worker's machine: a trial retried on another
node starts counting afresh there.
"""
from __future__ import annotations

import os
import re
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path

ENV = "DYNSTUDY_INJECT_FAULT"
#: Environment variable naming the current study invocation (set by the driver).
INVOCATION_ENV = "DYNSTUDY_INVOCATION"
#: Environment variable naming the folder of the marker files.
FAULT_DIR_ENV = "DYNSTUDY_FAULT_DIR"
#: Invocation used when :data:`INVOCATION_ENV` is unset or empty.
DEFAULT_INVOCATION = "default"

_KEYS = {"epoch", "step", "times", "mode", "run"}
_INT_KEYS = ("epoch", "step", "times")
_MODES = ("exception", "exit")
_WANTED = {"epoch": "a non-negative integer", "step": "a non-negative integer",
           "times": "a non-negative integer", "mode": "exception or exit", "run": "part of a run id"}
_EXAMPLE = f'(example: {ENV}="epoch=2,times=1,mode=exception")'


class InjectedFault(RuntimeError):
    """The failure a drill asked for."""


def _bad(message: str) -> ValueError:
    """Build the ValueError for a malformed ``DYNSTUDY_INJECT_FAULT``.

    Parameters
    ----------
    message : str
        What is wrong and how to fix it, without the variable's name.

    Returns
    -------
    ValueError
        ``"DYNSTUDY_INJECT_FAULT: <message> (example: ...)"``.
    """
    return ValueError(f"{ENV}: {message} {_EXAMPLE}")


def parse_fault(text: str) -> dict:
    """Parse a ``DYNSTUDY_INJECT_FAULT`` value.

    Parameters
    ----------
    text : str
        Comma-separated ``key=value`` entries; keys ``epoch``, ``step``,
        ``times``, ``mode``, ``run``, each at most once.

    Returns
    -------
    dict
        The entries, integers for ``epoch``/``step``/``times``, with the
        defaults ``times=1`` and ``mode="exception"``.

    Raises
    ------
    ValueError
        On an entry without ``=``, an unknown key, an empty value, a key given
        twice, a non-integer ``epoch``/``step``/``times``, an unknown mode, or
        when neither ``epoch`` nor ``step`` is given. The message names the
        variable, the bad entry and the fix.
    """
    spec: dict = {"times": 1, "mode": "exception"}
    seen: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep:
            raise _bad(f"bad entry {part!r}; use key=value with keys {', '.join(sorted(_KEYS))}")
        if key not in _KEYS:
            raise _bad(f"unknown key {key!r} in {part!r}; allowed keys: {', '.join(sorted(_KEYS))}")
        if key in seen:
            raise _bad(f"{key} given twice ({seen[key]!r}, {part!r}); give each key once")
        seen[key] = part
        if not value:
            raise _bad(f"{key}='' is empty; give {_WANTED[key]}")
        if key in _INT_KEYS:
            if not re.fullmatch(r"[0-9]+", value):
                raise _bad(f"{key}={value!r} must be a non-negative integer")
            spec[key] = int(value)
        else:
            spec[key] = value
    if spec["mode"] not in _MODES:
        raise _bad(f"mode={spec['mode']!r} is not a mode; allowed: {', '.join(_MODES)}")
    if "epoch" not in spec and "step" not in spec:
        raise _bad(f"{text.strip()!r} gives neither epoch=N nor step=N; add one")
    return spec


def check_fault_env(environ: Mapping[str, str] = os.environ) -> dict | None:
    """Parse ``DYNSTUDY_INJECT_FAULT`` from ``environ``, if it is set.

    The study driver calls this before Ray starts, so that a malformed value
    stops the study at once rather than in every trial.

    Parameters
    ----------
    environ : Mapping[str, str], optional
        The environment to read (default: ``os.environ``).

    Returns
    -------
    dict or None
        The parsed fault (see :func:`parse_fault`), or None when the variable
        is unset, empty or blank.

    Raises
    ------
    ValueError
        When the value is malformed (see :func:`parse_fault`).
    """
    text = environ.get(ENV, "")
    if not text.strip():
        return None
    return parse_fault(text)


def new_invocation() -> str:
    """Return a fresh study-invocation id for :data:`INVOCATION_ENV`.

    Returns
    -------
    str
        16 random hex digits.
    """
    return secrets.token_hex(8)


def _invocation(environ: Mapping[str, str]) -> str:
    """The invocation id from ``environ``, made safe as one path component.

    Parameters
    ----------
    environ : Mapping[str, str]
        The environment to read.

    Returns
    -------
    str
        :data:`INVOCATION_ENV`'s value with characters other than letters,
        digits, ``_``, ``.`` and ``-`` replaced by ``_``; ``default`` when unset.
    """
    raw = environ.get(INVOCATION_ENV, "").strip()
    if not raw:
        return DEFAULT_INVOCATION
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", raw)
    return "_" if safe in (".", "..") else safe


def marker_path(run_id: str, environ: Mapping[str, str] = os.environ) -> Path:
    """Where the count of faults injected into ``run_id`` is kept.

    Parameters
    ----------
    run_id : str
        The run (trial) id.
    environ : Mapping[str, str], optional
        The environment to read ``DYNSTUDY_FAULT_DIR`` and
        ``DYNSTUDY_INVOCATION`` from (default: ``os.environ``).

    Returns
    -------
    pathlib.Path
        ``<fault_dir>/<invocation>/<run_id>.count``.
    """
    fault_dir = environ.get(FAULT_DIR_ENV) or Path(tempfile.gettempdir()) / "dynstudy-faults"
    return Path(fault_dir) / _invocation(environ) / f"{run_id}.count"


def maybe_inject(*, epoch: int, step: int, run_id: str) -> None:
    """Fail here if ``DYNSTUDY_INJECT_FAULT`` asks for it (no-op when unset).

    Parameters
    ----------
    epoch : int
        The current epoch.
    step : int
        The current global optimiser step.
    run_id : str
        The run's id; faults are counted per run and per invocation.

    Raises
    ------
    InjectedFault
        With ``mode=exception``, when the fault is due; ``mode=exit`` ends the
        process with status 17 instead.
    ValueError
        When ``DYNSTUDY_INJECT_FAULT`` is malformed.
    """
    spec = check_fault_env()
    if spec is None:
        return
    if "run" in spec and spec["run"] not in run_id:
        return
    if "step" in spec:
        if step != spec["step"]:
            return
    elif epoch != spec["epoch"]:
        return
    marker = marker_path(run_id)
    marker.parent.mkdir(parents=True, exist_ok=True)
    done = int(marker.read_text()) if marker.exists() else 0
    if done >= spec["times"]:
        return
    marker.write_text(str(done + 1))
    if spec["mode"] == "exit":
        os._exit(17)
    raise InjectedFault(f"injected fault at epoch {epoch}, step {step} of run {run_id} ({done + 1}/{spec['times']})")
