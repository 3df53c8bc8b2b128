"""Stopping rules replayed offline (dynstudy.analysis.kernels.stopping_rules) and compared without peeking
(dynstudy.analysis.stats.stopping): hand-computed stop epochs, Ray Tune's own plateau stopper and the trial's
online trigger as ground truth, the held-out choice, and the verdict's false-positive rate."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dynstudy.analysis.kernels import stopping_rules as sr
from dynstudy.analysis.kernels.params import AnalysisParams
from dynstudy.analysis.stats import stopping as st
from dynstudy.analysis.stats.verdicts import ALPHA

NAN = math.nan


@pytest.mark.parametrize("epochs, values, kw, want", [
    ([1, 2, 3, 4, 5], [1.0, 0.9, 0.95, 0.91, 0.92], {"patience": 3}, 5),      # 3 results above the best 0.9
    ([1, 2, 3, 4, 5], [1.0, 0.9, 0.95, 0.89, 0.92], {"patience": 3}, None),   # 0.89 resets the count
    ([1, 2, 3, 4], [1.0, 0.995, 0.99, 0.985], {"patience": 2, "min_delta": 0.01}, 3),  # gains below min_delta
    ([1, 2, 3, 4], [1.0, NAN, NAN, 0.5], {"patience": 2}, 3),                 # NaN is no improvement
    ([1, 2, 5, 6], [1.0, 1.1, 1.2, 0.5], {"patience": 2}, 5),                 # epochs 3-4 missing: results count
    ([1, 2, 3], [0.5, 0.6, 0.6], {"patience": 1, "mode": "max"}, 3),          # accuracy: no gain at 3
    ([1, 2, 3], [0.5, 0.6, 0.61], {"patience": 1, "mode": "max", "min_delta": 0.02}, 3),
])
def test_patience_stops_where_counted_by_hand(epochs, values, kw, want):
    assert sr.patience_stop(epochs, values, **kw) == want


def test_plateau_stop_equals_ray_tunes_own_stopper():
    """Ray Tune's TrialPlateauStopper fed the same results stops at the same epoch, over random curves with NaN,
    thresholds and modes."""
    from ray.tune.stopper import TrialPlateauStopper

    rng = np.random.default_rng(0)
    fired = 0
    for trial in range(300):
        n = int(rng.integers(3, 25))
        values = np.cumsum(rng.normal(0, 0.02, n)) * rng.choice([1.0, 0.1]) + 1
        if trial % 7 == 0:
            values[rng.integers(0, n)] = NAN
        epochs = np.cumsum(rng.integers(1, 3, n))
        kw = {"std": float(rng.choice([0.005, 0.01, 0.05])), "num_results": int(rng.integers(2, 6)),
              "grace_period": int(rng.integers(1, 6))}
        if trial % 3 == 0:
            kw.update(metric_threshold=1.0, mode=str(rng.choice(["min", "max"])))
        ray_stopper = TrialPlateauStopper("loss", **kw)
        want = next((int(e) for e, v in zip(epochs, values) if ray_stopper("t", {"loss": v})), None)
        assert sr.plateau_stop(epochs, values, **kw) == want, (trial, kw)
        fired += want is not None
    assert 50 < fired < 290


def test_budget_stops_at_the_first_epoch_at_or_past_it():
    assert sr.budget_stop([1, 2, 4, 5], 3) == 4 and sr.budget_stop([1, 2, 3], 3) == 3
    assert sr.budget_stop([1, 2], 3) is None


def test_volatility_stop_equals_the_trials_online_trigger():
    """The replay stops where the trial's online metrics (jobs/capture/online.py) first report a trigger."""
    online = pytest.importorskip("dynstudy.jobs.capture.online")
    rng = np.random.default_rng(1)
    fired = 0
    for trial in range(60):
        n = int(rng.integers(4, 30))
        h = 0.5 + np.cumsum(rng.normal(0, 0.05, n)) * np.exp(-np.arange(n) / rng.uniform(2, 20))
        m = 0.1 + rng.normal(0, 0.01, n)
        if trial % 5 == 0:
            m[rng.integers(0, n)] = NAN
        params = AnalysisParams(vol_threshold=float(rng.choice([0.2, 0.35, 0.5])), vol_patience=int(rng.integers(1, 4)))
        dyn = online.OnlineDynamics(4, params)
        want = None
        for i in range(n):
            dyn.load_state_dict({"h_eff": list(h[:i + 1]), "metastability": list(m[:i + 1]), "val_acc": [0.5] * i})
            if dyn.summary(0.5)["volatility_trigger"] is not None:
                want = i + 1
                break
        got = sr.volatility_stop(np.arange(1, n + 1), h, m, params.vol_threshold, params.vol_window,
                                 params.vol_patience, params.w_h)
        assert got == want, trial
        fired += want is not None
    assert 10 < fired < 60


