"""What ``dynstudy run`` prints while a study trains.

By default one line per event that matters: a run completed, failed or
retried, and every tenth of the study's epochs, each with runs done/total,
epochs done/total and an estimate of the time left. ``--verbose`` adds one
line per epoch of every run (the paper preset has about 9,000 of them);
``--quiet`` prints none. The counting lives in :class:`ProgressLog` (no Ray
needed); :func:`tune_callback` feeds it from Ray Tune's events.
"""
from __future__ import annotations

import time

VERBOSITY = ("quiet", "events", "verbose")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s" if m else f"{s}s"


class ProgressLog:
    """Runs and epochs done of a study, and the lines to print about them.

    Parameters
    ----------
    max_epochs : run_id -> its maximum epochs (``train.epochs``) for every run to train.
    verbosity : "quiet", "events" or "verbose".
    out : text stream.
    clock : seconds now (tests pass a fake one).
    start : run_id -> epochs a resumed run completed before this invocation (default: none). They count as done,
        and the estimate of the time left rests only on the epochs trained since this log began.
    """

    def __init__(self, max_epochs: dict[str, int], verbosity: str, out, clock=time.time,
                 start: dict[str, int] | None = None):
        if verbosity not in VERBOSITY:
            raise ValueError(f"verbosity={verbosity!r}; use one of {VERBOSITY}")
        self.max_epochs = dict(max_epochs)
        self.epochs = {run_id: min(int((start or {}).get(run_id, 0)), max_epochs[run_id]) for run_id in max_epochs}
        self.epochs_before = sum(self.epochs.values())
        self.runs_done = 0
        self.verbosity, self.out, self.clock = verbosity, out, clock
        self.t0 = clock()
        self.next_tenth = 1

    @property
    def total_epochs(self) -> int:
        return sum(self.max_epochs.values())

    @property
    def epochs_done(self) -> int:
        return sum(self.epochs.values())

    def eta(self) -> str:
        done, total = self.epochs_done, self.total_epochs
        trained = done - self.epochs_before
        if trained <= 0:
            return "ETA -"
        return f"ETA {_duration((self.clock() - self.t0) / trained * (total - done))}"

    def _line(self, text: str) -> None:
        if self.verbosity == "quiet":
            return
        print(f"[{self.clock() - self.t0:7.1f}s] {self.runs_done}/{len(self.max_epochs)} runs done, "
              f"{self.epochs_done}/{self.total_epochs} epochs, {self.eta()}: {text}", file=self.out, flush=True)

    def epoch(self, run_id: str, epoch: int, val_acc: float, val_loss: float) -> None:
        self.epochs[run_id] = max(self.epochs.get(run_id, 0), int(epoch))
        if self.verbosity == "verbose":
            self._line(f"{run_id}: epoch {epoch} val_acc {val_acc:.3f} val_loss {val_loss:.3f}")
            return
        if self.epochs_done * 10 >= self.next_tenth * self.total_epochs:
            while self.epochs_done * 10 >= self.next_tenth * self.total_epochs:
                self.next_tenth += 1
            self._line(f"{(self.next_tenth - 1) * 10}% of the epochs")

    def complete(self, run_id: str) -> None:
        """A run ended: an early stop leaves its remaining epochs out of the total."""
        self.runs_done += 1
        self.max_epochs[run_id] = self.epochs.get(run_id, 0)
        self._line(f"{run_id}: complete after {self.epochs.get(run_id, 0)} epochs")

    def error(self, run_id: str) -> None:
        self.runs_done += 1
        self.max_epochs[run_id] = self.epochs.get(run_id, 0)
        self._line(f"{run_id}: FAILED (see the runs table's error column)")

    def recover(self, run_id: str) -> None:
        self._line(f"{run_id}: failed, retrying from its last checkpoint")


def tune_callback(log: ProgressLog):
    """A Ray Tune callback that reports the trials' events to ``log``."""
    from ray import tune

    class Progress(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "val_acc" in result:
                log.epoch(trial.config["trial"]["run_id"], result["epoch"], result["val_acc"], result["val_loss"])

        def on_trial_complete(self, iteration, trials, trial, **info):
            log.complete(trial.config["trial"]["run_id"])

        def on_trial_error(self, iteration, trials, trial, **info):
            log.error(trial.config["trial"]["run_id"])

        def on_trial_recover(self, iteration, trials, trial, **info):
            log.recover(trial.config["trial"]["run_id"])

    return Progress()
