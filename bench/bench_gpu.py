"""Benchmark: dynstudy's training path against a reference loop like the paper's, on one device.

In one process on one device (CUDA when there is one, else the CPU):

1. reference: a torchvision DataLoader over the uint8 images with CPU
   transforms (ToDtype, RandomHorizontalFlip, Normalize) and pinned host
   batches copied to the device every step, fp32, a ``loss.item()`` every
   step: the shape of the authors' loop;
2. dynstudy: :func:`dynstudy.jobs.trial.trainer.run_trial` (data on the device, augmentation
   there, bf16 + channels_last on CUDA, background writes), with the
   per-epoch capture of the paper protocol and without it;
3. packed: 1, 2 and 4 dynstudy trials at once on the device (Ray tasks with
   fractional GPUs, or fractional CPUs with a thread share each on a CPU),
   and their aggregate training images/s;
4. accuracy: the real digits dataset, the same model and settings, the
   reference loop and dynstudy over the same epochs, mean final validation
   accuracy over three seeds (the goal: within 1 point).

ResNet-18 on generated images of CIFAR-10's shape and size (50,000 train /
10,000 validation 32x32 RGB, 10 classes, flips), batch 512, probe 2048.
Images/s counts training images over the training part of an epoch (no
validation, no capture). ``--quick``: small sizes on the CPU, about a minute.

    .venv/bin/python bench/bench_gpu.py [--quick] [--compile] [--epochs N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from dynstudy.jobs.data.device_data import dataset  # noqa: E402
from dynstudy.jobs.models.registry import ModelDef, build  # noqa: E402
from dynstudy.jobs.trial.session import LocalSession  # noqa: E402
from dynstudy.jobs.trial.trainer import make_optimizer, make_scheduler, run_trial, seed_everything  # noqa: E402
from dynstudy.study.grid import expand  # noqa: E402
from dynstudy.study.spec import parse_spec  # noqa: E402

SGD = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}
DIGITS = {"model": "tiny_cnn", "epochs": 12, "batch": 64, "lr": 0.05, "seeds": (0, 1, 2)}


def trial_config(store, model, ds, epochs, batch, probe, *, seed=0, capture=True, threads=1, use_gpu=False,
                 compile_=False, optimizer=SGD, scheduler="none"):
    """The trial config :func:`dynstudy.study.grid.expand` writes for these settings (every section complete)."""
    spec = parse_spec({
        "name": "bench", "models": [model], "datasets": [ds], "optimizers": [optimizer], "seeds": [seed],
        "train": {"epochs": epochs, "batch_size": batch, "scheduler": scheduler, "early_stopping_patience": None,
                  "threads": threads, "compile": compile_},
        "capture": {"probe_size": probe, "channels_per_stage": 32, "enabled": capture},
        "resources": {"gpus_per_trial": 1 if use_gpu else 0}})
    (cfg,) = expand(spec, store)
    return {**cfg, "run_id": f"bench-{seed}"}


def dynstudy_run(cfg) -> dict:
    """One trial; its per-epoch training seconds, capture seconds and wall seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        session = LocalSession(Path(tmp) / "ck")
        t0 = time.perf_counter()
        run_trial({**cfg, "store": str(Path(tmp) / "store")}, session)
        wall = time.perf_counter() - t0
    reps = session.reports
    return {"train_s": [r["epoch_time_s"] for r in reps], "capture_s": [r["capture_time_s"] for r in reps],
            "wall": wall, "val_acc": reps[-1]["val_acc"]}


class _Images(torch.utils.data.Dataset):
    def __init__(self, split, transform):
        self.x, self.y, self.transform = split.x, split.y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(self.x[i]), self.y[i]


