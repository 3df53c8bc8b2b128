"""Run a study's trials under Ray Tune, locally or on a Ray cluster.

``run_study`` expands the grid and, before Ray starts, checks what can be
checked (the fault-drill variable, that the store is writable, which runs the
store already holds and whether they were trained with the same settings:
:mod:`dynstudy.study.identity`, and that the cluster address answers). It then
connects to Ray (an existing cluster when ``address`` or ``RAY_ADDRESS`` is
set, as under ``ray job submit``; otherwise a fresh local instance it stops
afterwards) and runs one Tune trial per run still to train, with per-trial
resources, retries from the last checkpoint (``FailureConfig``) and
checkpoints kept in ``<store>/_tune/<study>``; the trackers of the spec's ``tracking`` section
receive every epoch through Ray Tune's logger callbacks (:mod:`dynstudy.study.tracker_callbacks`).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Optional

from dynstudy.jobs.capture.fit_check import check_trials_fit
from dynstudy.jobs.trial import faults
from dynstudy.store_contract.files import (
    check_writable,
    is_remote,
    read_run_row,
    remove_run_files,
    resolve_store,
    write_rows,
)
from dynstudy.study.checkpoints import clear_trial_folders, forget_kept, keep_for_resume
from dynstudy.study.grid import expand
from dynstudy.study.identity import DONE_STATUSES, StudyPlan, plan_study
from dynstudy.study.preflight import PreflightError, check_ray_address, check_store_writable
from dynstudy.study.progress import ProgressLog, tune_callback
from dynstudy.study.spec import SpecError, StudySpec
from dynstudy.study.tracking_spec import check_tracker_packages


class StudyError(RuntimeError):
    """The study could not run to its end; the message says why and what to do."""


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


def warn_shared_temp_dirs(nodes: list[dict], out) -> None:
    """Say when alive nodes on one host share a Ray session folder (``--temp-dir``).

    Their runtime-env agents then share the unpacked ``--working-dir`` of a
    job, and one deletes it while the others still use it; each node needs
    its own ``ray start --temp-dir``.
    """
    groups = {}
    for n in nodes:
        if n.get("Alive") and n.get("RayletSocketName"):
            session = os.path.dirname(os.path.dirname(n["RayletSocketName"]))
            groups.setdefault((n.get("NodeManagerHostname"), session), []).append(n["NodeID"][:8])
    for (host, session), ids in groups.items():
        if len(ids) > 1:
            print(f"warning: {len(ids)} Ray nodes on host {host} share the session folder {session} "
                  f"(nodes {', '.join(ids)}); their runtime-env agents delete each other's working directories: "
                  "start each node with its own `ray start --temp-dir`", file=out, flush=True)


def _mark_failed(store: str, errors: dict, out) -> None:
    """Runs whose trial errored for good are marked ``failed`` in ``runs`` (said, if the store refuses)."""
    for run_id, error in errors.items():
        row = read_run_row(store, run_id)
        if row is None or row["status"] != "running":
            continue
        row.update(status="failed", stop_reason="error", error=error)
        try:
            write_rows(store, "runs", run_id, "run", {k: [v] for k, v in row.items()})
        except OSError as err:
            print(f"could not mark run {run_id} failed in the store ({type(err).__name__}: {err}); "
                  "`dynstudy run --resume` completes it once the store is writable", file=out, flush=True)


def check_resources(spec: StudySpec, available: dict) -> None:
    """Refuse per-trial resources that the local Ray instance can never grant."""
    from dynstudy.study.spec import SpecError

    for key, field in (("CPU", "cpus_per_trial"), ("GPU", "gpus_per_trial")):
        want, have = getattr(spec.resources, field), available.get(key, 0)
        if want > have:
            raise SpecError(f"invalid study spec: resources.{field}={want} but this machine offers {have:g} {key}; "
                            f"lower it, or submit the study to a cluster that has them (ray job submit)")


def repair_stale(plan: StudyPlan, store: str, out) -> None:
    """Rows of runs that wrote every epoch but say running take the status finished; said, and counted as done."""
    for trial in plan.stale:
        row = plan.rows[trial["run_id"]]
        row.update(status="finished", stop_reason="max_epochs", epochs_completed=trial["train"]["epochs"])
        write_rows(store, "runs", trial["run_id"], "run", {k: [v] for k, v in row.items()})
    if plan.stale:
        ids = [t["run_id"] for t in plan.stale]
        print(f"repaired {len(ids)} run(s) whose row said running although every epoch up to train.epochs is in the "
              f"store: {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}; their rows now say finished",
              file=out, flush=True)
    plan.done += plan.stale
    plan.stale = []


def select_trials(plan: StudyPlan, *, resume: bool, replace: bool, out) -> tuple[list[dict], list[dict]]:
    """(trials to run now, runs whose old files ``--replace`` removes first). Raises on changed runs."""
    if resume and replace:
        raise SpecError("--resume continues runs and --replace retrains them; give one of them")
    if plan.changed and not replace:
        raise SpecError(plan.refusal())
    if replace:
        old = plan.done + plan.unfinished + plan.stale + [t for t, _ in plan.changed]
        return plan.new + old, old
    if plan.done:
        print(f"{len(plan.done)} runs already finished; --resume continues unfinished runs, --replace retrains",
              file=out, flush=True)
    if plan.unfinished and not resume:
        print(f"{len(plan.unfinished)} unfinished run(s) start again from scratch "
              "(--resume continues them from their last checkpoint)", file=out, flush=True)
    return plan.new + plan.unfinished, []


def apply_analysis_changes(plan: StudyPlan, store: str, out) -> None:
    """Runs whose analysis settings alone changed take the new settings in their row; the signals stay."""
    for trial, _ in plan.reanalysed:
        row = plan.rows[trial["run_id"]]
        row["config"] = json.dumps(trial, sort_keys=True)
        write_rows(store, "runs", trial["run_id"], "run", {k: [v] for k, v in row.items()})
    if plan.reanalysed:
        diffs = sorted({d for _, ds in plan.reanalysed for d in ds})
        print(f"{len(plan.reanalysed)} run(s) change only analysis settings ({'; '.join(diffs[:4])}): their signals "
              "are kept and `dynstudy analyze` recomputes their tables", file=out, flush=True)


#: Set in the environment of a driver that ``ray job submit`` started (Ray's job supervisor sets it).
JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def resume_hint(environ=os.environ) -> str:
    """What to do when this driver is killed: it cannot say so once it is (a job then ends with exit code 137)."""
    how = ("resubmit the job with `--resume` added to `dynstudy run`" if JOB_ENV in environ
           else "run `dynstudy run SPEC --resume`")
    return f"if this study is stopped or its driver killed, the runs written so far are kept: {how} to continue them"


def run_statuses(store: str, trials: list[dict]) -> dict[str, str | None]:
    """run_id -> the status its row in the store holds (None: no row)."""
    return {t["run_id"]: (read_run_row(store, t["run_id"]) or {}).get("status") for t in trials}


def study_summary(store: str, trials: list[dict], skipped: list[dict], statuses: dict | None = None) -> dict:
    """The study's runs counted by the status their rows in the store hold: what the store says, not what Tune
    reported, so a run whose row was left unfinished is counted as such (``unfinished``: their run ids).
    ``statuses``: :func:`run_statuses` of ``trials`` read now (default: read here)."""
    statuses = statuses if statuses is not None else run_statuses(store, trials)
    unfinished = sorted(r for r, s in statuses.items() if s not in (*DONE_STATUSES, "failed"))
    counts = list(statuses.values())
    return {"store": store, "runs": len(trials), "failed": counts.count("failed"), "diverged": counts.count("diverged"),
            "finished": counts.count("finished"), "unfinished": unfinished, "skipped": len(skipped)}


def run_study(spec: StudySpec, *, store: Optional[str] = None, resume: bool = False, replace: bool = False,
              address: Optional[str] = None, num_cpus: Optional[int] = None, verbosity: str = "verbose",
              out=sys.stdout) -> dict:
    """Run every trial of ``spec`` still to train; return counts of finished/diverged/failed/skipped runs.

    Parameters
    ----------
    spec : the validated study.
    store : where to write (default: ``spec.store``).
    resume : continue unfinished runs from their checkpoints (Ray Tune's
        experiment state); finished runs are never redone.
    replace : remove the files of the spec's runs already in the store and
        train them again (needed when the spec changed under the same name).
    address : Ray cluster address; default local (or ``RAY_ADDRESS``).
    num_cpus : CPUs of a local Ray instance (default: all).
    verbosity : progress lines: "quiet", "events" (the CLI's default) or "verbose" (one per epoch of every run).
    """
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's terse output; progress comes from our callback
    store = resolve_store(store or spec.store)
    trials = expand(spec, store)
    print(f"study {spec.name}: {len(trials)} runs ({len(spec.models)} models x {len(spec.datasets)} datasets x "
          f"{len(spec.optimizers)} optimizers x {len(spec.seeds)} seeds) -> store {store}", file=out, flush=True)
    faults.check_fault_env()
    check_tracker_packages(spec.tracking, store)
    from dynstudy.jobs.models.registry import check_model_names  # torch and timm: only where training is installed

    check_model_names(trials)
    check_store_writable(store)
    if is_remote(store):
        try:
            check_writable(store)
        except OSError as err:
            raise PreflightError(f"store {store} is not writable ({type(err).__name__}: {err}); check the bucket, "
                                 "AWS_ENDPOINT_URL / AWS_REGION and the credentials (AWS_ACCESS_KEY_ID, "
                                 "AWS_PROFILE, ...)") from None
    plan = plan_study(trials, store)
    if not replace and not plan.changed:  # else nothing is written before select_trials refuses or --replace removes
        repair_stale(plan, store, out)
    todo, replaced = select_trials(plan, resume=resume, replace=replace, out=out)
    if not replace:
        apply_analysis_changes(plan, store, out)
    todo_ids = {t["run_id"] for t in todo}
    skipped = [t for t in trials if t["run_id"] not in todo_ids]
    if not todo:
        return study_summary(store, trials, skipped)
    check_trials_fit([t for t in todo if not t["train"]["function"]])  # a training function's recorder checks its own
    from dynstudy.jobs.trial.user_function import check_train_functions  # torch: only where training is installed

    check_train_functions(todo)
    check_ray_address(address)
    for trial in replaced:  # only once every check has passed: a refused study loses nothing
        remove_run_files(store, trial["run_id"])
    if replaced:
        print(f"--replace: removed the files of {len(replaced)} run(s); they are trained again", file=out, flush=True)
    os.environ[faults.INVOCATION_ENV] = faults.new_invocation()

    import ray
    from ray import tune

    from dynstudy.jobs.trial.session import tune_trainable
    from dynstudy.study.stoppers import VolatilityStopper

    started = _connect(address, num_cpus)
    try:
        if started:
            check_resources(spec, ray.cluster_resources())
        else:
            warn_shared_temp_dirs(ray.nodes(), out)
        res = {"cpu": spec.resources.cpus_per_trial, "gpu": spec.resources.gpus_per_trial}
        trainable = tune.with_resources(tune_trainable, res)
        storage = f"{store}/_tune"
        exp_path = f"{storage}/{spec.name}"
        resume_from = {}
        if resume and plan.unfinished:
            resume_from = keep_for_resume(exp_path, [t["run_id"] for t in plan.unfinished])
            print(f"--resume: {len(resume_from)} of {len(plan.unfinished)} unfinished run(s) continue from their last "
                  f"checkpoint, {len(plan.unfinished) - len(resume_from)} start from scratch (no checkpoint kept); "
                  f"{len(plan.new)} new run(s)", file=out, flush=True)
        clear_trial_folders(exp_path, todo_ids)
        forget_kept(exp_path, todo_ids - set(resume_from))
        start_epochs = {r: int(plan.rows[r].get("epochs_completed") or 0) for r in resume_from}
        progress = ProgressLog({t["run_id"]: t["train"]["epochs"] for t in todo}, verbosity, out, start=start_epochs)
        trackers = []
        if spec.tracking.enabled:  # the trackers' clients are imported only when a study logs to them
            from dynstudy.study.tracker_callbacks import tracker_callbacks

            trackers = tracker_callbacks(spec.tracking, spec.name, store, out)
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(todo), "resume_from": resume_from},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=spec.resources.max_concurrent_trials,
                trial_name_creator=lambda t: t.config["trial"]["run_id"],
                trial_dirname_creator=lambda t: t.config["trial"]["run_id"],
            ),
            run_config=tune.RunConfig(
                name=spec.name, storage_path=storage, verbose=0,
                failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[tune_callback(progress), *trackers],
                stop=VolatilityStopper() if spec.train.volatility_stopping else None,
            ),
        )
        print(resume_hint(), file=out, flush=True)
        try:
            results = tuner.fit()
        except Exception as err:  # Tune's driver loop itself broke (a full disk under its experiment state, ...)
            cause = f"{type(err).__name__}: {err}"
            _mark_failed(store, {t["run_id"]: f"study stopped: {cause}"[:2000] for t in todo}, out)
            raise StudyError(f"Ray Tune stopped: {cause}; the runs written so far are kept; "
                             "fix the cause, then `dynstudy run SPEC --resume` continues") from err
        errors = {r.config["trial"]["run_id"]: f"{type(r.error).__name__}: {r.error}"[:2000]
                  for r in results if r.error is not None}
        _mark_failed(store, errors, out)
        statuses = run_statuses(store, trials)
        summary = study_summary(store, trials, skipped, statuses)
        forget_kept(exp_path, [r for r in todo_ids if statuses[r] in DONE_STATUSES])
        print(f"study {spec.name}: {summary['finished']} finished, {summary['diverged']} diverged, "
              f"{summary['failed']} failed", file=out, flush=True)
        if summary["unfinished"]:
            print(f"{len(summary['unfinished'])} run(s) are not finished in the store: "
                  f"{', '.join(summary['unfinished'][:5])}{' ...' if len(summary['unfinished']) > 5 else ''}; "
                  f"`dynstudy run SPEC --resume` continues them", file=out, flush=True)
        return summary
    finally:
        if started:
            ray.shutdown()
