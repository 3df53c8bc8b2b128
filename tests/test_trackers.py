"""Experiment trackers, live: a tiny study with ``tracking:`` logs to MLflow's local file store, W&B offline and
TensorBoard, and what each holds, read back with its own client or file format, equals the store's train_metrics.
A tracker that cannot be reached leaves the study finished and its store complete. One Ray instance serves both."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from dynstudy.analysis.pipeline.catalog import open_catalog
from dynstudy.study.cli import main
from dynstudy.study.spec import SpecError, parse_spec
from dynstudy.study.tracker_clients import tensorboard_run_dir
from dynstudy.study.tracker_export import export_store
from dynstudy.study.tracker_names import EPOCH_METRICS, run_identity, wandb_run_id
from dynstudy.study.tracking_spec import TrackingSpec, check_tracker_packages
from tests.tracker_files import event_scalars, mlflow_runs, scalar_events, wandb_offline_runs

EPOCHS, SEEDS = 3, [0, 1]


def tiny_spec(name: str, tracking: dict, seeds=SEEDS, epochs=EPOCHS) -> dict:
    return {"name": name, "models": ["tiny_cnn"], "datasets": [{"name": "digits", "n_train": 256, "n_val": 128}],
            "optimizers": [{"name": "sgd", "lr": 0.05}], "seeds": seeds,
            "train": {"epochs": epochs, "batch_size": 64, "early_stopping_patience": None},
            "capture": {"probe_size": 64, "channels_per_stage": 8}, "analysis": {"min_scale": 4, "n_scales": 4},
            "resources": {"cpus_per_trial": 1, "max_failures": 0}, "tracking": tracking}


def train_metrics(store) -> dict[str, dict[int, dict]]:
    """run_id -> epoch -> the store's train_metrics row."""
    con = open_catalog(str(store), tables=("train_metrics",))
    rel = con.sql("SELECT * FROM train_metrics")
    out: dict[str, dict[int, dict]] = {}
    for r in (dict(zip(rel.columns, row)) for row in rel.fetchall()):
        out.setdefault(r["run_id"], {})[r["epoch"]] = r
    return out


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One tiny study logged to the three trackers, and one whose MLflow server cannot be reached."""
    import ray

    from dynstudy.study.orchestrate import run_study

    root = tmp_path_factory.mktemp("trackers")
    env = {"MLFLOW_ALLOW_FILE_STORE": "true", "WANDB_DIR": str(root / "wandb"), "WANDB_SILENT": "true",
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    (root / "wandb").mkdir()
    uri = f"file://{root / 'mlruns'}"
    tracking = {"mlflow": {"tracking_uri": uri, "experiment": "trk"}, "wandb": {"project": "trk", "mode": "offline"},
                "tensorboard": {"logdir": str(root / "tb")}}
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        out = io.StringIO()
        summary = run_study(parse_spec(tiny_spec("trk", tracking)), store=str(root / "store"), out=out)
        broken_out = io.StringIO()
        broken = run_study(parse_spec(tiny_spec("broken", {"mlflow": {"tracking_uri": "http://127.0.0.1:9"}},
                                                seeds=[0], epochs=2)), store=str(root / "broken"), out=broken_out)
    finally:
        if started:
            ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    yield {"root": root, "uri": uri, "summary": summary, "out": out.getvalue(), "broken": broken,
           "broken_out": broken_out.getvalue(), "store": root / "store"}


@pytest.mark.slow
def test_mlflow_holds_the_stores_epochs_grouped_by_cell_and_seed(tracked):
    assert tracked["summary"]["finished"] == len(SEEDS), tracked["out"]
    assert "tracking." not in tracked["out"]  # no tracker failed
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    runs = mlflow_runs(tracked["uri"], "trk")
    store = train_metrics(tracked["store"])
    assert set(runs) == set(store)
    assert sorted(r["tags"]["dynstudy.seed"] for r in runs.values()) == [str(s) for s in SEEDS]
    for run_id, epochs in store.items():
        run = runs[run_id]
        assert run["count"] == 1
        assert run["tags"]["dynstudy.cell"] == "tiny_cnn/digits/sgd"
        assert run["params"]["model"] == "tiny_cnn" and run["params"]["train.epochs"] == str(EPOCHS)
        for name in EPOCH_METRICS:
            assert run["history"][name] == {e: row[name] for e, row in epochs.items()}, name
        assert set(run["history"]["h_eff"]) <= set(epochs) and set(run["history"]["metastability"])
        assert all(0 <= v <= 1 for v in run["history"]["h_eff"].values())


@pytest.mark.slow
def test_wandb_offline_runs_hold_the_stores_epochs(tracked):
    runs = wandb_offline_runs(tracked["root"] / "wandb")
    store = train_metrics(tracked["store"])
    assert set(runs) == {wandb_run_id(r) for r in store}
    for run_id, epochs in store.items():
        (run,) = runs[wandb_run_id(run_id)]
        assert run["run"]["group"] == "tiny_cnn/digits/sgd" and run["run"]["name"] == run_id
        assert f"seed={run['config']['dynstudy.seed']}" in run["run"]["tags"]
        assert sorted(run["history"]) == sorted(epochs)
        for epoch, row in epochs.items():
            assert {k: run["history"][epoch][k] for k in EPOCH_METRICS} == {k: row[k] for k in EPOCH_METRICS}


@pytest.mark.slow
def test_tensorboard_event_files_hold_the_stores_epochs(tracked):
    store = train_metrics(tracked["store"])
    con = open_catalog(str(tracked["store"]), tables=("runs",))
    for run_id, study, model, dataset, optimizer, seed in con.execute(
            "SELECT run_id, study, model, dataset, optimizer, seed FROM runs").fetchall():
        identity = run_identity({"run_id": run_id, "study": study, "model": model, "dataset": dataset,
                                 "optimizer": optimizer, "seed": seed})
        scalars = event_scalars(tensorboard_run_dir(str(tracked["root"] / "tb"), identity))
        for name in EPOCH_METRICS:  # TensorBoard keeps float32
            assert scalars[name] == pytest.approx({e: r[name] for e, r in store[run_id].items()}, rel=1e-6)


@pytest.mark.slow
def test_an_unreachable_tracker_leaves_the_study_finished_and_its_store_complete(tracked):
    assert tracked["broken"]["finished"] == 1 and not tracked["broken"]["unfinished"], tracked["broken_out"]
    said = [line for line in tracked["broken_out"].splitlines() if line.startswith("tracking.mlflow")]
    assert len(said) == 1 and "goes on without mlflow" in said[0]
    (epochs,) = train_metrics(tracked["root"] / "broken").values()
    assert sorted(epochs) == [1, 2]


def test_tracking_section_errors_name_the_field():
    base = tiny_spec("x", {})
    with pytest.raises(SpecError, match=r"tracking\.wandb\.mode: Input should be 'online', 'offline'"):
        parse_spec({**base, "tracking": {"wandb": {"mode": "off"}}})
    with pytest.raises(SpecError, match=r"tracking\.tensorboard\.dir: unknown field"):
        parse_spec({**base, "tracking": {"tensorboard": {"dir": "tb"}}})
    with pytest.raises(SpecError, match=r"tracking: tracking maps trackers to their settings"):
        parse_spec({**base, "tracking": "mlflow"})
    with pytest.raises(SpecError, match=r"tracking\.mlflw: unknown field"):
        parse_spec({**base, "tracking": {"mlflw": {}}})
    with pytest.raises(SpecError, match=r"tracking\.tensorboard: use true, false or \{logdir: PATH\}"):
        parse_spec({**base, "tracking": {"tensorboard": "yes"}})
    assert parse_spec({**base, "tracking": {"tensorboard": True, "mlflow": {}}}).tracking.enabled == [
        "mlflow", "tensorboard"]


def test_a_missing_tracker_package_names_its_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "aim" else real(name, *a))
    with pytest.raises(ValueError, match=r"tracking\.aim needs the aim package.*pip install 'dynstudy\[aim\]'"):
        check_tracker_packages(TrackingSpec(aim={}, mlflow={}), "store")
    with pytest.raises(ValueError, match="tracking.tensorboard.logdir"):
        check_tracker_packages(TrackingSpec(tensorboard=True), "s3://bucket/store")


def test_dynstudy_run_names_a_missing_tracker_package_before_training(tmp_path, monkeypatch):
    import importlib.util

    import ray

    from dynstudy.study.orchestrate import run_study

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ValueError, match=r"tracking\.wandb needs the wandb package.*dynstudy\[wandb\]"):
        run_study(parse_spec(tiny_spec("x", {"wandb": {"mode": "offline"}})), store=str(tmp_path / "s"),
                  out=io.StringIO())
    assert not ray.is_initialized() and not (tmp_path / "s").exists()


# ---------------------------------------------------------------------------------------------- dynstudy export


@pytest.fixture(scope="module")
def analysed(tracked):
    """The tracked study's store, analysed (run_summary, capture_metrics, cell_variability)."""
    from dynstudy.analysis.pipeline.analyze import analyze

    result = analyze(str(tracked["store"]), out=io.StringIO())
    assert result["analysed"] == len(SEEDS) and not result["failed"]
    return tracked["store"]


