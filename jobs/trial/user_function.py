"""A study of the user's own training code: ``train: {function: "package.module:main"}`` in the spec.

Ray Tune runs :func:`run_function_trial` once per (cell, seed) where it would run the built-in trainer. It
imports the function and calls it with a :class:`TrialContext`: the trial's config (``trial.config``, as
:func:`dynstudy.study.grid.expand` writes it), its seed, a recorder bound to the run, and checkpoints that go
through the trial's session (Ray Tune's, so retries and ``dynstudy run --resume`` continue from them)::

    def main(trial):
        torch.manual_seed(trial.seed)
        model = build_my_model()
        rec = trial.recorder(model, probe=(images, labels))        # the spec's capture settings
        state = trial.restore()                                    # None on a fresh start
        start = 1 if state is None else state["epoch"] + 1
        if state is None:
            rec.capture(epoch=0)
        else:
            model.load_state_dict(state["model"])
        for epoch in range(start, trial.config["train"]["epochs"] + 1):
            ...                                                    # train one epoch
            rec.capture(epoch=epoch)
            rec.log(epoch=epoch, train_loss=..., val_loss=..., val_acc=..., lr=...)
            trial.checkpoint({"model": model.state_dict(), "epoch": epoch})
        rec.finish()

A function that raises marks its run failed with the error and fails the trial (Tune retries it from its last
checkpoint); one that returns without calling ``rec.finish()`` leaves its run marked failed, saying so.
"""
from __future__ import annotations

import math
from collections.abc import Callable

from dynstudy.jobs.capture.recorder import Recorder, RecorderError, probe_tensors
from dynstudy.jobs.trial import faults
from dynstudy.jobs.user_code import import_function

#: The error a run's row holds when its training function returned without finishing its recorder.
RETURNED_UNFINISHED = ("RecorderError: the training function returned without rec.finish(); call it when training "
                       "ends")


def load_train_function(target: str) -> Callable:
    """The function ``train.function`` names (``package.module:function``); ValueError says why it cannot be had."""
    module, _, name = target.partition(":")
    return import_function(module, name, f"train.function {target!r}")


def check_train_functions(trials: list[dict]) -> None:
    """Raise ValueError naming every ``train.function`` of ``trials`` that cannot be imported."""
    problems = []
    for target in sorted({t["train"].get("function") for t in trials} - {None}):
        try:
            load_train_function(target)
        except ValueError as err:
            problems.append(str(err))
    if problems:
        raise ValueError("invalid study spec: " + "; ".join(problems))


class TrialContext:
    """What a training function gets: the trial, its recorder and its checkpoints.

    Attributes
    ----------
    config : dict
        The trial config (run_id, study, model, dataset, optimizer, seed and the train, capture and analysis
        sections).
    seed, run_id : the run's seed and id.
    rec : Recorder or None
        The run's recorder, once :meth:`recorder` made it.
    """

    def __init__(self, config: dict, session):
        self.config, self.session = config, session
        self.seed, self.run_id = config["seed"], config["run_id"]
        self.rec: Recorder | None = None
        self._state = session.restore()  # the run's last checkpoint, or None

    def recorder(self, model, probe, stages=None, *, mean=None, std=None) -> Recorder:
        """The run's recorder of ``model``, restored from the last checkpoint when there is one.

        ``probe``: (images, labels), at least ``capture.probe_size`` of them (the first that many are the probe);
        ``stages``: module names (default: the spec's model entry's, else four of the model's feature levels).
        A capture that does not fit the model or probe marks the run failed and raises ValueError.
        """
        if self.rec is not None:
            raise RecorderError("trial.recorder() makes the run's one recorder; call it once")
        images, labels = probe_tensors(probe)
        n = self.config["capture"]["probe_size"]
        self.rec = Recorder.for_run(self.config, model, images[:n], labels[:n],
                                    stages if stages is not None else self.config.get("stages"), mean=mean, std=std)
        if self._state is not None:
            self.rec.load_state_dict(self._state["recorder"])
        self.rec.start()
        if self._state is None:
            problem = self.rec.fit_problem()
            if problem:
                self.rec.fail(f"ValueError: {problem}")
                raise ValueError(problem)
        return self.rec

    def restore(self):
        """The state the last :meth:`checkpoint` saved, or None on a fresh start."""
        return None if self._state is None else self._state["user"]

    def checkpoint(self, state) -> None:
        """Save ``state`` (anything ``torch.save`` takes) with the recorder's state as the run's checkpoint, once
        everything recorded so far is on the store, and report the last logged epoch to Ray Tune."""
        if self.rec is None:
            raise RecorderError("trial.checkpoint() before trial.recorder(...): make the recorder first")
        faults.maybe_inject(epoch=self.rec.epoch, step=self.rec.step, run_id=self.run_id)  # drills only
        recorder_state = self.rec.state_dict()
        scores = {k: math.nan if v is None else v for k, v in self.rec.logged.items()}
        scores = {"val_acc": math.nan, "val_loss": math.nan, **scores}  # what the progress lines print
        self.session.report({**scores, "run_id": self.run_id, "epoch": self.rec.epoch, "step": self.rec.step,
                             "last": False}, {"user": state, "recorder": recorder_state})


def run_function_trial(config: dict, session) -> None:
    """Train one run with the function ``config["train"]["function"]`` names (see the module docstring)."""
    fn = load_train_function(config["train"]["function"])
    trial = TrialContext(config, session)
    try:
        fn(trial)
    except Exception as err:
        if trial.rec is not None:
            trial.rec.fail(f"{type(err).__name__}: {err}")
        raise
    except BaseException:
        if trial.rec is not None:
            trial.rec.release()
        raise
    if trial.rec is None:
        raise RecorderError(f"train.function {config['train']['function']!r} returned without calling "
                            "trial.recorder(...): nothing was recorded")
    if not trial.rec.closed:
        trial.rec.fail(RETURNED_UNFINISHED)
