"""Ray Tune's own logger callbacks for the trackers a spec's ``tracking`` section turns on, guarded.

Each tracker class here is Ray's callback (``MLflowLoggerCallback``, ``WandbLoggerCallback``, ``AimLoggerCallback``,
``TBXLoggerCallback``) sending what :mod:`dynstudy.study.tracker_names` names: per epoch (the step) the run's
losses, accuracies, lr and online dynamics, the run named by its run id and tagged with its cell and seed, its
trial config as parameters. An epoch is sent once: a repeat (the final report of a diverged run, an epoch an
earlier invocation sent before ``--resume``) is left out; a run that trains again from scratch (``--replace``, or
an unfinished run without ``--resume``) replaces its MLflow run and TensorBoard files (W&B resumes the run of its
id, and keeps the steps it holds). :func:`tracker_callbacks` wraps each in :class:`Guarded`: the first error a
tracker raises is printed once and the tracker is left out from then on, so a tracker that is down never stops
training nor touches the store. Imports ray (only where a study is trained).
"""
from __future__ import annotations

import os

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback
from ray.tune.logger import TBXLoggerCallback
from ray.tune.logger.aim import AimLoggerCallback

from dynstudy.study.tracker_clients import (
    log_mlflow_step,
    mlflow_client,
    mlflow_experiment,
    mlflow_logged_steps,
    open_mlflow_run,
    remove_event_files,
    retire_mlflow_run,
    tensorboard_run_dir,
    wandb_init_kwargs,
)
from dynstudy.study.tracker_names import EXPORT_TARGETS, epoch_values, flat_params, run_identity
from dynstudy.study.tracking_spec import TrackingSpec

#: The metric whose logged steps tell the epochs an MLflow run already holds.
STEP_METRIC = "val_loss"


def trial_identity(trial) -> tuple[dict, dict]:
    """(identity, trial config) of a Tune trial of a study (its config's ``trial``)."""
    config = trial.config["trial"]
    return run_identity(config), config


def continues(trial) -> bool:
    """Whether the trial continues its run from a checkpoint an earlier invocation kept (``--resume``); else the
    run trains from scratch and replaces what the trackers hold of it."""
    return trial.config["trial"]["run_id"] in (trial.config.get("resume_from") or {})


class EpochOnce:
    """The last epoch sent per trial; :meth:`fresh` says whether a result holds an epoch not sent yet."""

    def __init__(self):
        self.sent: dict = {}

    def fresh(self, trial, result: dict) -> bool:
        epoch = result.get("epoch")
        if not isinstance(epoch, int) or epoch <= self.sent.get(trial, 0):
            return False
        self.sent[trial] = epoch
        return True


class MLflowTracker(MLflowLoggerCallback):
    """Each run one MLflow run, found again by its ``dynstudy.run_id`` tag on a retry or ``--resume``."""

    tracker = "mlflow"

    def __init__(self, tracking_uri: str | None, experiment: str):
        super().__init__(tracking_uri, experiment_name=experiment)
        self.epochs = EpochOnce()

    def setup(self, *args, **kwargs):
        self.client = mlflow_client(self.tracking_uri)
        self.experiment_id = mlflow_experiment(self.client, self.experiment_name)
        self._trial_runs = {}

    def log_trial_start(self, trial):
        if trial in self._trial_runs:
            return
        identity, config = trial_identity(trial)
        if not continues(trial):
            retire_mlflow_run(self.client, self.experiment_id, identity["run_id"])
        run, created = open_mlflow_run(self.client, self.experiment_id, identity, config)
        self._trial_runs[trial] = run
        if not created:
            self.epochs.sent[trial] = max(mlflow_logged_steps(self.client, run, STEP_METRIC), default=0)

    def log_trial_result(self, iteration, trial, result):
        if trial not in self._trial_runs:
            self.log_trial_start(trial)
        if self.epochs.fresh(trial, result):
            log_mlflow_step(self.client, self._trial_runs[trial], result["epoch"], epoch_values(result))

    def log_trial_end(self, trial, failed: bool = False):
        if trial in self._trial_runs:
            self.client.set_terminated(self._trial_runs.pop(trial), "FAILED" if failed else "FINISHED")