def test_rules_name_bad_input():
    with pytest.raises(ValueError, match="strictly increasing"):
        sr.patience_stop([1, 1], [0.1, 0.2], 1)
    with pytest.raises(ValueError, match="patience=0 is invalid"):
        sr.patience_stop([1], [0.1], 0)
    with pytest.raises(ValueError, match="mode='up' is invalid"):
        sr.patience_stop([1], [0.1], 1, mode="up")
    with pytest.raises(ValueError, match="not a stopping rule"):
        sr.stop_at("early", {}, {"epochs": [1]})


def _curve(acc, loss=None):
    n = len(acc)
    return {"epochs": np.arange(1, n + 1), "val_acc": np.asarray(acc, float),
            "val_loss": np.asarray(loss if loss is not None else 1 - np.asarray(acc), float)}


def test_outcome_is_counted_against_the_best_and_the_final_epoch():
    c = _curve([0.5, 0.7, 0.8, 0.75, 0.78])
    assert st.outcome(c, 2) == {"stop_epoch": 2, "final_epoch": 5, "epochs_saved": 3, "acc_at_stop": 0.7,
                                "given_up_best": pytest.approx(10.0), "given_up_final": pytest.approx(8.0)}
    assert st.outcome(c, None)["epochs_saved"] == 0 and st.outcome(c, None)["given_up_best"] == pytest.approx(2.0)


def test_the_held_out_choice_never_sees_its_cell():
    """A setting that only suits the held-out cell is chosen in sample but not held out."""
    rows = []
    for cell, good in (("a", "fast"), ("b", "slow"), ("c", "slow")):
        for seed in range(3):
            for setting, saved, given in (("fast", 8, 0.2 if cell == "a" else 5.0), ("slow", 2, 0.1)):
                rows.append({"run_id": f"{cell}{seed}", "model": "m", "dataset": cell, "optimizer": "sgd",
                             "seed": seed, "rule": "budget", "setting": setting, "stop_epoch": 10 - saved,
                             "final_epoch": 10, "epochs_saved": saved, "acc_at_stop": 0.5, "given_up_best": given,
                             "given_up_final": 0.0})
    assert st.choose([r for r in rows if r["dataset"] != "a"]) == ("slow", True)
    assert st.choose([r for r in rows if r["dataset"] == "a"]) == ("fast", True)
    assert st.choose(rows, tolerance=0.05) == ("slow", False)  # none meets it: the one giving up least
    out = {(r["dataset"], r["selection"]): r for r in st.summary(rows)}
    assert out[("a", "held_out")]["setting"] == "slow" and out[("a", "held_out")]["epochs_saved_mean"] == 2
    assert out[("a", "in_sample")]["setting"] == "slow"  # on all cells: fast gives up 3.4 points on average


