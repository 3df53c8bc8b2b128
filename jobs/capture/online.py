"""The paper's metrics computed online, inside the trial, after every epoch.

Each end-of-epoch capture's first ``channels_per_stage`` ranked channels go
through the same kernels the analysis uses (:mod:`dynstudy.analysis.kernels.dynamics`, numpy
and scipy only), with the run's own settings (:class:`dynstudy.analysis.kernels.params.AnalysisParams`),
so a trial can report H_eff, M, Psi, its volatility and the volatility trigger as it
trains: Ray Tune's stoppers and the opt-in ``train.volatility_stopping`` rule act on them.
"""
from __future__ import annotations

import math

import numpy as np

from dynstudy.analysis.kernels import dynamics, stopping_rules
from dynstudy.analysis.kernels.params import AnalysisParams


class OnlineDynamics:
    """History of per-epoch H_eff, M and accuracy of one run, and its run metrics.

    Parameters
    ----------
    channels_per_stage : the metric channels of each stage (the first ranked ones of a capture).
    params : the run's analysis settings.
    """

    def __init__(self, channels_per_stage: int, params: AnalysisParams):
        self.k = channels_per_stage
        self.capture_kw = {k: getattr(params, k) for k in dynamics.CAPTURE_PARAMS}
        self.run_kw = params.run_kwargs()
        self.history: dict[str, list[float]] = {"h_eff": [], "metastability": [], "val_acc": []}

    @classmethod
    def from_config(cls, config: dict) -> "OnlineDynamics":
        """The online metrics of a trial config: its ``capture.channels_per_stage`` and ``analysis`` settings."""
        return cls(config["capture"]["channels_per_stage"], AnalysisParams.from_config(config))

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
            return {"h_eff": math.nan, "metastability": math.nan, "psi": math.nan, "psi_volatility": math.nan,
                    "volatility_trigger": None}
        rm = dynamics.run_metrics(np.array(h["h_eff"]), np.array(h["metastability"]),
                                  np.array(h["val_acc"][-len(h["h_eff"]):]), **self.run_kw)
        return {"h_eff": h["h_eff"][-1], "metastability": h["metastability"][-1], "psi": float(rm["psi"][-1]),
                "psi_volatility": float(rm["volatility"][-1]), "volatility_trigger": rm["trigger_epoch"]}

    def state_dict(self) -> dict[str, list[float]]:
        """The history, for a checkpoint."""
        return {name: list(values) for name, values in self.history.items()}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        """Continue from a checkpoint's history."""
        self.history = {name: list(values) for name, values in state.items()}


class OnlineStop:
    """A run's ``train.stop`` rule, decided after every epoch on its results so far.

    The rule is :func:`dynstudy.analysis.kernels.stopping_rules.stop_at`, the function ``dynstudy analyze`` replays
    offline (table ``stopping``); every rule is causal, so it stops the run at the first epoch at which it gives a
    stop epoch, the epoch the replay gives for the same curve.

    Parameters
    ----------
    rule, params : the rule's name and parameters (``train.stop.rule`` and ``.params``).
    analysis : the run's analysis settings (the volatility rule's window and w_h).
    """

    def __init__(self, rule: str, params: dict, analysis: AnalysisParams):
        self.rule, self.params = rule, dict(params)
        self.settings = {"vol_window": analysis.vol_window, "w_h": analysis.w_h}
        self.history: dict[str, list[float]] = {k: [] for k in ("epochs", "val_loss", "val_acc", "h_eff",
                                                                 "metastability")}

    @classmethod
    def from_config(cls, config: dict) -> "OnlineStop | None":
        """The trial config's rule (its ``train.stop``), or None when it sets none."""
        stop = config["train"]["stop"]
        return None if stop is None else cls(stop["rule"], stop["params"], AnalysisParams.from_config(config))

    def stops(self, epoch: int, val_loss: float, val_acc: float, h_eff: float, metastability: float) -> bool:
        """Record the epoch's results; True when the rule stops the run after it."""
        for key, value in (("epochs", epoch), ("val_loss", val_loss), ("val_acc", val_acc), ("h_eff", h_eff),
                           ("metastability", metastability)):
            self.history[key].append(value)
        h = self.history
        curve = {"epochs": np.asarray(h["epochs"], dtype=np.int64), "val_loss": np.asarray(h["val_loss"], float),
                 "val_acc": np.asarray(h["val_acc"], float), "cap_epochs": np.asarray(h["epochs"], dtype=np.int64),
                 "h_eff": np.asarray(h["h_eff"], float), "metastability": np.asarray(h["metastability"], float),
                 **self.settings}
        return stopping_rules.stop_at(self.rule, self.params, curve) is not None

    def state_dict(self) -> dict[str, list[float]]:
        """The history, for a checkpoint."""
        return {name: list(values) for name, values in self.history.items()}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        """Continue from a checkpoint's history."""
        self.history = {name: list(values) for name, values in state.items()}
