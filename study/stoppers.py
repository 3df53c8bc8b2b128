"""Ray Tune stoppers built on the paper's metrics."""
from __future__ import annotations

from ray import tune


class VolatilityStopper(tune.Stopper):
    """Stop a trial when its Psi-volatility convergence trigger fires.

    Each trial computes H_eff and M of every end-of-epoch capture online
    (:mod:`dynstudy.jobs.capture.online`) and reports ``volatility_trigger``: the epoch at which
    the volatility of Psi had been below the threshold for the patience
    (SPEC), or None. Opt in with ``train.volatility_stopping: true``; the
    trial then also records ``stop_reason = volatility`` in the runs table.
    The usual patience rule on validation loss stays in force beside it.
    """

    def __call__(self, trial_id: str, result: dict) -> bool:
        return result.get("volatility_trigger") is not None

    def stop_all(self) -> bool:
        return False
