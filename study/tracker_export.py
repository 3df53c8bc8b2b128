"""``dynstudy export``: a finished study's per-epoch metrics, run summaries and cell variability sent to MLflow,
W&B or TensorBoard after the fact, so a study run without trackers can be browsed there.

Each run lands in the tracker run its live logging would have used (:mod:`dynstudy.study.tracker_clients`), with
the names of :mod:`dynstudy.study.tracker_names`, plus what ``dynstudy analyze`` adds: per epoch the analysis'
``analysis/h_eff``, ``analysis/metastability``, ``analysis/psi`` and ``analysis/volatility`` (capture_metrics of the
end-of-epoch captures: Psi z-scored over the whole run, unlike the online ``psi``), the run's ``summary/<column>``
(run_summary's numbers; its texts as tags), and per cell one tracker run of ``cell/<metric>/<statistic>``
(cell_variability). A second export sends nothing twice: MLflow values a run already holds at a step are left out;
a W&B run that exists is left alone; TensorBoard files of an earlier export are replaced. Needs only the tracker's
client: no torch, no ray.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from dynstudy.analysis.pipeline.catalog import open_catalog
from dynstudy.study.tracker_clients import (
    find_mlflow_run,
    log_mlflow_step,
    mlflow_client,
    mlflow_experiment,
    mlflow_logged_steps,
    open_mlflow_run,
    tensorboard_run_dir,
    wandb_init_kwargs,
)
from dynstudy.study.tracker_names import (
    EPOCH_METRICS,
    EXPORT_TARGETS,
    TAG_PREFIX,
    cell_name,
    epoch_values,
    run_identity,
)

#: capture_metrics columns sent per epoch as ``analysis/<name>``.
ANALYSIS_METRICS = ("h_eff", "metastability", "psi", "volatility")
#: cell_variability columns sent per cell and metric as ``cell/<metric>/<column>``.
CELL_STATS = ("n_seeds", "mean", "std", "cv", "ci_low", "ci_high", "state_agreement", "n_runs")
#: The file name ending of the TensorBoard event files an export writes (an export replaces its own).
EXPORT_SUFFIX = ".dynstudy-export"


@dataclass
class ExportRun:
    """One run as it is exported: identity, trial config, epoch -> values, summary numbers and texts."""

    identity: dict
    config: dict
    epochs: dict[int, dict[str, float]] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)
    summary_text: dict[str, str] = field(default_factory=dict)


@dataclass
class ExportCell:
    """One cell as it is exported: its study, name and ``cell/<metric>/<statistic>`` values, modal states."""

    study: str
    name: str
    values: dict[str, float] = field(default_factory=dict)
    text: dict[str, str] = field(default_factory=dict)


def _rows(con, sql: str) -> list[dict]:
    rel = con.sql(sql)
    return [dict(zip(rel.columns, row)) for row in rel.fetchall()]


def _numbers(row: dict, names, prefix: str = "") -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in row.items()
            if k in names and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def read_study(store: str) -> tuple[list[ExportRun], list[ExportCell]]:
    """The store's runs (each with its epochs, analysis and summary) and cells; FileNotFoundError if it has none."""
    con = open_catalog(store, tables=("runs", "train_metrics", "capture_metrics", "run_summary", "cell_variability"))
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    if "runs" not in views:
        raise FileNotFoundError(f"store {store!r} has no runs; run a study first (dynstudy run)")
    runs = {}
    for row in _rows(con, "SELECT run_id, study, model, dataset, optimizer, seed, config FROM runs ORDER BY run_id"):
        runs[row["run_id"]] = ExportRun(run_identity(row), json.loads(row["config"]))
    for row in _rows(con, "SELECT * FROM train_metrics ORDER BY run_id, epoch") if "train_metrics" in views else []:
        if row["run_id"] in runs:
            runs[row["run_id"]].epochs.setdefault(int(row["epoch"]), {}).update(epoch_values(row, EPOCH_METRICS))
    if "capture_metrics" in views:
        for row in _rows(con, "SELECT * FROM capture_metrics WHERE kind = 'epoch' ORDER BY run_id, epoch"):
            if row["run_id"] in runs:
                runs[row["run_id"]].epochs.setdefault(int(row["epoch"]), {}).update(
                    _numbers(row, ANALYSIS_METRICS, "analysis/"))
    if "run_summary" in views:
        for row in _rows(con, "SELECT * FROM run_summary"):
            run = runs.get(row.pop("run_id"))
            if run is not None:
                run.summary = _numbers(row, [k for k in row if k != "seed"], "summary/")
                run.summary_text = {k: v for k, v in row.items() if isinstance(v, str) and k not in
                                    ("study", "model", "dataset", "optimizer", "input_digest")}
    cells = {}
    studies = {(r.identity["model"], r.identity["dataset"], r.identity["optimizer"]): r.identity["study"]
               for r in runs.values()}
    for row in _rows(con, "SELECT * FROM cell_variability ORDER BY ALL") if "cell_variability" in views else []:
        key = (row["model"], row["dataset"], row["optimizer"])
        if key not in studies:
            continue
        cell = cells.setdefault(key, ExportCell(studies[key], cell_name(*key)))
        cell.values.update(_numbers(row, CELL_STATS, f"cell/{row['metric']}/"))
        if row.get("modal_state"):
            cell.text[f"cell.{row['metric']}.modal_state"] = row["modal_state"]
    return list(runs.values()), list(cells.values())