def reference_run(ds: dict, model_name: str, epochs: int, batch: int, device, seed: int, workers: int,
                  optimizer=SGD, scheduler="none") -> dict:
    """The paper-shaped loop: DataLoader + CPU transforms, a host-to-device copy and .item() every step, fp32."""
    from dynstudy.jobs.models.tv_compat import ensure_torchvision

    ensure_torchvision()
    from torchvision.transforms import v2

    data = dataset(ds["name"], None, False, ds.get("n_train"), ds.get("n_val"), ds.get("image_size"))
    steps = [v2.ToDtype(torch.float32, scale=True)]
    if data.augment != "none":
        steps.append(v2.RandomHorizontalFlip())
    steps.append(v2.Normalize(list(data.mean), list(data.std)))
    transform = v2.Compose(steps)
    seed_everything(seed)
    model = build(ModelDef(model_name, model_name), data.num_classes, data.in_chans, data.image_size).module.to(device)
    opt = make_optimizer(model.parameters(), optimizer)
    sched = make_scheduler(opt, {"scheduler": scheduler, "plateau_patience": 5, "plateau_factor": 0.5,
                                 "epochs": epochs})
    loader_gen = torch.Generator().manual_seed(seed + 1000)  # its own shuffling stream
    train = torch.utils.data.DataLoader(_Images(data.train, transform), batch_size=batch, shuffle=True,
                                        num_workers=workers, pin_memory=device.type == "cuda", generator=loader_gen,
                                        persistent_workers=workers > 0)
    val = torch.utils.data.DataLoader(_Images(data.val, v2.Compose(steps[:1] + steps[-1:])), batch_size=batch,
                                      num_workers=workers)
    times, acc = [], 0.0
    for _ in range(epochs):
        model.train()
        t0 = time.perf_counter()
        for x, y in train:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        model.eval()
        correct, val_loss = 0, 0.0
        with torch.no_grad():
            for x, y in val:
                logits = model(x.to(device))
                val_loss += F.cross_entropy(logits, y.to(device), reduction="sum").item()
                correct += (logits.argmax(1).cpu() == y).sum().item()
        acc = correct / len(data.val)
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(val_loss / len(data.val))
    return {"train_s": times, "val_acc": acc}


class _TimedSession(LocalSession):
    """A LocalSession that notes the wall-clock time of each report (the end of an epoch)."""

    def report(self, metrics, state):
        super().report(metrics, state)
        self.reports[-1]["at"] = time.time()


def _packed_task(cfg, barrier: str, k: int):
    """One packed trial; it starts training when all k have loaded their data (a file barrier)."""
    ds = cfg["dataset"]
    dataset(ds["name"], None, False, ds.get("n_train"), ds.get("n_val"), ds.get("image_size"))
    Path(barrier, cfg["run_id"]).touch()
    while len(os.listdir(barrier)) < k:
        time.sleep(0.02)
    with tempfile.TemporaryDirectory() as tmp:
        session = _TimedSession(Path(tmp) / "ck")
        run_trial({**cfg, "store": str(Path(tmp) / "store")}, session)
    return [r["at"] for r in session.reports]


