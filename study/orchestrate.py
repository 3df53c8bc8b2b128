"""Run a study's trials under Ray Tune, locally or on a Ray cluster.

``run_study`` connects to Ray (an existing cluster when ``address`` or
``RAY_ADDRESS`` is set, as under ``ray job submit``; otherwise a fresh local
instance it stops afterwards), expands the grid, and runs one Tune trial per
run with per-trial resources, retries from the last checkpoint
(``FailureConfig``) and checkpoints kept in ``<store>/_tune/<study>``.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Optional

import pyarrow.parquet as pq

from store_contract.files import is_remote, resolve_store, table_dir, write_rows
from study.grid import expand
from study.spec import StudySpec


def _progress_callback(total: int, out):
    from ray import tune

    class Progress(tune.Callback):
        """One line per epoch result and per finished trial."""

        def __init__(self):
            self.done = 0
            self.t0 = time.time()

        def _line(self, text):
            print(f"[{time.time() - self.t0:6.1f}s {self.done}/{total} runs done] {text}", file=out, flush=True)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "val_acc" in result:
                self._line(f"{trial.config['trial']['run_id']}: epoch {result['epoch']} "
                           f"val_acc {result['val_acc']:.3f} val_loss {result['val_loss']:.3f}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done += 1
            self._line(f"{trial.config['trial']['run_id']}: complete")

        def on_trial_error(self, iteration, trials, trial, **info):
            self.done += 1
            self._line(f"{trial.config['trial']['run_id']}: FAILED (see the runs table's error column)")

        def on_trial_recover(self, iteration, trials, trial, **info):
            self._line(f"{trial.config['trial']['run_id']}: failed, retrying from its last checkpoint")

    return Progress()


def _connect(address: Optional[str], num_cpus: Optional[int]) -> bool:
    """Connect to Ray; return True when this call started (and must stop) it."""
    import ray

    if ray.is_initialized():
        return False
    env = {"env_vars": {k: v for k, v in os.environ.items() if k.startswith("DYNSTUDY_")}}
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, runtime_env=env, log_to_driver=False)
        return False
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
             runtime_env=env, log_to_driver=False, logging_level="WARNING")
    return True


def _mark_failed(store: str, run_ids: list[str], errors: dict) -> None:
    """Runs whose trial errored for good are marked ``failed`` in ``runs``."""
    for run_id in run_ids:
        path = f"{table_dir(store, 'runs', run_id)}/run.parquet"
        if is_remote(path) or not os.path.exists(path):
            continue
        row = pq.read_table(path).to_pylist()[0]
        if row["status"] == "running":
            row.update(status="failed", stop_reason="error", error=errors.get(run_id, "trial failed"))
            write_rows(store, "runs", run_id, "run", {k: [v] for k, v in row.items()})


def check_resources(spec: StudySpec, available: dict) -> None:
    """Refuse per-trial resources that the local Ray instance can never grant."""
    from study.spec import SpecError

    for key, field in (("CPU", "cpus_per_trial"), ("GPU", "gpus_per_trial")):
        want, have = getattr(spec.resources, field), available.get(key, 0)
        if want > have:
            raise SpecError(f"invalid study spec: resources.{field}={want} but this machine offers {have:g} {key}; "
                            f"lower it, or submit the study to a cluster that has them (ray job submit)")


def run_study(spec: StudySpec, *, store: Optional[str] = None, resume: bool = False,
              address: Optional[str] = None, num_cpus: Optional[int] = None, out=sys.stdout) -> dict:
    """Run every trial of ``spec``; return counts of finished/diverged/failed runs.

    Parameters
    ----------
    spec : the validated study.
    store : where to write (default: ``spec.store``).
    resume : continue the interrupted Tune experiment of this study (finished
        trials are not redone, unfinished ones continue from their checkpoint).
    address : Ray cluster address; default local (or ``RAY_ADDRESS``).
    num_cpus : CPUs of a local Ray instance (default: all).
    """
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's terse output; progress comes from our callback
    import ray
    from ray import tune

    from jobs.session import tune_trainable
    from study.stoppers import VolatilityStopper

    store = resolve_store(store or spec.store)
    trials = expand(spec, store)
    print(f"study {spec.name}: {len(trials)} runs ({len(spec.models)} models x {len(spec.datasets)} datasets x "
          f"{len(spec.optimizers)} optimizers x {len(spec.seeds)} seeds) -> store {store}", file=out, flush=True)
    started = _connect(address, num_cpus)
    try:
        if started:
            check_resources(spec, ray.cluster_resources())
        res = {"cpu": spec.resources.cpus_per_trial, "gpu": spec.resources.gpus_per_trial}
        trainable = tune.with_resources(tune_trainable, res)
        storage = f"{store}/_tune"
        exp_path = f"{storage}/{spec.name}"
        run_config = tune.RunConfig(
            name=spec.name, storage_path=storage, verbose=0,
            failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=[_progress_callback(len(trials), out)],
            stop=VolatilityStopper() if spec.train.volatility_stopping else None,
        )
        if resume and tune.Tuner.can_restore(exp_path):
            print(f"resuming {exp_path}", file=out, flush=True)
            tuner = tune.Tuner.restore(exp_path, trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={"trial": tune.grid_search(trials)},
                tune_config=tune.TuneConfig(
                    max_concurrent_trials=spec.resources.max_concurrent_trials,
                    trial_name_creator=lambda t: t.config["trial"]["run_id"],
                    trial_dirname_creator=lambda t: t.config["trial"]["run_id"],
                ),
                run_config=run_config,
            )
        results = tuner.fit()
        errors = {}
        for r in results:
            if r.error is not None:
                errors[r.config["trial"]["run_id"]] = f"{type(r.error).__name__}: {r.error}"[:2000]
        _mark_failed(store, list(errors), errors)
        statuses = [(r.metrics or {}).get("status", "finished") for r in results if r.error is None]
        summary = {"store": store, "runs": len(trials), "failed": len(errors),
                   "diverged": statuses.count("diverged"), "finished": statuses.count("finished")}
        print(f"study {spec.name}: {summary['finished']} finished, {summary['diverged']} diverged, "
              f"{summary['failed']} failed", file=out, flush=True)
        return summary
    finally:
        if started:
            ray.shutdown()
