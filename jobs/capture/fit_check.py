"""Does each cell's capture fit its data and its model? Checked before Ray starts, and again in the trial.

A probe larger than the validation split, or a channel count larger than a
stage's width, would have to shrink while ``runs.config`` recorded the
request. :func:`check_trials_fit` refuses such a spec before any trial starts,
from the splits' known sizes and each model's stage widths (one forward pass
of a dummy image); :func:`capture_problem` is the rule, which the trial
applies again to the data and model it really has.
"""
from __future__ import annotations

from pathlib import Path

#: Validation images of the built-in datasets (before ``n_val``).
VALIDATION_SIZES = {"digits": 360, "synthetic": 512, "cifar10": 10000, "cifar100": 10000}
#: (channels, side) of the built-in datasets' images; imagefolder's side is its image_size (default 64).
GEOMETRY = {"digits": (1, 8), "synthetic": (3, 16), "cifar10": (3, 32), "cifar100": (3, 32), "imagefolder": (3, 64)}


def capture_problem(cap: dict, dataset: str, n_val: int | None, widths: list[tuple[str, int]]) -> str | None:
    """Why ``cap`` (a trial's capture settings) does not fit (None: it does).

    Parameters
    ----------
    cap : the capture section of a trial config.
    dataset : the dataset's name, for the message.
    n_val : validation images available (None: unknown, not checked).
    widths : (stage, channels of its pooled output) of the model.
    """
    if n_val is not None and cap["probe_size"] > n_val:
        return (f"capture.probe_size={cap['probe_size']} but {dataset} has {n_val} validation images; "
                f"set capture.probe_size <= {n_val} (or dataset n_val higher)")
    stored = cap.get("store_channels")
    want = max(cap["channels_per_stage"], stored if isinstance(stored, int) else 0)
    narrow = [(name, width) for name, width in widths if width < want]
    if not narrow:
        return None
    field = "channels_per_stage" if cap["channels_per_stage"] == want else "store_channels"
    fix = " or 'all'" if field == "store_channels" else " (the narrowest stage's width)"
    return (f"capture.{field}={want} but stage(s) {', '.join(f'{n} ({w} channels)' for n, w in narrow)} "
            f"have fewer; set capture.{field} <= {min(w for _, w in narrow)}{fix}, or name wider stages "
            "(stages: [...] of the model entry or an override)")


def validation_size(ds: dict) -> int | None:
    """Validation images a dataset config yields, without loading it (None: unknown)."""
    name, n_val = ds["name"], ds.get("n_val")
    if name == "synthetic":
        return n_val or VALIDATION_SIZES[name]
    size = VALIDATION_SIZES.get(name)
    if name == "imagefolder" and ds.get("root"):
        val = Path(ds["root"]).expanduser() / "val"
        size = sum(1 for p in val.rglob("*") if p.is_file()) if val.is_dir() else None
    if size is None:
        return None
    return min(size, n_val) if n_val else size


def check_trials_fit(trials: list[dict]) -> None:
    """Raise ValueError naming every cell whose model cannot be captured (stages that do not exist, do not fire
    once, or a forward pass that fails on the data's images) or whose capture settings its data or model cannot
    give."""
    from dynstudy.jobs.models.registry import ModelDef, stage_widths  # torch: only where training is installed

    problems, widths = {}, {}
    for t in trials:
        ds, cap, md = t["dataset"], t["capture"], ModelDef.of(t)
        key = (md.key, ds["name"], ds.get("image_size"), t["train"].get("stem", "stock"))
        if key not in widths:
            chans, side = GEOMETRY[ds["name"]]
            try:
                widths[key] = stage_widths(md, chans, ds.get("image_size") or side, key[3])
            except ValueError as err:
                widths[key] = str(err)
        problem = widths[key] if isinstance(widths[key], str) else capture_problem(
            cap, ds["name"], validation_size(ds), widths[key])
        if problem:
            problems.setdefault(f"{t['model']} x {ds['name']}", problem)
    if problems:
        raise ValueError("invalid study spec: " + "; ".join(f"{cell}: {p}" for cell, p in problems.items()))
