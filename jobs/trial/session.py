"""Where a trial's checkpoints live: Ray Tune's checkpoint API, or a folder.

A session offers two calls to :class:`dynstudy.jobs.trial.trainer.Trial`:
``restore()`` returns the last saved checkpoint (or None on a fresh start) and
``report(metrics, state)`` records an epoch's metrics with its checkpoint, the
dict :meth:`~dynstudy.jobs.trial.trainer.Trial.state_dict` makes (None: no checkpoint).
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import torch

from dynstudy.jobs.trial.checkpoint_file import STATE_FILE
from dynstudy.store_contract.files import filesystem


class TuneSession:
    """Checkpoints through ``ray.tune``: ``tune.report`` / ``tune.get_checkpoint``.

    Ray Tune persists each reported checkpoint to the run's storage (local or
    s3/gs) and hands the latest back when it retries a failed trial.

    Parameters
    ----------
    resume_from : a checkpoint file (local path or s3:// / gs:// URI) an earlier study invocation left for this run
        (:func:`dynstudy.study.checkpoints.keep_for_resume`), restored while Tune holds none of its own.
    """

    def __init__(self, resume_from: str | None = None):
        self.resume_from = resume_from

    def restore(self):
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                return torch.load(Path(folder) / STATE_FILE, weights_only=False)
        if self.resume_from is None:
            return None
        fs, inner = filesystem(self.resume_from)
        with fs.open_input_stream(inner) as fh:
            return torch.load(io.BytesIO(fh.read()), weights_only=False)

    def report(self, metrics: dict, state) -> None:
        from ray import tune

        if state is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            torch.save(state, Path(folder) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


class LocalSession:
    """Checkpoints in a local folder, for running a trial without Ray.

    Parameters
    ----------
    folder : path where ``state.pt`` is written (atomically) after each epoch.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.reports: list[dict] = []

    def restore(self):
        path = self.folder / STATE_FILE
        return torch.load(path, weights_only=False) if path.exists() else None

    def report(self, metrics: dict, state) -> None:
        self.reports.append(dict(metrics))
        if state is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{STATE_FILE}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.folder / STATE_FILE)


def tune_trainable(config: dict) -> None:
    """The function Ray Tune runs for each trial: ``config["trial"]`` is the run (trained by the built-in trainer,
    or by the user's ``train.function``), ``config["resume_from"]`` maps run ids to the checkpoint files they
    continue from."""
    trial = config["trial"]
    session = TuneSession((config.get("resume_from") or {}).get(trial["run_id"]))
    if trial["train"].get("function"):  # the user's own training function
        from dynstudy.jobs.trial.user_function import run_function_trial

        run_function_trial(trial, session)
        return
    from dynstudy.jobs.trial.trainer import run_trial

    run_trial(trial, session)
