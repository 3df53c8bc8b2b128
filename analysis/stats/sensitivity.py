"""Which conclusions flip when the protocol's free parameters change.

The paper took H_opt, sigma_H, the smoothing window and w_H from an EEG study,
and its published trigger results used volatility thresholds 0.40 (CIFAR-10)
and 0.20 (CIFAR-100) where its script says 0.35. Here each is varied in turn
over :data:`GRID` (the others at the run's own values), every run's series is
recomputed from the stored per-capture values (``capture_metrics`` and
``window_sensitivity``, which holds each end-of-epoch capture at every window
and at the first P probe samples: no activations are re-read; w_H and the
volatility threshold act on the per-epoch series only; a probe size larger
than a run's probe leaves that run out of the setting),
and the three claims (:mod:`dynstudy.analysis.stats.claims`) are re-tested, each
family Holm-adjusted as in the claims table. A row per (setting, claim test)
says the verdict and its p, the verdict and p at the runs' own settings, and
what kind of change it is (:func:`verdict_change`): ``flipped`` only for a real
change between supported and not supported, ``changed`` for a change to or
from insufficient seeds, untested or saturated (a test that could or could not
be made, not a different answer); and how many runs changed taxonomy state.

How many real flips does chance alone give a study of this shape? The same
grid is run over a null study (:func:`null_study`): the dataset labels of the
finished runs permuted within each (model, optimizer), seeded, which destroys
any dataset effect; each row's ``null_flips`` is that study's count of real
flips at the row's setting.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dynstudy.analysis.kernels import dynamics
from dynstudy.analysis.kernels.params import PLATEAU_POINTS
from dynstudy.analysis.stats.claims import all_claims, drop_reason
from dynstudy.analysis.stats.verdicts import NOT_SUPPORTED, SUPPORTED

GRID = {
    "h_opt": (0.5, 0.6, 0.7, 0.8),
    "sigma_h": (0.10, 0.15, 0.20),
    "smooth_window": (1, 5, 15),
    "w_h": (0.3, 0.5, 0.7),
    "vol_threshold": (0.20, 0.35, 0.40),
    "probe_size": (256, 512, 1024, 2048, 4096),  # the first P samples of each run's probe, where it has them
}
RUN_KEYS = ("w_h", "vol_window", "vol_threshold", "vol_patience")
#: The seed of the null study's permutation of dataset labels.
NULL_SEED = 0
FLIP, OTHER_CHANGE = "flip", "other"


def verdict_change(default, verdict) -> str | None:
    """:data:`FLIP` for supported <-> not supported, :data:`OTHER_CHANGE` for any other change, None for none.

    >>> verdict_change("supported", "not supported"), verdict_change("untested", "supported")
    ('flip', 'other')
    >>> verdict_change("supported", "supported") is None, verdict_change(None, "supported") is None
    (True, True)
    """
    if default is None or verdict == default:
        return None
    return FLIP if {default, verdict} == {SUPPORTED, NOT_SUPPORTED} else OTHER_CHANGE


def null_study(summaries: list[dict], seed: int = NULL_SEED) -> list[dict]:
    """``summaries`` with the dataset labels of the finished, whole runs permuted within each (model, optimizer).

    Each (model, optimizer) keeps its datasets' run counts; any dataset effect is
    gone. Runs that take no part in the claims keep their labels.

    >>> rows = [{"run_id": str(i), "model": "m", "optimizer": "o", "dataset": d, "status": "finished"}
    ...         for i, d in enumerate("aabb")]
    >>> sorted(r["dataset"] for r in null_study(rows))
    ['a', 'a', 'b', 'b']
    """
    rng = np.random.default_rng(seed)
    groups = defaultdict(list)
    for i, r in enumerate(summaries):
        if drop_reason(r) is None:
            groups[(r["model"], r["optimizer"])].append(i)
    out = [dict(r) for r in summaries]
    for key in sorted(groups):
        idx = sorted(groups[key], key=lambda i: str(summaries[i]["run_id"]))
        labels = [summaries[i]["dataset"] for i in idx]
        for i, j in zip(idx, rng.permutation(len(idx))):
            out[i]["dataset"] = labels[j]
    return out


def _recomputed(series: tuple, params: dict, curve) -> dict:
    """The run-summary values recomputed from a run's per-epoch (epoch, h_raw, M, noise h_raw) at ``params``."""
    epochs, h_raw, meta, noise = series
    h_eff = dynamics.integration(h_raw, params["h_opt"], params["sigma_h"])
    acc = np.full(len(epochs), np.nan)
    if curve is not None:
        lookup = dict(zip(curve[0].tolist(), curve[1].tolist()))
        acc = np.array([lookup.get(int(e), np.nan) for e in epochs])
    rm = dynamics.run_metrics(h_eff, meta, acc, epochs=epochs, **{k: params[k] for k in RUN_KEYS})
    finite = np.isfinite(h_raw)
    return {"h_eff_mean": rm["h_eff_mean"], "r_hz_mz": rm["r_hz_mz"], "state": rm["state"],
            "trigger_epoch": rm["trigger_epoch"],
            "h_raw_mean": float(h_raw[finite].mean()) if finite.any() else None,
            "noise_h_raw_mean": float(np.nanmean(noise)) if np.isfinite(noise).any() else None}


#: The window_sensitivity columns :func:`run_series` reads.
WINDOW_COLUMNS = ("run_id", "kind", "epoch", "smooth_window", "probe_size", "h_raw", "metastability", "noise_h_raw")


