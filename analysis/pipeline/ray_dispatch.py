"""Each run's analysis as a Ray task on a cluster (``dynstudy analyze --address``, or ``RAY_ADDRESS``).

One task per run runs :func:`dynstudy.analysis.run.run_analysis.analyze_in_worker` on some
node of the cluster: it reads the run's input files from the store (a shared
path or an object store every node reaches), computes the run's tables and
writes them there, recording the input digest, exactly as a local worker
process does; the driver only plans the runs, reports each result as it
comes and computes the cross-run tables once at the end. A task lost with its
node is retried by Ray (a run's writes are idempotent: each file is replaced
whole); an error inside a run's analysis is returned as that run's error,
as locally.

Ray is imported here, when a cluster is asked for: an analysis-only install
has none, and says so with the extra that brings it.
"""
from __future__ import annotations

import os
from itertools import islice
from typing import Iterator

#: Times Ray re-runs a run's task whose worker or node died.
TASK_RETRIES = 3


def _ray():
    try:
        import ray
    except ImportError:
        raise ValueError("analysis on a Ray cluster (--address or RAY_ADDRESS) needs ray, which this install lacks: "
                         "pip install 'dynstudy[train]', or analyse on this machine (no --address, RAY_ADDRESS "
                         "unset)") from None
    return ray


#: Tasks in flight per CPU of the cluster: enough to keep every CPU busy, few enough that the driver holds a
#: few runs' input files, not every run's.
AHEAD_PER_CPU = 2


def run_on_cluster(address: str, jobs: Iterator[tuple]):
    """Results of :func:`dynstudy.analysis.run.run_analysis.analyze_and_write` for ``jobs`` (its arguments, as
    :func:`dynstudy.analysis.pipeline.analyze.jobs` makes them), one Ray task per run on the cluster at ``address``
    (an existing connection is used as it is), in completion order; at most :data:`AHEAD_PER_CPU` tasks per CPU
    of the cluster are in flight."""
    ray = _ray()
    from dynstudy.analysis.run.run_analysis import analyze_in_worker

    connected = False
    if not ray.is_initialized():
        env = {"env_vars": {k: v for k, v in os.environ.items() if k.startswith("DYNSTUDY_")}}
        ray.init(address=address, runtime_env=env, log_to_driver=False, logging_level="WARNING")
        connected = True
    try:
        task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(analyze_in_worker)
        ahead = max(1, int(ray.cluster_resources().get("CPU", 1))) * AHEAD_PER_CPU
        pending = [task.remote(*job) for job in islice(jobs, ahead)]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            pending += [task.remote(*job) for job in islice(jobs, 1)]
            try:
                yield ray.get(done[0])
            except ray.exceptions.RayTaskError as err:  # a write failed (a full store, ...): as locally, it stops
                raise err.as_instanceof_cause() from None
    finally:
        if connected:
            ray.shutdown()
