"""The calls into each tracker's client that the live callbacks (:mod:`dynstudy.study.tracker_callbacks`) and the
export of a finished study (:mod:`dynstudy.study.tracker_export`) share, so a run lands in one tracker run either
way: the MLflow run carrying a run's ``dynstudy.run_id`` tag (found, or created with its tags and parameters), the
epochs of a metric an MLflow run already holds, a run's ``wandb.init`` arguments, a run's TensorBoard folder.

The tracker packages are imported inside the functions that use them (each is an optional extra).
"""
from __future__ import annotations

import os
import time

from dynstudy.study.tracker_names import TAG_PREFIX, flat_params, run_tags, wandb_run_id

#: MLflow's HTTP retries and timeout (s) unless the environment sets them: a tracker that is down costs a study
#: seconds, not MLflow's default minutes of retries, before dynstudy goes on without it.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def mlflow_client(tracking_uri: str | None):
    """An ``MlflowClient`` for ``tracking_uri`` (None: ``$MLFLOW_TRACKING_URI`` or MLflow's default), with
    :data:`MLFLOW_HTTP_DEFAULTS` where the environment does not set them."""
    for key, value in MLFLOW_HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def mlflow_experiment(client, name: str) -> str:
    """The id of the MLflow experiment ``name``, created if it does not exist."""
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def find_mlflow_run(client, experiment_id: str, run_id: str, kind: str = "run"):
    """The MLflow run of experiment ``experiment_id`` tagged ``dynstudy.run_id = run_id`` and ``dynstudy.kind =
    kind`` (the oldest, should there be several), or None."""
    found = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_PREFIX}run_id` = '{run_id}' and "
                                                              f"tags.`{TAG_PREFIX}kind` = '{kind}'",
                               order_by=["attributes.start_time ASC"], max_results=1)
    return found[0] if found else None


def retire_mlflow_run(client, experiment_id: str, run_id: str) -> None:
    """Tag the MLflow run of ``run_id`` (if any) ``dynstudy.kind = replaced``: the run trains again from scratch,
    and its new MLflow run takes the old one's place (kept for reference, never found as the run's again)."""
    found = find_mlflow_run(client, experiment_id, run_id)
    if found is not None:
        client.set_tag(found.info.run_id, f"{TAG_PREFIX}kind", "replaced")


def open_mlflow_run(client, experiment_id: str, identity: dict, config: dict) -> tuple[str, bool]:
    """(MLflow run id, created) of a dynstudy run: the run carrying its ``dynstudy.run_id`` tag, else a new one
    named by the run id with :func:`~dynstudy.study.tracker_names.run_tags` and the config as parameters."""
    found = find_mlflow_run(client, experiment_id, identity["run_id"])
    if found is not None:
        return found.info.run_id, False
    run = client.create_run(experiment_id, run_name=identity["run_id"],
                            tags={**run_tags(identity), f"{TAG_PREFIX}kind": "run"})
    log_mlflow_params(client, run.info.run_id, flat_params(config))
    return run.info.run_id, True


def log_mlflow_params(client, mlflow_run_id: str, params: dict[str, str]) -> None:
    """Log ``params`` in batches of MLflow's limit (100 a call)."""
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(mlflow_run_id, params=items[i:i + 100])


def log_mlflow_step(client, mlflow_run_id: str, step: int, values: dict[str, float]) -> None:
    """Log ``values`` as metrics at ``step``, in one call."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(mlflow_run_id, metrics=[Metric(k, v, now, int(step)) for k, v in values.items()])


def mlflow_logged_steps(client, mlflow_run_id: str, key: str) -> set[int]:
    """The steps at which the MLflow run holds metric ``key``."""
    return {m.step for m in client.get_metric_history(mlflow_run_id, key)}


def wandb_init_kwargs(identity: dict, config: dict, project: str, job_type: str = "run") -> dict:
    """``wandb.init`` arguments of a dynstudy run: its W&B id (:func:`~dynstudy.study.tracker_names.wandb_run_id`),
    named by its run id, grouped by its cell, tagged with its seed, its config and identity as the W&B config."""
    return {"id": wandb_run_id(identity["run_id"]), "name": identity["run_id"], "group": identity["cell"],
            "job_type": job_type, "project": project, "tags": [f"seed={identity['seed']}", identity["study"]],
            "config": {**flat_params(config), **{f"{TAG_PREFIX}{k}": v for k, v in identity.items()}}}


def remove_event_files(folder: str) -> int:
    """Remove the TensorBoard event files directly in ``folder``; return how many there were."""
    from pathlib import Path

    found = list(Path(folder).glob("events.out.tfevents.*"))
    for path in found:
        path.unlink()
    return len(found)


def tensorboard_run_dir(logdir: str, identity: dict) -> str:
    """A run's TensorBoard folder: ``<logdir>/<model>/<dataset>/<optimizer>/<run_id>`` (a cell's seeds side by
    side, so TensorBoard's run filter selects a cell by its path)."""
    return os.path.join(logdir, *identity["cell"].split("/"), identity["run_id"])
