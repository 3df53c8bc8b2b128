"""Benchmark: what per-epoch activation capture costs a trial, on this machine.

For each case the same trial runs twice, with capture on and off, and the
script prints the training time per epoch (train + validation), the capture
time per epoch, and the overhead. CPU trials here are short; for ResNet-18 it
also projects the overhead of a full CIFAR epoch (50,000 images) from the
measured training throughput and capture time, since a CPU cannot run one in
a benchmark.

    .venv/bin/python bench/bench_capture.py [--quick]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402

from dynstudy.jobs.trial.session import LocalSession  # noqa: E402
from dynstudy.jobs.trial.trainer import run_trial  # noqa: E402
from dynstudy.study.grid import expand  # noqa: E402
from dynstudy.study.spec import parse_spec  # noqa: E402

CASES = [  # model, dataset, dataset options, epochs, batch, probe size
    ("tiny_cnn", "digits", {}, 4, 64, 256),
    ("tiny_resnet", "digits", {}, 4, 64, 256),
    ("tiny_cnn", "synthetic", {"n_train": 1500}, 4, 64, 256),
    ("tiny_resnet", "synthetic", {"n_train": 1500}, 4, 64, 256),
    ("resnet18", "synthetic", {"image_size": 32, "n_train": 512, "n_val": 2048}, 1, 128, 2048),
    ("resnet18-cifar", "synthetic", {"image_size": 32, "n_train": 256, "n_val": 2048}, 1, 128, 2048),
]


def run(model, dataset, ds_opts, epochs, batch, probe, capture):
    model, _, stem = model.partition("-")
    with tempfile.TemporaryDirectory() as tmp:
        spec = parse_spec({
            "name": "bench", "models": [model], "datasets": [{"name": dataset, **ds_opts}], "seeds": [0],
            "optimizers": [{"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}],
            "train": {"epochs": epochs, "batch_size": batch, "scheduler": "none", "early_stopping_patience": None,
                      "threads": torch.get_num_threads(), "stem": stem or "stock"},
            "capture": {"probe_size": probe, "channels_per_stage": 32, "enabled": capture}})
        (cfg,) = expand(spec, tmp)  # the trial config a study of these settings runs
        cfg = {**cfg, "run_id": "bench"}
        session = LocalSession(Path(tmp) / "ck")
        t0 = time.perf_counter()
        run_trial(cfg, session)
        wall = time.perf_counter() - t0
    reports = session.reports
    train = sum(r["epoch_time_s"] for r in reports) / len(reports)
    cap = sum(r["capture_time_s"] for r in reports) / len(reports)
    return wall, train, cap


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the demo models only")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{'case':34s} {'train s/ep':>10s} {'capture s/ep':>12s} {'overhead':>9s} {'wall on/off':>12s}")
    for model, dataset, opts, epochs, batch, probe in CASES[:4] if args.quick else CASES:
        run(model, dataset, opts, 1, batch, probe, True)  # warm-up: data cache, allocator
        wall_off, train_off, _ = run(model, dataset, opts, epochs, batch, probe, False)
        wall_on, train_on, cap = run(model, dataset, opts, epochs, batch, probe, True)
        label = f"{model}/{dataset} P={probe}"
        print(f"{label:34s} {train_on:10.3f} {cap:12.3f} {cap / train_on:8.1%} {wall_on:6.1f}/{wall_off:<5.1f}")
        if model.startswith("resnet18"):
            n_train = opts["n_train"]
            per_image = train_on / n_train
            full = 50_000 * per_image
            print(f"  projected for a CIFAR epoch (50,000 training images at {1 / per_image:.0f} img/s): "
                  f"train {full:.0f} s, capture {cap:.1f} s, overhead {cap / full:.2%}")


if __name__ == "__main__":
    main()
