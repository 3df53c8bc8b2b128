"""What live tracking costs a study: one tiny study (tiny_cnn on 256 digits, 2 seeds, 6 epochs) without trackers and
with each tracker (MLflow's local file store, W&B offline, TensorBoard), alternating, in one Ray instance.

    .venv/bin/python bench/bench_trackers.py [--repeats 2] [--epochs 6]

A one-epoch study first starts Ray's worker processes (untimed). Prints each configuration's wall seconds of
``run_study`` and its ratio to the study without trackers.
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import time


def spec(name: str, tracking: dict, epochs: int) -> dict:
    return {"name": name, "models": ["tiny_cnn"], "datasets": [{"name": "digits", "n_train": 256, "n_val": 128}],
            "optimizers": [{"name": "sgd", "lr": 0.05}], "seeds": [0, 1],
            "train": {"epochs": epochs, "batch_size": 64, "early_stopping_patience": None},
            "capture": {"probe_size": 64, "channels_per_stage": 8}, "analysis": {"min_scale": 4, "n_scales": 4},
            "resources": {"cpus_per_trial": 1, "max_failures": 0}, "tracking": tracking}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    import ray

    from dynstudy.study.orchestrate import run_study
    from dynstudy.study.spec import parse_spec

    root = tempfile.mkdtemp(prefix="bench-trackers-")
    os.environ.update({"MLFLOW_ALLOW_FILE_STORE": "true", "WANDB_DIR": root, "WANDB_SILENT": "true"})
    kinds = {"none": {}, "mlflow": {"mlflow": {"tracking_uri": f"file://{root}/mlruns"}},
             "wandb": {"wandb": {"mode": "offline"}}, "tensorboard": {"tensorboard": {"logdir": f"{root}/tb"}}}
    times = {k: [] for k in kinds}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        run_study(parse_spec(spec("warmup", {}, 1)), store=f"{root}/warmup", out=io.StringIO())  # Ray's workers
        for i in range(args.repeats):
            for kind, tracking in kinds.items():
                t0 = time.perf_counter()
                done = run_study(parse_spec(spec(f"{kind}{i}", tracking, args.epochs)), store=f"{root}/{kind}{i}",
                                 out=io.StringIO())
                times[kind].append(time.perf_counter() - t0)
                assert done["finished"] == 2, done
    finally:
        ray.shutdown()
    base = sum(times["none"])
    for kind, values in times.items():
        print(f"{kind:12s} {' '.join(f'{v:5.1f}' for v in values)} s   {sum(values) / base:.2f}x")


if __name__ == "__main__":
    main()
