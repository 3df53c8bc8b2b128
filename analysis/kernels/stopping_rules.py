"""Stopping rules replayed on a run's recorded curves: each a pure function of the values up to an epoch.

Every rule takes the epochs at which a run reported (increasing, possibly with gaps) and the values it reported
there, and returns the epoch after which it stops training, or None when it never fires (the run trains to its
end). A rule sees only the values up to the epoch it decides at, as it would online; the same functions back the
Ray Tune stoppers of ``stop:`` in a study spec (:mod:`dynstudy.study.stoppers`), so a replay and a live run stop at
the same epoch.

- :func:`patience_stop`: no improvement of more than ``min_delta`` for ``patience`` results in a row (PyTorch
  Lightning's ``EarlyStopping`` and Keras' rule, without restoring the best weights);
- :func:`plateau_stop`: the standard deviation of the last ``num_results`` results below ``std``, after a grace
  period (Ray Tune's ``TrialPlateauStopper``, literally);
- :func:`budget_stop`: a fixed epoch budget;
- :func:`volatility_stop`: the paper's Psi-volatility trigger, computed at every epoch from the values so far
  (the z-scores of H_eff and M over the epochs seen, as the trial's online metrics compute them).

Missing values: a NaN result counts as no improvement (patience) and makes the plateau's standard deviation NaN,
which never stops (Ray Tune's behaviour); a missing epoch is simply not a result (patience counts results, as
Lightning counts validation checks).
"""
from __future__ import annotations

import math

import numpy as np

from dynstudy.analysis.kernels import dynamics
from dynstudy.analysis.kernels.params import DEFAULTS

#: The rules by name, as ``train.stop: {rule: ...}`` and the stopping tables name them, with their parameters.
RULE_PARAMS = {
    "volatility": ("threshold", "patience"),
    "patience_loss": ("patience", "min_delta"),
    "patience_acc": ("patience", "min_delta"),
    "plateau_loss": ("std", "num_results", "grace_period"),
    "budget": ("epochs",),
}
RULES = tuple(RULE_PARAMS)
#: Parameters that count results or epochs: integers >= 1 (the others are thresholds >= 0).
COUNT_PARAMS = ("patience", "num_results", "grace_period", "epochs")


def _pairs(epochs, values):
    epochs = np.asarray(epochs, dtype=np.int64)
    values = np.asarray(values, dtype=float)
    if epochs.shape != values.shape or epochs.ndim != 1:
        raise ValueError(f"epochs {epochs.shape} and values {values.shape}: one value per reported epoch")
    if len(epochs) > 1 and (np.diff(epochs) <= 0).any():
        raise ValueError("epochs must be strictly increasing (one result per epoch, in training order)")
    return epochs, values


def patience_stop(epochs, values, patience: int, min_delta: float = 0.0, mode: str = "min") -> int | None:
    """The epoch at which ``patience`` results in a row have not improved on the best by more than ``min_delta``.

    ``mode`` "min" (a loss: improvement is value < best - min_delta) or "max" (an accuracy). The first finite
    result sets the best. A NaN result is no improvement.

    Examples
    --------
    >>> patience_stop([1, 2, 3, 4, 5], [1.0, 0.9, 0.95, 0.91, 0.92], patience=3)
    5
    >>> patience_stop([1, 2, 3], [0.5, 0.6, 0.7], patience=1, mode="max") is None
    True
    """
    epochs, values = _pairs(epochs, values)
    if int(patience) < 1:
        raise ValueError(f"patience={patience!r} is invalid: use an integer >= 1 (results without improvement)")
    if mode not in ("min", "max"):
        raise ValueError(f"mode={mode!r} is invalid: use 'min' (a loss) or 'max' (an accuracy)")
    sign = 1.0 if mode == "min" else -1.0
    best, wait = math.inf, 0
    for e, v in zip(epochs.tolist(), values.tolist()):
        if math.isfinite(v) and sign * v < best - min_delta:
            best, wait = sign * v, 0
        else:
            wait += 1
            if wait >= patience:
                return int(e)
    return None


def plateau_stop(epochs, values, std: float, num_results: int = 4, grace_period: int = 4,
                 metric_threshold: float | None = None, mode: str | None = None) -> int | None:
    """Ray Tune's ``TrialPlateauStopper`` on one trial's results: the first epoch at which at least
    ``grace_period`` results have come, the last ``num_results`` have a (population) standard deviation below
    ``std``, and, with ``metric_threshold``, the current value is at or below it (``mode`` "min") or at or above it
    ("max").

    Examples
    --------
    >>> plateau_stop([1, 2, 3, 4, 5, 6], [1.0, 0.5, 0.40, 0.401, 0.402, 0.4], std=0.01, num_results=3)
    5
    """
    epochs, values = _pairs(epochs, values)
    if metric_threshold is not None and mode not in ("min", "max"):
        raise ValueError(f"mode={mode!r} is invalid with metric_threshold: use 'min' or 'max'")
    for i, e in enumerate(epochs.tolist()):
        if i + 1 < grace_period or i + 1 < num_results:
            continue
        v = values[i]
        if metric_threshold is not None and ((mode == "min" and v > metric_threshold)
                                             or (mode == "max" and v < metric_threshold)):
            continue
        if np.std(values[i + 1 - num_results:i + 1]) < std:
            return int(e)
    return None