class FlushingWandbActor(WandbLoggerCallback._logger_actor_cls):
    """Ray's W&B logging actor, which also waits for W&B's service to write everything (``wandb.teardown``)
    before it returns: Ray kills the actor as soon as it returns, and W&B's service process with it, which can
    lose a run's records otherwise."""

    def run(self):
        super().run()
        self._wandb.teardown()


class WandbTracker(WandbLoggerCallback):
    """Each run one W&B run: id from its run id, grouped by cell, tagged with its seed (Ray's logging actor)."""

    tracker = "wandb"
    _logger_actor_cls = FlushingWandbActor  # Ray's extension point for the logging actor

    def __init__(self, project: str, entity: str | None, mode: str | None):
        mode = mode or os.environ.get("WANDB_MODE")
        extra = {k: v for k, v in (("entity", entity), ("mode", mode), ("dir", os.environ.get("WANDB_DIR"))) if v}
        super().__init__(project=project, **extra)
        self.mode = mode
        self.epochs = EpochOnce()

    def setup(self, *args, **kwargs):
        if self.mode in ("offline", "disabled"):  # no API key needed
            return
        super().setup(*args, **kwargs)

    def log_trial_start(self, trial):
        if trial in self._trial_logging_actors:
            return
        identity, config = trial_identity(trial)
        kwargs = {**wandb_init_kwargs(identity, config, self.project), "allow_val_change": True, **self.kwargs}
        if self.mode not in ("offline", "disabled"):
            kwargs["resume"] = "allow"  # --resume continues the W&B run of the same id (docs/trackers.md)
        self._start_logging_actor(trial, [], **kwargs)

    def log_trial_result(self, iteration, trial, result):
        if trial not in self._trial_logging_actors:
            self.log_trial_start(trial)
        if self.epochs.fresh(trial, result):  # Ray's logging actor takes the step from training_iteration
            super().log_trial_result(iteration, trial, {**epoch_values(result), "training_iteration": result["epoch"]})


class AimTracker(AimLoggerCallback):
    """Each run one Aim run in experiment ``experiment``, its identity under ``dynstudy`` and config under
    ``hparams``."""

    tracker = "aim"

    def __init__(self, repo: str | None, experiment: str):
        super().__init__(repo=repo, experiment_name=experiment)
        self.epochs = EpochOnce()

    def log_trial_start(self, trial):
        from aim.sdk import Run

        if trial in self._trial_to_run:
            return
        identity, config = trial_identity(trial)
        run = Run(repo=self._repo_path, experiment=self._experiment_name)
        run.name = identity["run_id"]
        run["dynstudy"] = identity
        run["hparams"] = flat_params(config)
        run.add_tag(f"seed={identity['seed']}")
        self._trial_to_run[trial] = run

    def log_trial_result(self, iteration, trial, result):
        if trial not in self._trial_to_run:
            self.log_trial_start(trial)
        if self.epochs.fresh(trial, result):
            run = self._trial_to_run[trial]
            for name, value in epoch_values(result).items():
                run.track(value, name=name, step=result["epoch"], epoch=result["epoch"])

    def log_trial_end(self, trial, failed: bool = False):
        if trial in self._trial_to_run:
            self._trial_to_run.pop(trial).close()


class TensorBoardTracker(TBXLoggerCallback):
    """Each run one folder of event files under ``logdir``
    (:func:`~dynstudy.study.tracker_clients.tensorboard_run_dir`), a scalar per metric, the epoch as the step.
    Replaces Ray's default TensorBoard logger."""

    tracker = "tensorboard"

    def __init__(self, logdir: str):
        super().__init__()
        self.logdir = logdir
        self.epochs = EpochOnce()

    def log_trial_start(self, trial):
        if trial not in self._trial_writer:
            identity, _ = trial_identity(trial)
            folder = tensorboard_run_dir(self.logdir, identity)
            if not continues(trial):
                remove_event_files(folder)
            self._trial_writer[trial] = self._summary_writer_cls(folder, flush_secs=30)

    def log_trial_result(self, iteration, trial, result):
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        if self.epochs.fresh(trial, result):
            writer = self._trial_writer[trial]
            for name, value in epoch_values(result).items():
                writer.add_scalar(name, value, global_step=result["epoch"])
            writer.flush()

    def log_trial_end(self, trial, failed: bool = False):
        if trial in self._trial_writer:
            self._trial_writer.pop(trial).close()