def _null_rows(rng, n_cells: int, n_seeds: int) -> list[dict]:
    """Rows of a study where a rule and patience stop alike: each run's two outcomes drawn from one distribution."""
    rows = []
    for c in range(n_cells):
        for seed in range(n_seeds):
            for rule in ("patience_loss", "volatility"):
                saved = int(rng.integers(0, 10))
                rows.append({"run_id": f"c{c}s{seed}", "model": "m", "dataset": f"d{c}", "optimizer": "sgd",
                             "seed": seed, "rule": rule, "setting": json.dumps({"x": 1}), "stop_epoch": 20 - saved,
                             "final_epoch": 20, "epochs_saved": saved, "acc_at_stop": 0.5,
                             "given_up_best": float(saved * 0.05 + rng.exponential(0.1)), "given_up_final": 0.0})
    return rows


def test_the_verdict_is_calibrated_when_a_rule_stops_like_patience():
    """Rule and baseline drawn alike: "saves more" in at most 5% of studies (Holm over the cells)."""
    rng = np.random.default_rng(3)
    calls = []
    for _ in range(300):
        out = st.summary(_null_rows(rng, 3, 8))
        held = [r for r in out if r["rule"] == "volatility" and r["selection"] == "held_out"]
        assert all(r["verdict"] in (st.SAVES_MORE, st.NOT_SHOWN) for r in held)
        calls.append(any(r["verdict"] == st.SAVES_MORE for r in held))
    assert np.mean(calls) <= ALPHA


def test_the_verdict_finds_a_rule_that_saves_more_at_equal_accuracy_and_needs_its_runs():
    rng = np.random.default_rng(4)
    rows = _null_rows(rng, 2, 8)
    for r in rows:
        if r["rule"] == "volatility":
            r["epochs_saved"] += 5
    out = st.summary(rows)
    held = [r for r in out if r["rule"] == "volatility" and r["selection"] == "held_out"]
    assert [r["verdict"] for r in held] == [st.SAVES_MORE] * 2 and all(r["p_adjusted"] < ALPHA for r in held)
    few = st.summary([r for r in rows if r["seed"] < 3])
    assert {r["verdict"] for r in few if r["rule"] == "volatility" and r["selection"] == "held_out"} == {
        "insufficient seeds (needs 5)"}
    one_cell = st.summary([r for r in rows if r["dataset"] == "d0"])
    assert {r["verdict"] for r in one_cell if r["selection"] == "held_out" and r["rule"] != st.BASELINE} == {
        "untested"}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    import io

    from dynstudy.analysis.pipeline.analyze import analyze
    from tests.store_factory import make_store

    path = tmp_path_factory.mktemp("stopping")
    make_store(path, seeds=(0, 1, 2), datasets=("digits", "synthetic"), epochs=8)
    analyze(str(path), out=io.StringIO())
    return path


def test_analyze_writes_the_comparison_and_the_command_recomputes_it(analysed, capsys, tmp_path):
    from dynstudy.analysis.pipeline.catalog import open_catalog
    from dynstudy.study.cli import main

    con = open_catalog(str(analysed))
    stored = con.execute("SELECT rule, selection, setting, n_runs, verdict FROM stopping_summary "
                         "ORDER BY model, dataset, optimizer, rule, selection").fetchall()
    assert {r[0] for r in stored} == set(sr.RULES) and {r[3] for r in stored} == {3}
    assert {r[4] for r in stored if r[1] == "held_out"} == {"baseline", "insufficient seeds (needs 5)"}
    # the replay is the rules on the store's own curves
    loss = con.execute("SELECT run_id, epoch, val_loss FROM train_metrics ORDER BY run_id, epoch").fetchall()
    for run_id, setting, stop in con.execute("SELECT run_id, setting, stop_epoch FROM stopping "
                                             "WHERE rule = 'patience_loss'").fetchall():
        mine = [(e, v) for r, e, v in loss if r == run_id]
        s = json.loads(setting)
        assert stop == sr.patience_stop([e for e, _ in mine], [v for _, v in mine], s["patience"], s["min_delta"])
    out = tmp_path / "s.json"
    assert main(["stopping", "--store", str(analysed), "--format", "json", "--output", str(out)]) == 0
    again = json.loads(out.read_text())
    key = lambda r: (r["model"], r["dataset"], r["optimizer"], r["rule"], r["selection"])  # noqa: E731
    assert [(r["rule"], r["selection"], r["setting"], r["n_runs"], r["verdict"]) for r in sorted(again, key=key)
            ] == [tuple(r) for r in stored]
    assert main(["stopping", "--store", str(analysed), "--runs", "--format", "csv"]) == 0
    n_rows = con.execute("SELECT count(*) FROM stopping").fetchone()[0]
    assert len(capsys.readouterr().out.strip().splitlines()) == n_rows + 1


