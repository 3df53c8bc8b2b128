"""Which runs of a study the store already holds, and whether they were trained as the spec says now.

A run id is a function of (study, cell, seed); what the run *is* is its whole
trial config (:func:`dynstudy.store_contract.schemas.config_identity`: every setting
but the store's location). Before Ray starts, each trial of the spec is
compared with the ``runs`` row its id already has in the store:

* new: no row yet;
* done: the same config, finished or diverged (nothing to train);
* unfinished: the same config, running or failed (``--resume`` continues it
  from its checkpoint, otherwise it starts again from scratch);
* stale: the same config, a row that says running although the run wrote
  every epoch's metrics up to ``train.epochs`` (a row a killed driver left
  behind): its row is repaired to finished, nothing is trained;
* reanalysed: only analysis settings differ (and no volatility stopping
  used them during training): the signals stay, the run's row takes the new
  settings, and ``dynstudy analyze`` redoes the run's tables;
* changed: another config under the same id. One run never holds two
  settings, so this is refused unless ``--replace``, which removes the old
  files first.

A setting that a run's row lacks because it was written by an older dynstudy
counts as that setting's default, so adding a field to the spec does not
turn every stored run into a changed one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from pyarrow import fs as pafs

from dynstudy.store_contract.files import filesystem, read_run_row, table_dir
from dynstudy.store_contract.schemas import FILE_NAMES, config_identity
from dynstudy.study.spec import AnalysisSpec, CaptureSpec, DatasetSpec, OptimizerSpec, TrainSpec

DONE_STATUSES = ("finished", "diverged")
_MISSING = object()


def _defaults() -> dict:
    """``'train.amp' -> True``: the default of every optional field of a trial config's sections."""
    out = {}
    for section, model in (("train", TrainSpec), ("capture", CaptureSpec), ("analysis", AnalysisSpec),
                           ("optimizer", OptimizerSpec), ("dataset", DatasetSpec)):
        for name, f in model.model_fields.items():
            if not f.is_required():
                out[f"{section}.{name}"] = f.get_default(call_default_factory=True)
    return out


DEFAULTS = _defaults()


def differences(old, new, prefix: str = "") -> list[str]:
    """``'train.epochs: 3 -> 2'`` for every leaf where two configs differ.

    A field absent from ``old`` (an older dynstudy wrote it) that has its
    default in ``new`` is no difference.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old and DEFAULTS.get(name, _MISSING) == new[key]:
                continue
            if key not in old:
                out.append(f"{name}: (absent) -> {json.dumps(new[key])}")
            elif key not in new:
                out.append(f"{name}: {json.dumps(old[key])} -> (absent)")
            else:
                out += differences(old[key], new[key], name)
        return out
    return [] if old == new else [f"{prefix}: {json.dumps(old)} -> {json.dumps(new)}"]


@dataclass
class StudyPlan:
    """The trials of a spec, sorted by what the store already holds of them."""

    new: list[dict] = field(default_factory=list)
    done: list[dict] = field(default_factory=list)
    unfinished: list[dict] = field(default_factory=list)
    changed: list[tuple[dict, list[str]]] = field(default_factory=list)  # (trial, differences)
    reanalysed: list[tuple[dict, list[str]]] = field(default_factory=list)  # only analysis settings differ
    stale: list[dict] = field(default_factory=list)                     # every epoch written, row says running
    rows: dict[str, dict] = field(default_factory=dict)                # run_id -> existing runs row

    def refusal(self, limit: int = 5) -> str:
        """The message that refuses changed runs, naming them and what differs."""
        lines = [f"{len(self.changed)} run(s) of this study already in the store were trained with other settings; "
                 "one run never holds two settings:"]
        for trial, diffs in self.changed[:limit]:
            lines.append(f"  - {trial['run_id']}: {'; '.join(diffs[:6])}{' ...' if len(diffs) > 6 else ''}")
        if len(self.changed) > limit:
            lines.append(f"  - ... and {len(self.changed) - limit} more")
        lines.append("rerun with --replace to remove their old files and retrain them, or give the study another name")
        return "\n".join(lines)


def analysis_only(diffs: list[str], old: dict, new: dict) -> bool:
    """True when only ``analysis.*`` settings differ and neither config stopped training on them."""
    stopping = [(c.get("train") or {}).get("volatility_stopping", False) for c in (old, new)]
    return all(d.startswith("analysis.") for d in diffs) and not any(stopping)


def epochs_written(store: str, run_id: str) -> set[int]:
    """The epochs whose ``train_metrics`` file ``run_id`` has in ``store``."""
    fs, inner = filesystem(table_dir(store, "train_metrics", run_id))
    infos = fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True))
    names = (i.base_name.removesuffix(".parquet") for i in infos
             if i.type == pafs.FileType.File and i.base_name.endswith(".parquet"))
    return {int(m.group(1)) for m in map(FILE_NAMES["train_metrics"].fullmatch, names) if m}


def is_stale(row: dict, trial: dict, store: str) -> bool:
    """True when ``row`` says running but the run has every epoch's metrics up to ``train.epochs``."""
    epochs = trial["train"]["epochs"]
    return (row["status"] == "running" and (row.get("epochs_completed") or 0) >= epochs
            and epochs_written(store, trial["run_id"]) >= set(range(1, epochs + 1)))


def plan_study(trials: list[dict], store: str) -> StudyPlan:
    """Sort ``trials`` by the runs rows their ids have in ``store``."""
    plan = StudyPlan()
    for trial in trials:
        row = read_run_row(store, trial["run_id"])
        if row is None:
            plan.new.append(trial)
            continue
        plan.rows[trial["run_id"]] = row
        old = config_identity(row["config"] or "{}")
        diffs = differences(old, config_identity(trial))
        if diffs and analysis_only(diffs, old, trial):
            plan.reanalysed.append((trial, diffs))
            diffs = []
        if diffs:
            plan.changed.append((trial, diffs))
        elif row["status"] in DONE_STATUSES:
            plan.done.append(trial)
        elif is_stale(row, trial, store):
            plan.stale.append(trial)
        else:
            plan.unfinished.append(trial)
    return plan
