"""Ray Tune stoppers built on the paper's metrics."""
from __future__ import annotations

from ray import tune

from dynstudy.analysis.kernels.params import AnalysisParams
from dynstudy.jobs.capture.online import OnlineStop


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


class RuleStopper(tune.Stopper):
    """Stop a trial when its ``train.stop`` rule fires on the results it has reported (epoch, val_loss, val_acc,
    h_eff, metastability), through the same :class:`dynstudy.jobs.capture.online.OnlineStop` a dynstudy trial
    decides ``train.stop`` with. A dynstudy study needs no stopper for it: each trial stops itself with its own
    run's settings and records the rule as its ``stop_reason``. This class is the rule for any other Tune
    experiment whose trials report those metrics (``analysis``: the settings of the volatility rule)."""

    def __init__(self, rule: str, params: dict, analysis: AnalysisParams | None = None):
        self.rule, self.params, self.analysis = rule, dict(params), analysis or AnalysisParams()
        self.trials: dict[str, OnlineStop] = {}

    def __call__(self, trial_id: str, result: dict) -> bool:
        if "epoch" not in result or "status" in result:  # a trial's closing report (diverged, failed): no epoch
            return False
        check = self.trials.setdefault(trial_id, OnlineStop(self.rule, self.params, self.analysis))
        return check.stops(result["epoch"], result.get("val_loss", float("nan")), result.get("val_acc", float("nan")),
                           result.get("h_eff", float("nan")), result.get("metastability", float("nan")))

    def stop_all(self) -> bool:
        return False
