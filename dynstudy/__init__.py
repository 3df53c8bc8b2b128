"""dynstudy: multi-seed studies of how deep vision networks train, seen as dynamical systems.

The Python API, for notebooks and scripts (the command line is ``dynstudy``)::

    >>> import dynstudy
    >>> con = dynstudy.open_catalog("dynstudy-store")          # doctest: +SKIP
    >>> con.sql("SELECT model, dataset, state FROM run_summary")  # doctest: +SKIP
    >>> run = dynstudy.read_run("dynstudy-store", run_id)      # doctest: +SKIP
    >>> m = dynstudy.capture_metrics(run.captures[1].acts, run.captures[1].labels)  # doctest: +SKIP

Stores: :func:`open_catalog` (a DuckDB connection with a view per table), :func:`read_run` (one run's row,
captures and per-epoch metrics, read with pyarrow). Metric kernels (pure numpy, from
:mod:`dynstudy.analysis.kernels.dynamics`): :func:`pseudo_time`, :func:`dfa_scales`, :func:`dfa_exponents`,
:func:`kuramoto`, :func:`integration`, :func:`capture_metrics`, :func:`series_metrics`, :func:`psi_volatility`,
:func:`convergence_trigger`, :func:`taxonomy_state`, :func:`run_metrics`. Studies: :func:`load_spec`,
:func:`run_study` (needs the ``train`` extra), :func:`analyze`, :func:`write_report`. Any training loop:
:class:`Recorder` (needs torch) captures the network it trains into a store, as the built-in trainer does.

The sub-packages are folders of the repository, installed under this one name: :mod:`dynstudy.study`
(``study/``), :mod:`dynstudy.jobs` (``jobs/``), :mod:`dynstudy.analysis` (``analysis/``) and
:mod:`dynstudy.store_contract` (``store_contract/``). Each attribute below is imported when first used, so
``import dynstudy`` stays cheap and never imports torch or ray.
"""
from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dynstudy")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"

_KERNELS = "dynstudy.analysis.kernels.dynamics"
#: Public name -> the module that defines it.
_HOMES = {
    "open_catalog": "dynstudy.analysis.pipeline.catalog",
    "read_run": "dynstudy.analysis.run.capture_read",
    "RunData": "dynstudy.analysis.run.capture_read",
    "Capture": "dynstudy.analysis.run.capture_read",
    "pseudo_time": _KERNELS,
    "dfa_scales": _KERNELS,
    "dfa_exponents": _KERNELS,
    "kuramoto": _KERNELS,
    "integration": _KERNELS,
    "capture_metrics": _KERNELS,
    "series_metrics": _KERNELS,
    "psi_volatility": _KERNELS,
    "convergence_trigger": _KERNELS,
    "taxonomy_state": _KERNELS,
    "run_metrics": _KERNELS,
    "load_spec": "dynstudy.study.spec",
    "run_study": "dynstudy.study.orchestrate",
    "analyze": "dynstudy.analysis.pipeline.analyze",
    "write_report": "dynstudy.analysis.report.build",
    "Recorder": "dynstudy.jobs.capture.recorder",
}
__all__ = sorted(_HOMES) + ["__version__"]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'dynstudy' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