def test_the_command_names_the_fix_on_a_store_without_analysis(tmp_path, capsys):
    from dynstudy.study.cli import main
    from tests.store_factory import make_store

    make_store(tmp_path, seeds=(0,), datasets=("digits",), epochs=3)
    assert main(["stopping", "--store", str(tmp_path)]) == 2
    assert "run `dynstudy analyze --store" in capsys.readouterr().err


@pytest.mark.parametrize("rule, params", [("patience_acc", {"patience": 1, "min_delta": 0.0}),
                                          ("plateau_loss", {"std": 0.5, "num_results": 2, "grace_period": 2}),
                                          ("budget", {"epochs": 3})])
def test_a_trial_stops_where_the_offline_replay_of_its_curves_does(tmp_path, rule, params):
    """train.stop in a real trial: its last epoch is the replay's stop epoch on the store's own curves, the run
    says why, and Tune's RuleStopper fed the trial's reports stops at the same result."""
    pytest.importorskip("torch")
    import duckdb

    from dynstudy.jobs.trial.session import LocalSession
    from dynstudy.jobs.trial.trainer import run_trial
    from dynstudy.study.stoppers import RuleStopper
    from tests.test_trainer import trial

    session = LocalSession(tmp_path / "ck")
    final = run_trial(trial(tmp_path / "s", train={"epochs": 6, "stop": {"rule": rule, "params": params}}), session)
    con = duckdb.connect()
    read = f"read_parquet('{tmp_path}/s/%s/**/*.parquet', hive_partitioning=false)"
    got = con.sql(f"SELECT epoch, val_loss, val_acc FROM {read % 'train_metrics'} ORDER BY epoch").fetchall()
    replay = sr.stop_at(rule, params, {"epochs": np.array([g[0] for g in got]),
                                       "val_loss": np.array([g[1] for g in got]),
                                       "val_acc": np.array([g[2] for g in got])})
    assert replay is not None and final["epoch"] == replay == len(got)
    assert con.sql(f"SELECT status, stop_reason FROM {read % 'runs'}").fetchall() == [("finished", rule)]
    stopper = RuleStopper(rule, params)
    assert [stopper("t", r) for r in session.reports].index(True) == replay - 1


def test_the_spec_names_a_bad_stop_rule():
    from dynstudy.study.spec import SpecError, parse_spec

    base = {"name": "t", "models": ["tiny_cnn"], "datasets": ["digits"], "optimizers": ["sgd"], "seeds": [0]}
    for stop, match in (({"rule": "early", "params": {}}, "not a stopping rule; use one of volatility"),
                        ({"rule": "budget", "params": {}}, "must set exactly epochs; missing epochs"),
                        ({"rule": "budget", "params": {"epochs": 3, "x": 1}}, "unknown x"),
                        ({"rule": "patience_acc", "params": {"patience": 1.5, "min_delta": 0}},
                         "patience=1.5 is invalid: use an integer >= 1")):
        with pytest.raises(SpecError, match=match):
            parse_spec({**base, "train": {"stop": stop}})