def table(store, sql: str, tables) -> list[dict]:
    rel = open_catalog(str(store), tables=tables).sql(sql)
    return [dict(zip(rel.columns, row)) for row in rel.fetchall()]


@pytest.mark.slow
def test_export_to_mlflow_sends_each_value_once(analysed, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file://{tmp_path / 'mlruns'}"
    assert main(["export", "--store", str(analysed), "--to", "mlflow", "--uri", uri]) == 0
    first = capsys.readouterr().out
    assert main(["export", "--store", str(analysed), "--to", "mlflow", "--uri", uri]) == 0
    assert "created 0, sent 0" in capsys.readouterr().out, first
    runs, store = mlflow_runs(uri, "trk"), train_metrics(analysed)
    summaries = {r["run_id"]: r for r in table(analysed, "SELECT * FROM run_summary", ("run_summary",))}
    epochs = table(analysed, "SELECT run_id, epoch, psi FROM capture_metrics WHERE kind = 'epoch'",
                   ("capture_metrics",))
    for run_id, rows in store.items():
        run = runs[run_id]
        assert run["count"] == 1 and run["tags"]["dynstudy.summary.state"] == summaries[run_id]["state"]
        for name in EPOCH_METRICS:
            assert run["history"][name] == {e: row[name] for e, row in rows.items()}
        assert run["metrics"]["summary/h_raw_mean"] == summaries[run_id]["h_raw_mean"]
        assert run["history"].get("analysis/psi", {}) == {r["epoch"]: r["psi"] for r in epochs
                                                          if r["run_id"] == run_id and r["psi"] is not None}
    cv = table(analysed, "SELECT metric, mean FROM cell_variability WHERE isfinite(mean)", ("cell_variability",))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    (cell,) = client.search_runs([client.get_experiment_by_name("trk").experiment_id], "tags.`dynstudy.kind` = 'cell'")
    assert cv and all(cell.data.metrics[f"cell/{r['metric']}/mean"] == r["mean"] for r in cv)


@pytest.mark.slow
def test_export_into_the_live_mlflow_runs_adds_only_the_analysis(analysed, tracked, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert main(["export", "--store", str(analysed), "--to", "mlflow", "--uri", tracked["uri"]]) == 0
    assert "created 1," in capsys.readouterr().out  # the cell's run; each run is the one live logging made
    runs, store = mlflow_runs(tracked["uri"], "trk"), train_metrics(analysed)
    for run_id, rows in store.items():
        assert runs[run_id]["count"] == 1 and "summary/state_agreement" not in runs[run_id]["metrics"]
        for name in EPOCH_METRICS:  # one value per epoch: nothing sent twice
            assert runs[run_id]["history"][name] == {e: row[name] for e, row in rows.items()}
        assert "summary/h_raw_mean" in runs[run_id]["metrics"]


@pytest.mark.slow
def test_export_to_wandb_offline_and_tensorboard_twice(analysed, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for _ in range(2):
        assert main(["export", "--store", str(analysed), "--to", "wandb", "--uri", str(tmp_path)]) == 0
        assert main(["export", "--store", str(analysed), "--to", "tensorboard", "--uri", str(tmp_path / "tb")]) == 0
    out = capsys.readouterr().out
    assert f"created 0, kept {len(SEEDS) + 1}" in out and "replaced 3" in out, out
    runs, store = wandb_offline_runs(tmp_path), train_metrics(analysed)
    summaries = {r["run_id"]: r for r in table(analysed, "SELECT * FROM run_summary", ("run_summary",))}
    for run_id, rows in store.items():
        (run,) = runs[wandb_run_id(run_id)]
        assert run["run"]["group"] == "tiny_cnn/digits/sgd"
        assert {e: {k: h[k] for k in EPOCH_METRICS} for e, h in run["history"].items()} == {
            e: {k: r[k] for k in EPOCH_METRICS} for e, r in rows.items()}
        assert run["summary"]["summary/h_raw_mean"] == summaries[run_id]["h_raw_mean"]
        assert run["summary"]["state"] == summaries[run_id]["state"]
        ident = run_identity({**summaries[run_id], "run_id": run_id})
        scalars = event_scalars(tensorboard_run_dir(str(tmp_path / "tb"), ident))
        assert scalars["val_acc"] == pytest.approx({e: r["val_acc"] for e, r in rows.items()}, rel=1e-6)
    (cell,) = [r for rs in runs.values() for r in rs if r["run"]["job_type"] == "cell"]
    assert cell["run"]["group"] == "tiny_cnn/digits/sgd"


@pytest.mark.slow
def test_export_into_live_tensorboard_files_adds_only_the_analysis(analysed, tracked, capsys):
    logdir = str(tracked["root"] / "tb")
    for _ in range(2):
        assert main(["export", "--store", str(analysed), "--to", "tensorboard", "--uri", logdir]) == 0
    store = train_metrics(analysed)
    for run_id, summary in {r["run_id"]: r for r in table(analysed, "SELECT * FROM run_summary",
                                                          ("run_summary",))}.items():
        events = scalar_events(tensorboard_run_dir(logdir, run_identity({**summary, "run_id": run_id})))
        assert sorted(s for t, s, _ in events if t == "val_acc") == sorted(store[run_id])  # live, once each
        assert [v for t, _, v in events if t == "summary/h_raw_mean"] == [pytest.approx(summary["h_raw_mean"])]


@pytest.mark.slow
def test_export_to_an_unreachable_tracker_is_one_line(analysed, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    assert main(["export", "--store", str(analysed), "--to", "mlflow", "--uri", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dynstudy export: ConnectionError: mlflow refused the export (") and err.count("\n") == 1
    assert "check --uri or $MLFLOW_TRACKING_URI" in err


@pytest.mark.slow
def test_export_imports_neither_torch_nor_ray(analysed, tmp_path):
    code = ("import sys; from dynstudy.study.cli import main; "
            f"rc = main(['export', '--store', {str(analysed)!r}, '--to', 'mlflow', '--uri', "
            f"{'file://' + str(tmp_path / 'm')!r}]); "
            "print(rc, sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"})
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stderr[-2000:]


def test_export_refuses_an_unknown_target_and_an_empty_store(tmp_path, capsys):
    with pytest.raises(ValueError, match="--to 'comet'"):
        export_store(str(tmp_path), "comet")
    assert main(["export", "--store", str(tmp_path), "--to", "mlflow"]) == 2
    assert "dynstudy export: store" in capsys.readouterr().err
    assert main(["export", "--store", str(tmp_path / "none"), "--to", "wandb"]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------- the callbacks without a study


class FakeTrial:
    """What the tracker callbacks read of a Tune trial: its config."""

    def __init__(self, run_id: str, resume: bool):
        self.config = {"trial": {"run_id": run_id, "study": "unit", "model": "tiny_cnn",
                                 "dataset": {"name": "digits"}, "optimizer": {"name": "sgd", "label": "sgd"},
                                 "seed": 3, "train": {"epochs": 3}},
                       "resume_from": {run_id: "ckpt"} if resume else {}}


def test_mlflow_callback_resumes_continues_and_replaces_a_run(tmp_path, monkeypatch):
    from dynstudy.study.tracker_callbacks import MLflowTracker

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file://{tmp_path / 'mlruns'}"

    def train(trial, epochs, offset=0.0):
        cb = MLflowTracker(uri, "unit")
        cb.setup()
        cb.log_trial_start(trial)
        for e in epochs:
            cb.log_trial_result(e, trial, {"epoch": e, "val_loss": e + offset, "h_eff": None})
        cb.log_trial_result(9, trial, {"epoch": epochs[-1], "val_loss": -1.0, "last": True})  # a repeat
        cb.log_trial_end(trial)

    train(FakeTrial("r1", resume=False), [1, 2])
    train(FakeTrial("r1", resume=True), [2, 3], offset=0.5)  # --resume from epoch 1's checkpoint
    (run,) = mlflow_runs(uri, "unit").values()
    assert run["history"] == {"val_loss": {1: 1.0, 2: 2.0, 3: 3.5}} and run["tags"]["dynstudy.seed"] == "3"
    train(FakeTrial("r1", resume=False), [1], offset=0.25)  # trained again from scratch
    (run,) = mlflow_runs(uri, "unit").values()
    assert run["history"] == {"val_loss": {1: 1.25}}


def test_a_failing_tracker_is_said_once_and_left_out(capsys):
    from dynstudy.study.tracker_callbacks import MLflowTracker, guarded

    def down(*args):
        raise RuntimeError("down")

    cb = guarded(MLflowTracker, sys.stdout, "http://127.0.0.1:9", "unit")
    cb.log_trial_result = down
    for epoch in (1, 2):
        assert cb.on_trial_result(iteration=epoch, trials=[], trial=FakeTrial("r", False),
                                  result={"epoch": epoch}) is None
    said = capsys.readouterr().out.splitlines()
    assert len(said) == 1 and said[0].startswith("tracking.mlflow: RuntimeError: down; the study goes on")