def run_series(windows: pa.Table) -> dict:
    """(run_id, window, probe size) -> (epochs, h_raw, metastability, noise h_raw) over end-of-epoch captures.

    ``windows``: window_sensitivity rows with (at least) the columns :data:`WINDOW_COLUMNS`. Rows without a
    probe size (the whole probe, size not recorded) get -1. Each series is in epoch order.
    """
    t = windows.select(list(WINDOW_COLUMNS))
    t = t.filter(pc.fill_null(pc.equal(t["kind"], "epoch"), False))
    probe = t["probe_size"].cast(pa.int64())
    t = t.set_column(t.schema.get_field_index("probe_size"), "probe_size",
                     pc.if_else(pc.fill_null(pc.greater(probe, 0), False), probe, -1))
    keys = ("run_id", "smooth_window", "probe_size")
    t = t.sort_by([(c, "ascending") for c in (*keys, "epoch", "h_raw", "metastability", "noise_h_raw")])
    if not t.num_rows:
        return {}
    new = np.zeros(t.num_rows, dtype=bool)
    new[0] = True
    for c in keys:
        new[1:] |= _differs(t[c][1:], t[c][:-1])
    starts = np.flatnonzero(new)
    key_rows = list(zip(*(t[c].take(starts).to_pylist() for c in keys)))
    cols = [t["epoch"].to_numpy().astype(int)] + [pc.fill_null(t[c].cast(pa.float64()), np.nan).to_numpy()
                                                  for c in ("h_raw", "metastability", "noise_h_raw")]
    return {key: tuple(c[a:b] for c in cols) for key, a, b in zip(key_rows, starts, [*starts[1:], t.num_rows])}


def _differs(a, b) -> np.ndarray:
    """Elementwise: ``a`` and ``b`` (Arrow arrays of one length) hold different values (null equals null)."""
    same = pc.or_(pc.fill_null(pc.equal(a, b), False), pc.and_(pc.is_null(a), pc.is_null(b)))
    return ~same.to_numpy(zero_copy_only=False)


def sensitivity(summaries: list[dict], params_by_run: dict, series: dict, curves: dict,
                plateau_points: float = PLATEAU_POINTS, null_seed: int = NULL_SEED) -> list[dict]:
    """Rows of the ``sensitivity`` table; see the module docstring.

    Parameters
    ----------
    summaries : run_summary rows.
    params_by_run : run_id -> the run's analysis settings (smooth_window, h_opt, sigma_h, w_h, vol_*).
    series : output of :func:`run_series`.
    curves : run_id -> (epochs, val_acc, val_loss).
    null_seed : seed of the null study's permutation (:func:`null_study`).
    """
    whole = defaultdict(lambda: -1)  # run_id -> its whole probe's size
    for rid, _, p in series:
        whole[rid] = max(whole[rid], p)
    usable = [s for s in summaries
              if (s["run_id"], params_by_run[s["run_id"]]["smooth_window"], whole[s["run_id"]]) in series]

    params_of = {s["run_id"]: params_by_run[s["run_id"]] for s in usable}

    def verdicts(runs_in: list[dict], override: dict, known: dict, fresh: dict):
        # a run's recomputed values depend on its series, curve and settings alone, not on its dataset label:
        # those of the real study serve the null study at the same setting (``fresh``), those at the runs' own
        # settings (``known``) every setting that leaves a run's as they are
        runs, params = [], {}
        for s in runs_in:
            params[s["run_id"]] = p = {**params_of[s["run_id"]], **override}
            key = (s["run_id"], p["smooth_window"], p.get("probe_size") or whole[s["run_id"]])
            if key in series:
                values_key = (key, *(p[k] for k in ("h_opt", "sigma_h", *RUN_KEYS)))
                got = known.get(values_key) or fresh.get(values_key)
                if got is None:
                    fresh[values_key] = got = _recomputed(series[key], p, curves.get(s["run_id"]))
                runs.append({**s, **got})
        claims = {(c["claim"], c["model"], c["optimizer"], c["dataset"]): c
                  for c in all_claims(runs, curves, plateau_points, params=params)}
        return claims, {r["run_id"]: r["state"] for r in runs}

    null = null_study(usable, null_seed)
    known = {}
    base_claims, base_states = verdicts(usable, {}, {}, known)
    null_base, _ = verdicts(null, {}, known, {})
    out = []
    for param, values in GRID.items():
        for value in values:
            fresh = {}
            claims, states = verdicts(usable, {param: value}, known, fresh)
            if not states:  # no run has this setting (a probe larger than every run's)
                continue
            null_claims, _ = verdicts(null, {param: value}, known, fresh)
            null_flips = sum(verdict_change((null_base.get(k) or {}).get("verdict"), c["verdict"]) == FLIP
                             for k, c in null_claims.items())
            changed = sum(1 for rid, st in states.items() if st != base_states.get(rid))
            for key, c in sorted(claims.items()):
                default = base_claims.get(key) or {}
                change = verdict_change(default.get("verdict"), c["verdict"])
                out.append({"parameter": param, "value": float(value), "claim": key[0], "model": key[1],
                            "optimizer": key[2], "dataset": key[3], "verdict": c["verdict"],
                            "p_value": c.get("p_value"), "p_adjusted": c.get("p_adjusted"),
                            "default_verdict": default.get("verdict"), "default_p_adjusted": default.get("p_adjusted"),
                            "flipped": change == FLIP, "changed": change == OTHER_CHANGE, "null_flips": null_flips,
                            "states_changed": changed, "n_runs": len(states)})
    return out
