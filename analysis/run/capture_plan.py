"""What one capture's analysis computes, shared by the fast path and the reference path.

A run's settings (:func:`run_params`: its config's ``analysis`` section over
:data:`dynstudy.analysis.kernels.params.DEFAULTS`), the extra smoothing windows and
probe sizes every end-of-epoch capture is also analysed at (the sensitivity
analysis), the seed of each capture's noise control and the channel subsets
of the channel-draw control. Both :mod:`dynstudy.analysis.run.capture_family` (what
``dynstudy analyze`` runs) and the tests' reference implementation follow these definitions,
so their outputs can be compared value for value.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

from dynstudy.analysis.kernels import dynamics
from dynstudy.analysis.kernels.params import DEFAULTS, AnalysisParams

#: smoothing windows every end-of-epoch capture is also analysed at (sensitivity).
SENSITIVITY_WINDOWS = (1, 5, 15)
#: probe sizes (the first P samples) every end-of-epoch capture is also analysed at, where the probe has them.
SENSITIVITY_PROBES = (256, 512, 1024, 2048, 4096)
#: re-drawn channel subsets per capture for the channel-draw control.
CHANNEL_DRAWS = 8
#: analysis settings a run's config may set (spec section ``analysis``) at their defaults, as a dict.
DEFAULT_PARAMS = DEFAULTS.as_dict()
#: the four metrics of a control row.
CONTROL_METRICS = ("h_raw", "h_eff", "metastability", "synchrony")


def run_seed(run_id: str) -> int:
    """A run's own random seed for its controls, from its id (stable across machines and Python versions)."""
    return int(hashlib.sha1(run_id.encode()).hexdigest()[:8], 16)


def noise_seed(run_id: str, capture: int) -> list[int]:
    """Seed of the capture's noise control (and of its channel re-draws)."""
    return [run_seed(run_id), capture]


def channel_draws(stages: np.ndarray, k: int, n_draws: int, seed: list[int]) -> list[np.ndarray]:
    """``n_draws`` column subsets with ``k`` random stored channels per stage (the channel-draw control)."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(stages == s) for s in np.unique(stages)]
    return [np.concatenate([rng.choice(g, size=min(k, len(g)), replace=False) for g in groups]) for _ in range(n_draws)]


def metric_kwargs(params: dict) -> dict:
    """The keywords of :func:`dynstudy.analysis.kernels.dynamics.capture_metrics` among a run's settings."""
    return {k: params[k] for k in dynamics.CAPTURE_PARAMS}


def sensitivity_settings(n: int, window: int) -> list[tuple[int, int]]:
    """(smoothing window, probe size) of the window_sensitivity rows of a capture with ``n`` probe samples.

    Every window of :data:`SENSITIVITY_WINDOWS` (and the run's own ``window``)
    on the whole probe, then the run's own window on the first P samples for
    each P of :data:`SENSITIVITY_PROBES` below ``n``.
    """
    settings = [(w, n) for w in sorted(set(SENSITIVITY_WINDOWS) | {window})]
    return settings + [(window, p) for p in SENSITIVITY_PROBES if p < n]


def run_params(config_json: str | None) -> tuple[dict, int | None]:
    """A run's analysis settings (its config's ``analysis`` section over the
    defaults) and its metric channel count per stage."""
    cfg = json.loads(config_json) if config_json else {}
    return AnalysisParams.from_config(cfg).as_dict(), (cfg.get("capture") or {}).get("channels_per_stage")