class Guarded:
    """A mix-in that runs a Tune callback's hooks inside a guard: the first exception is printed once to ``out``
    and the callback does nothing from then on. ``guarded(cls, out, ...)`` builds one."""

    def _guard(self, hook: str, *args, **kwargs):
        if self.broken:
            return None
        try:
            return getattr(super(), hook)(*args, **kwargs)
        except Exception as err:  # a tracker's failure of any kind must not reach Tune's loop
            self.broken = True
            later = (f"; `dynstudy export --to {self.tracker}` sends the finished study later"
                     if self.tracker in EXPORT_TARGETS else "")
            print(f"tracking.{self.tracker}: {type(err).__name__}: {' '.join(str(err).split())[:500]}; the study "
                  f"goes on without {self.tracker} (the store is unaffected{later})", file=self.out, flush=True)
            return None

    def setup(self, *args, **kwargs):
        return self._guard("setup", *args, **kwargs)

    def on_trial_start(self, *args, **kwargs):
        return self._guard("on_trial_start", *args, **kwargs)

    def on_trial_restore(self, *args, **kwargs):
        return self._guard("on_trial_restore", *args, **kwargs)

    def on_trial_save(self, *args, **kwargs):
        return self._guard("on_trial_save", *args, **kwargs)

    def on_trial_result(self, *args, **kwargs):
        return self._guard("on_trial_result", *args, **kwargs)

    def on_trial_complete(self, *args, **kwargs):
        return self._guard("on_trial_complete", *args, **kwargs)

    def on_trial_recover(self, *args, **kwargs):
        return self._guard("on_trial_recover", *args, **kwargs)

    def on_trial_error(self, *args, **kwargs):
        return self._guard("on_trial_error", *args, **kwargs)

    def on_checkpoint(self, *args, **kwargs):
        return self._guard("on_checkpoint", *args, **kwargs)

    def on_experiment_end(self, *args, **kwargs):
        return self._guard("on_experiment_end", *args, **kwargs)


def guarded(cls, out, *args, **kwargs):
    """An instance of ``cls`` (a tracker callback) whose hooks run inside :class:`Guarded`'s guard; an error
    building it is printed likewise (None is returned)."""
    guarded_cls = type(f"Guarded{cls.__name__}", (Guarded, cls), {})
    try:
        callback = guarded_cls(*args, **kwargs)
    except Exception as err:
        print(f"tracking.{cls.tracker}: {type(err).__name__}: {' '.join(str(err).split())[:500]}; the study goes "
              f"on without {cls.tracker}", file=out, flush=True)
        return None
    callback.out, callback.broken = out, False
    return callback


def tracker_callbacks(tracking: TrackingSpec, study: str, store: str, out) -> list:
    """The guarded callbacks of the trackers ``tracking`` turns on, for a Tuner's ``RunConfig``."""
    made = []
    if tracking.mlflow is not None:
        made.append(guarded(MLflowTracker, out, tracking.mlflow.tracking_uri, tracking.mlflow.experiment or study))
    if tracking.wandb is not None:
        made.append(guarded(WandbTracker, out, tracking.wandb.project or study, tracking.wandb.entity,
                            tracking.wandb.mode))
    if tracking.aim is not None:
        made.append(guarded(AimTracker, out, tracking.aim.repo, tracking.aim.experiment or study))
    if tracking.tensorboard is not None:
        made.append(guarded(TensorBoardTracker, out, tracking.tensorboard_logdir(store, study)))
    return [c for c in made if c is not None]