def budget_stop(epochs, budget: int) -> int | None:
    """The first reported epoch at or after ``budget``; None when the run ends before it.

    >>> budget_stop([1, 2, 4, 5], 3), budget_stop([1, 2], 3)
    (4, None)
    """
    epochs = np.asarray(epochs, dtype=np.int64)
    hit = np.flatnonzero(epochs >= int(budget))
    return int(epochs[hit[0]]) if len(hit) else None


def volatility_by_prefix(epochs, h_eff, metastability, window: int = DEFAULTS.vol_window,
                         w_h: float = DEFAULTS.w_h) -> list[np.ndarray]:
    """The Psi volatility a run has at each epoch from the values so far: entry i is the volatility series over
    epochs[:i + 1], with H_eff and M z-scored over those epochs (:func:`dynamics.run_metrics` of the prefix)."""
    epochs, h = _pairs(epochs, h_eff)
    _, m = _pairs(epochs, metastability)
    return [dynamics.run_metrics(h[:i + 1], m[:i + 1], epochs=epochs[:i + 1], w_h=w_h, vol_window=window)["volatility"]
            for i in range(len(epochs))]


def volatility_stop_from(epochs, volatility: list[np.ndarray], threshold: float = DEFAULTS.vol_threshold,
                         patience: int = DEFAULTS.vol_patience) -> int | None:
    """The first epoch at which the trigger has fired on the volatility known then (``volatility``: from
    :func:`volatility_by_prefix`)."""
    epochs = np.asarray(epochs, dtype=np.int64)
    for i, vol in enumerate(volatility):
        if dynamics.convergence_trigger(vol, threshold, patience, epochs[:i + 1]) is not None:
            return int(epochs[i])
    return None


def volatility_stop(epochs, h_eff, metastability, threshold: float = DEFAULTS.vol_threshold,
                    window: int = DEFAULTS.vol_window, patience: int = DEFAULTS.vol_patience,
                    w_h: float = DEFAULTS.w_h) -> int | None:
    """The first epoch at which the Psi-volatility trigger has fired on the values so far.

    At each epoch the run's H_eff and M up to it are z-scored over those epochs, Psi = w_h Hz + (1 - w_h) Mz, its
    rolling std over ``window`` epochs is the volatility, and the trigger fires once it has been below
    ``threshold`` for ``patience`` epochs in a row (:func:`dynstudy.analysis.kernels.dynamics.run_metrics` on the
    prefix, as the trial's online metrics compute it). The paper's trigger over a finished run z-scores over all
    its epochs instead, which a rule deciding during training cannot know.

    Examples
    --------
    >>> e = list(range(1, 11))
    >>> h = [0.1, 0.5, 0.9, 0.95, 0.96, 0.96, 0.96, 0.96, 0.96, 0.96]
    >>> m = [0.3, 0.1, 0.25, 0.12, 0.2, 0.18, 0.19, 0.185, 0.19, 0.19]
    >>> volatility_stop(e, h, m, threshold=0.35), volatility_stop(e, h, m, threshold=0.2)
    (8, 9)
    """
    return volatility_stop_from(epochs, volatility_by_prefix(epochs, h_eff, metastability, window, w_h), threshold,
                                patience)


def stop_at(rule: str, setting: dict, curve: dict, volatility=None) -> int | None:
    """The epoch at which ``rule`` (a name of :data:`RULES`) with ``setting`` (its :data:`RULE_PARAMS`) stops the
    run of ``curve``, or None.

    ``curve``: ``epochs``, ``val_loss``, ``val_acc`` (one entry per reported epoch) and, for the volatility rule,
    ``cap_epochs``, ``h_eff``, ``metastability`` (per end-of-epoch capture) and the run's ``vol_window`` and
    ``w_h``. ``volatility``: the run's :func:`volatility_by_prefix`, when the caller has it. Every rule is causal,
    so on a run still training, a stop epoch (not None) means: stop now.
    """
    e = curve["epochs"]
    if rule == "patience_loss":
        return patience_stop(e, curve["val_loss"], setting["patience"], setting["min_delta"], "min")
    if rule == "patience_acc":
        return patience_stop(e, curve["val_acc"], setting["patience"], setting["min_delta"], "max")
    if rule == "plateau_loss":
        return plateau_stop(e, curve["val_loss"], setting["std"], setting["num_results"], setting["grace_period"])
    if rule == "budget":
        return budget_stop(e, setting["epochs"])
    if rule == "volatility":
        if volatility is None:
            volatility = volatility_by_prefix(curve["cap_epochs"], curve["h_eff"], curve["metastability"],
                                              curve["vol_window"], curve["w_h"])
        return volatility_stop_from(curve["cap_epochs"], volatility, setting["threshold"], setting["patience"])
    raise ValueError(f"rule={rule!r} is not a stopping rule; use one of {', '.join(RULES)}")