def export_mlflow(runs: list[ExportRun], cells: list[ExportCell], uri: str | None, experiment: str | None) -> dict:
    """Send to MLflow (experiment: ``experiment``, else each run's study); return counts of runs created and
    values sent."""
    client = mlflow_client(uri)
    created = sent = 0
    experiments: dict[str, str] = {}
    for run in runs:
        name = experiment or run.identity["study"]
        exp = experiments.setdefault(name, mlflow_experiment(client, name))
        ml_run, new = open_mlflow_run(client, exp, run.identity, run.config)
        created += new
        held = {} if new else client.get_run(ml_run).data.metrics
        steps = {k: mlflow_logged_steps(client, ml_run, k) for k in held}
        for epoch, values in sorted(run.epochs.items()):
            todo = {k: v for k, v in values.items() if epoch not in steps.get(k, ())}
            if todo:
                log_mlflow_step(client, ml_run, epoch, todo)
                sent += len(todo)
        todo = {k: v for k, v in run.summary.items() if held.get(k) != v}
        if todo:
            log_mlflow_step(client, ml_run, 0, todo)
            sent += len(todo)
        for k, v in run.summary_text.items():
            client.set_tag(ml_run, f"{TAG_PREFIX}summary.{k}", v)
    for cell in cells:
        name = experiment or cell.study
        exp = experiments.setdefault(name, mlflow_experiment(client, name))
        found = find_mlflow_run(client, exp, cell.name, kind="cell")
        if found is None:
            found = client.create_run(exp, run_name=f"cell {cell.name}", tags={
                f"{TAG_PREFIX}run_id": cell.name, f"{TAG_PREFIX}kind": "cell", f"{TAG_PREFIX}cell": cell.name,
                f"{TAG_PREFIX}study": cell.study})
            created += 1
        held = found.data.metrics
        todo = {k: v for k, v in cell.values.items() if held.get(k) != v}
        if todo:
            log_mlflow_step(client, found.info.run_id, 0, todo)
            sent += len(todo)
        for k, v in cell.text.items():
            client.set_tag(found.info.run_id, f"{TAG_PREFIX}{k}", v)
    return {"created": created, "sent": sent}


def _wandb_exists(wandb, kwargs: dict, wandb_dir: str) -> bool:
    """Whether the W&B run of ``kwargs['id']`` exists: an offline run folder of that id under ``wandb_dir``, or
    (online) a run the W&B API finds."""
    if kwargs.get("mode") in ("offline", "disabled"):
        return any(Path(wandb_dir, "wandb").glob(f"offline-run-*-{kwargs['id']}"))
    try:
        wandb.Api().run(f"{kwargs.get('entity') or wandb.Api().default_entity}/{kwargs['project']}/{kwargs['id']}")
    except (wandb.errors.CommError, ValueError):  # no such run
        return False
    return True


def export_wandb(runs: list[ExportRun], cells: list[ExportCell], project: str | None, wandb_dir: str | None) -> dict:
    """Send to W&B (project: ``project``, else each run's study; mode: $WANDB_MODE; folder: ``wandb_dir``, else
    $WANDB_DIR, else the working directory); a run that exists is left alone. Return counts of runs created and
    left alone."""
    import wandb

    mode = os.environ.get("WANDB_MODE")
    wandb_dir = wandb_dir or os.environ.get("WANDB_DIR") or os.getcwd()
    created = kept = 0
    items = [(r.identity, r.config, "run", r.epochs, {**r.summary, **r.summary_text}) for r in runs]
    items += [({"run_id": f"cell-{c.name}", "study": c.study, "cell": c.name, "seed": "all"}, {}, "cell", {},
               {**c.values, **c.text}) for c in cells]
    for identity, config, job_type, epochs, summary in items:
        kwargs = {**wandb_init_kwargs(identity, config, project or identity["study"], job_type),
                  "dir": wandb_dir, **({"mode": mode} if mode else {})}
        if _wandb_exists(wandb, kwargs, wandb_dir):
            kept += 1
            continue
        run = wandb.init(**kwargs)
        for epoch, values in sorted(epochs.items()):
            run.log(values, step=epoch)
        run.summary.update(summary)
        run.finish()
        created += 1
    return {"created": created, "kept": kept}


