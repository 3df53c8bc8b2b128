"""The online trigger uses the run's own analysis settings, compat included."""
from __future__ import annotations

import math

import numpy as np

from dynstudy.analysis.kernels.params import AnalysisParams
from dynstudy.jobs.capture.online import OnlineDynamics
from dynstudy.jobs.capture.probe import StageSignal


def _signals(dead: bool):
    rng = np.random.default_rng(0)
    values = np.cumsum(rng.standard_normal((128, 8)), axis=0).astype(np.float32)
    if dead:
        values[:, 3] = 1.0  # a dead channel
    return [StageSignal("s1", np.arange(8), values)]


def test_online_metrics_follow_the_compat_setting():
    labels = np.repeat(np.arange(4), 32)
    ours = OnlineDynamics(8, AnalysisParams(min_scale=8))
    theirs = OnlineDynamics(8, AnalysisParams(min_scale=8, compat="authors"))
    for online in (ours, theirs):
        online.add(_signals(dead=True), labels)
    assert math.isfinite(ours.history["h_eff"][0])   # the valid channels' mean
    assert math.isnan(theirs.history["h_eff"][0])    # the authors' all-channel mean