def packed(cfg: dict, counts, device, cpus: int) -> dict[int, float]:
    """Aggregate training images per wall second of k trials at once (k in ``counts``) sharing the device.

    Each trial is a Ray task with 1/k of the GPU (or of the CPUs, and that
    share of threads). Counted: every trial's images of epochs 2..E, over
    the span from the first trial's end of epoch 1 to the last trial's end
    (validation and capture included; staggered starts only lower it).
    """
    import ray

    tmp = tempfile.mkdtemp(prefix="rb", dir="/tmp")  # Ray's socket paths must stay short
    cuda = device.type == "cuda"
    ray.init(num_cpus=cpus, num_gpus=1 if cuda else 0, include_dashboard=False, _temp_dir=tmp,
             logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}})
    try:
        out = {}
        n, epochs = cfg["dataset"]["n_train"], cfg["train"]["epochs"]
        for k in counts:
            opts = {"num_gpus": 1 / k, "num_cpus": cpus / k} if cuda else {"num_cpus": cpus / k}
            task = ray.remote(**opts)(_packed_task)
            threads = 1 if cuda else max(1, cpus // k)
            barrier = tempfile.mkdtemp(prefix=f"barrier{k}-", dir=tmp)
            train = {**cfg["train"], "threads": threads}
            ends = ray.get([task.remote({**cfg, "seed": s, "run_id": f"p{s}", "train": train}, barrier, k)
                            for s in range(k)])
            span = max(e[-1] for e in ends) - min(e[0] for e in ends)
            out[k] = k * n * (epochs - 1) / span
        return out
    finally:
        ray.shutdown()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes on the CPU, about a minute")
    ap.add_argument("--compile", action="store_true", help="dynstudy path with train.compile: true")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per measured run (default 3, quick 2)")
    ap.add_argument("--workers", type=int, default=None,
                    help="reference DataLoader workers (default 4 on CUDA, 0 on CPU)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    cuda = device.type == "cuda"
    cpus = len(os.sched_getaffinity(0))
    epochs = args.epochs or (2 if args.quick else 3)
    side, n_train, n_val, probe = (16, 512, 256, 256) if args.quick else (32, 50_000, 10_000, 2048)
    ds = {"name": "synthetic", "image_size": side, "n_train": n_train, "n_val": n_val}
    workers = args.workers if args.workers is not None else (4 if cuda else 0)
    threads = 1 if cuda else cpus
    torch.set_num_threads(threads)
    name = torch.cuda.get_device_name() if cuda else f"CPU ({cpus} cores)"
    print(f"device: {name}; torch {torch.__version__}; ResNet-18, {n_train} train / {n_val} val {side}x{side} images, "
          f"batch 512, probe {probe}, {epochs} epochs per run (the first is warm-up)")

    dataset(ds["name"], None, False, n_train, n_val, side)  # generated once, outside the timings
    ref = reference_run(ds, "resnet18", epochs, 512, device, 0, workers)
    base = trial_config(None, "resnet18", ds, epochs, 512, probe, threads=threads, use_gpu=cuda, compile_=args.compile)
    off = dynstudy_run({**base, "capture": {**base["capture"], "enabled": False}})
    on = dynstudy_run(base)
    ref_ips = n_train / statistics.median(ref["train_s"][1:])
    off_ips, on_ips = (n_train / statistics.median(r["train_s"][1:]) for r in (off, on))
    cap = statistics.median(on["capture_s"][1:])
    print(f"{'path':36s} {'images/s':>9s} {'train s/epoch':>13s} {'vs reference':>12s}")
    print(f"{'reference (DataLoader, fp32)':36s} {ref_ips:9.0f} {n_train / ref_ips:13.2f} {1.0:11.2f}x")
    for label, ips in (("dynstudy, no capture", off_ips), ("dynstudy, capture every epoch", on_ips)):
        print(f"{label:36s} {ips:9.0f} {n_train / ips:13.2f} {ips / ref_ips:11.2f}x")
    epoch_s = n_train / on_ips
    print(f"capture: {cap:.3f} s per epoch = {cap / epoch_s:.1%} of the epoch's training time "
          f"(projected for a 50,000-image epoch at this rate: {cap / (50_000 / on_ips):.2%}); "
          f"wall per run with / without capture: {on['wall']:.1f} / {off['wall']:.1f} s")

    pcfg = trial_config(None, "resnet18", {**ds, "n_train": n_train // 2 if args.quick else n_train},
                        epochs + 2 if args.quick else epochs, 512 if not args.quick else 128, probe, use_gpu=cuda,
                        compile_=args.compile)
    agg = packed(pcfg, (1, 2, 4), device, cpus)
    print("packed trials on one device, aggregate images per wall second: " + ", ".join(
        f"{k}: {v:.0f} images/s ({v / agg[1]:.2f}x)" for k, v in agg.items()))

    d = DIGITS
    opt = {**SGD, "lr": d["lr"]}
    mine, theirs = [], []
    for seed in d["seeds"]:
        cfg = trial_config(None, d["model"], {"name": "digits"}, d["epochs"], d["batch"], 256, seed=seed,
                           threads=threads, use_gpu=cuda, optimizer=opt, scheduler="plateau")
        mine.append(dynstudy_run(cfg)["val_acc"])
        theirs.append(reference_run({"name": "digits"}, d["model"], d["epochs"], d["batch"], device, seed, 0,
                                    optimizer=opt, scheduler="plateau")["val_acc"])
    gap = 100 * (statistics.mean(mine) - statistics.mean(theirs))
    print(f"digits accuracy ({d['model']}, {d['epochs']} epochs, seeds {list(d['seeds'])}): dynstudy "
          f"{100 * statistics.mean(mine):.2f}%, reference {100 * statistics.mean(theirs):.2f}%, "
          f"gap {gap:+.2f} points ({'within' if abs(gap) <= 1 else 'NOT within'} 1 point)")


if __name__ == "__main__":
    main()