def export_tensorboard(runs: list[ExportRun], cells: list[ExportCell], logdir: str | None, store: str) -> dict:
    """Write event files under ``logdir`` (default: ``<store>/_tensorboard/<study>``, where live logging writes),
    replacing an earlier export's; the train metrics of a run whose folder holds live event files are not written
    again. Return counts of runs written and files replaced."""
    from tensorboardX import SummaryWriter

    written = replaced = 0
    for run in runs:
        folder = tensorboard_run_dir(logdir or f"{store.rstrip('/')}/_tensorboard/{run.identity['study']}",
                                     run.identity)
        old = list(Path(folder).glob(f"events.out.tfevents.*{EXPORT_SUFFIX}"))
        live = [p for p in Path(folder).glob("events.out.tfevents.*") if p not in old]
        for path in old:
            path.unlink()
        replaced += len(old)
        with SummaryWriter(folder, filename_suffix=EXPORT_SUFFIX) as writer:
            for epoch, values in sorted(run.epochs.items()):
                for name, value in values.items():
                    if not (live and name in EPOCH_METRICS):
                        writer.add_scalar(name, value, global_step=epoch)
            for name, value in run.summary.items():
                writer.add_scalar(name, value, global_step=0)
            for name, value in run.summary_text.items():
                writer.add_text(f"summary/{name}", value, global_step=0)
        written += 1
    for cell in cells:
        folder = os.path.join(logdir or f"{store.rstrip('/')}/_tensorboard/{cell.study}", *cell.name.split("/"),
                              "_cell")
        for path in Path(folder).glob(f"events.out.tfevents.*{EXPORT_SUFFIX}"):
            path.unlink()
            replaced += 1
        with SummaryWriter(folder, filename_suffix=EXPORT_SUFFIX) as writer:
            for name, value in cell.values.items():
                writer.add_scalar(name, value, global_step=0)
    return {"written": written, "replaced": replaced}


def export_store(store: str, to: str, uri: str | None = None, project: str | None = None) -> dict:
    """Export ``store`` to tracker ``to``; return what was done, by count.

    Parameters
    ----------
    store : the store (a directory, or s3:// / gs://).
    to : one of :data:`~dynstudy.study.tracker_names.EXPORT_TARGETS`.
    uri : MLflow: the tracking URI (default ``$MLFLOW_TRACKING_URI``); W&B: the folder it writes into (default
        ``$WANDB_DIR``, else the working directory; the mode is ``$WANDB_MODE``); TensorBoard: the log folder
        (default ``<store>/_tensorboard/<study>``).
    project : MLflow experiment or W&B project (default: each run's study).
    """
    if to not in EXPORT_TARGETS:
        raise ValueError(f"--to {to!r}: use one of {', '.join(EXPORT_TARGETS)}")
    runs, cells = read_study(store)
    if to == "tensorboard" and "://" in (uri or store):
        raise ValueError("TensorBoard event files are written locally: give --uri, a local folder")
    try:
        if to == "mlflow":
            counts = export_mlflow(runs, cells, uri, project)
        elif to == "wandb":
            counts = export_wandb(runs, cells, project, uri)
        else:
            counts = export_tensorboard(runs, cells, uri, store)
    except OSError:
        raise
    except Exception as err:  # the tracker's own errors (MlflowException, wandb's CommError, ...)
        hint = {"mlflow": "check --uri or $MLFLOW_TRACKING_URI; the next export sends only what MLflow lacks",
                "wandb": "check $WANDB_MODE, $WANDB_API_KEY and --uri or $WANDB_DIR; the next export leaves a run "
                         "W&B already has alone (delete a half-sent one there first)",
                "tensorboard": "check --uri; the next export replaces its files"}[to]
        raise ConnectionError(f"{to} refused the export ({type(err).__name__}: {' '.join(str(err).split())[:500]}); "
                              f"{hint}") from err
    return {"runs": len(runs), "cells": len(cells), **counts}
