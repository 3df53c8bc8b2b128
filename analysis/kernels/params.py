"""The analysis parameters: every setting of the metrics and the rules on them, with its default, in one place.

A run records the ``analysis`` section of its spec in its config; every
consumer (the trial's online trigger, ``dynstudy analyze``, the claims, the
report) reads a run's settings with :meth:`AnalysisParams.from_config`, so a
run analysed or drawn anywhere uses the settings it was run with. The study
spec (:class:`dynstudy.study.spec.AnalysisSpec`) takes its defaults from
:data:`DEFAULTS` and adds the bounds a user's value must respect.

Examples
--------
>>> p = AnalysisParams.from_config({"analysis": {"vol_threshold": 0.2}})
>>> p.vol_threshold, p.vol_patience
(0.2, 3)
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class AnalysisParams:
    """The settings of the paper protocol's metrics (SPEC, "The paper protocol"), defaults as the paper's."""

    #: centred rolling-mean window of the pseudo-time series (15 for DenseNet and VGG in the paper preset).
    smooth_window: int = 5
    #: H_eff = exp(-(H_raw - h_opt)^2 / (2 sigma_h^2)).
    h_opt: float = 0.7
    sigma_h: float = 0.15
    #: Psi = w_h Hz + (1 - w_h) Mz.
    w_h: float = 0.5
    #: the smallest DFA scale and the number of log-spaced scales.
    min_scale: int = 16
    n_scales: int = 10
    #: Psi volatility: rolling std over ``vol_window`` epochs; the trigger fires once it has been below
    #: ``vol_threshold`` for ``vol_patience`` consecutive epochs.
    vol_window: int = 3
    vol_threshold: float = 0.35
    vol_patience: int = 3
    #: channel aggregation: "dynstudy", or "authors" (their code's all-channel mean, dead channels at phase 0).
    compat: str = "dynstudy"
    #: temporal protocol: captures per sliding window, and between window starts.
    temporal_window: int = 64
    temporal_stride: int = 16
    #: simulations per null distribution: each capture's H_raw and M against K captures of i.i.d. noise of its
    #: shape, each temporal window's against K phase-randomised and K IAAFT surrogates (0: no nulls).
    null_k: int = 19

    @classmethod
    def from_config(cls, config) -> "AnalysisParams":
        """A run's settings: the ``analysis`` section of its config (a dict or its JSON) over :data:`DEFAULTS`.

        A key that is not a setting is an error naming it, never ignored.
        """
        cfg = json.loads(config) if isinstance(config, (str, bytes)) else (config or {})
        section = cfg.get("analysis") or {}
        unknown = sorted(set(section) - set(NAMES))
        if unknown:
            raise ValueError(f"analysis settings {unknown} are not settings of this dynstudy; known: "
                             f"{', '.join(NAMES)}")
        return cls(**section)

    def as_dict(self) -> dict:
        """The settings as a plain dict (for JSON, tables and keyword arguments)."""
        return asdict(self)

    def run_kwargs(self) -> dict:
        """The keywords of :func:`dynstudy.analysis.kernels.dynamics.run_metrics` (the per-run series)."""
        return {k: getattr(self, k) for k in RUN_PARAMS}

    def trigger_text(self, unit: str = "epochs") -> str:
        """The trigger rule in words, as figures and captions state it; ``unit``: what the series steps through
        (epochs, or the temporal protocol's windows)."""
        return (f"Psi volatility (rolling std over {self.vol_window} {unit}) below {self.vol_threshold:g} "
                f"for {self.vol_patience} consecutive {unit}")


#: The defaults: the paper protocol's values.
DEFAULTS = AnalysisParams()
#: Every setting's name, in declaration order.
NAMES = tuple(f.name for f in fields(AnalysisParams))
#: Settings of the per-run series (Psi, volatility, trigger): those :meth:`AnalysisParams.run_kwargs` gives.
RUN_PARAMS = ("w_h", "vol_window", "vol_threshold", "vol_patience")
#: A run's accuracy plateau: its first epoch within this many percentage points of its best val_acc
#: (``dynstudy analyze --plateau-points``; the claims and the report's plateau markers both read it).
PLATEAU_POINTS = 0.5
#: The stopping-rule comparison (``dynstudy stopping --tolerance``, :mod:`dynstudy.analysis.stats.stopping`): points of
#: val accuracy a chosen setting may give up against the run's best, on average.
STOP_TOLERANCE = 1.0
#: ... and the extra points against patience that still count as equal accuracy (``--margin``).
STOP_MARGIN = 0.5
