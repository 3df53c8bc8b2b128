"""Read back what trackers wrote, with their real clients or file formats: MLflow runs (``MlflowClient``), W&B
offline runs (:mod:`tests.wandb_records`) and TensorBoard event files (TFRecord framing, tensorboardX's protos)."""
from __future__ import annotations

import struct
from pathlib import Path

from tests.wandb_records import offline_run


def mlflow_runs(uri: str, experiment: str) -> dict[str, dict]:
    """dynstudy run id -> {"tags", "params", "history": {metric: {step: value}}, "metrics"} of every MLflow run of
    ``experiment`` tagged dynstudy.kind = run; "count" is how many MLflow runs carry that run id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    out = {}
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        tags = run.data.tags
        if tags.get("dynstudy.kind") != "run":
            continue
        rid = tags["dynstudy.run_id"]
        history = {k: {m.step: m.value for m in client.get_metric_history(run.info.run_id, k)}
                   for k in run.data.metrics}
        out[rid] = {"tags": tags, "params": run.data.params, "history": history, "metrics": run.data.metrics,
                    "count": out.get(rid, {}).get("count", 0) + 1}
    return out


def wandb_offline_runs(wandb_dir: Path) -> dict[str, list[dict]]:
    """W&B run id -> what each of its offline run folders under ``wandb_dir`` holds (:func:`offline_run`)."""
    out: dict[str, list[dict]] = {}
    for path in sorted(Path(wandb_dir).glob("wandb/offline-run-*/run-*.wandb")):
        run = offline_run(path)
        out.setdefault(run["run"]["id"], []).append(run)
    return out


def scalar_events(folder: Path) -> list[tuple[str, int, float]]:
    """(tag, step, value) of every scalar in the TensorBoard event files directly in ``folder``: each file is
    TFRecords (length, its CRC, an ``Event`` message, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    out = []
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event()
            event.ParseFromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            out += [(v.tag, event.step, v.simple_value) for v in event.summary.value if v.HasField("simple_value")]
    return out


def event_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of :func:`scalar_events`."""
    out: dict[str, dict[int, float]] = {}
    for tag, step, value in scalar_events(folder):
        out.setdefault(tag, {})[step] = value
    return out
