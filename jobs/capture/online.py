"""The paper's metrics computed online, inside the trial, after every epoch.

Each end-of-epoch capture's first ``channels_per_stage`` ranked channels go
through the same kernels the analysis uses (:mod:`dynstudy.analysis.kernels.dynamics`, numpy
and scipy only), so a trial can report H_eff, M, Psi volatility and the
volatility trigger as it trains: Ray Tune's stoppers and the opt-in
``train.volatility_stopping`` rule act on them.
"""
from __future__ import annotations

import math

import numpy as np

from dynstudy.analysis.kernels import dynamics


class OnlineDynamics:
    """History of per-epoch H_eff, M and accuracy of one run, and its run metrics."""

    def __init__(self, channels_per_stage: int, analysis: dict):
        self.k = channels_per_stage
        self.capture_kw = {k: analysis[k] for k in dynamics.CAPTURE_PARAMS if k in analysis}
        self.run_kw = {k: analysis[k] for k in ("w_h", "vol_window", "vol_threshold", "vol_patience") if k in analysis}
        self.history: dict[str, list[float]] = {"h_eff": [], "metastability": [], "val_acc": []}

    def add(self, signals, labels) -> None:
        acts = np.concatenate([s.values[:, :self.k] for s in signals], axis=1).astype(np.float64)
        m = dynamics.capture_metrics(acts, labels, **self.capture_kw)
        self.history["h_eff"].append(m["h_eff"])
        self.history["metastability"].append(m["metastability"])

    def summary(self, val_acc: float) -> dict:
        """Metrics of the run so far (after ``add`` for this epoch)."""
        self.history["val_acc"].append(val_acc)
        h = self.history
        if not h["h_eff"]:
            return {"h_eff": math.nan, "metastability": math.nan, "psi_volatility": math.nan,
                    "volatility_trigger": None}
        rm = dynamics.run_metrics(np.array(h["h_eff"]), np.array(h["metastability"]),
                                  np.array(h["val_acc"][-len(h["h_eff"]):]), **self.run_kw)
        return {"h_eff": h["h_eff"][-1], "metastability": h["metastability"][-1],
                "psi_volatility": float(rm["volatility"][-1]), "volatility_trigger": rm["trigger_epoch"]}
