"""What one run's analysis reads, whether its outputs are current, and whether it is whole.

Currency comes from content, never from clocks: each per-run output file
records the digest of the input files it was computed from (each file's
name, size and footer token, :func:`dynstudy.store_contract.scan.files_digest`, salted with
:data:`ANALYSIS_VERSION`), and a run is current when every output carries the digest its inputs
have now and every column its table's contract lists. An
analysis that overlapped a running study, a concurrent analysis or a file
restored from a backup leaves an output whose digest no longer matches, so the
next ``dynstudy analyze`` redoes that run.

A run with a gap (a capture or epoch file missing, captures not numbered
0, 1, 2, ... or epoch files that do not match ``epochs_completed``) is named
with the reason; its run-level metrics are left empty and it is kept out of
the cross-run tables.
"""
from __future__ import annotations

from dataclasses import dataclass

from dynstudy.store_contract.scan import StoreFile, StoreScan, files_digest
from dynstudy.store_contract.schemas import FILE_NAMES, INPUT_DIGEST_KEY, RUN_INPUTS, RUN_OUTPUTS, TABLES, file_numbers

#: Bumped when the analysis's outputs change for the same inputs, so every run is redone once.
ANALYSIS_VERSION = "analysis-7"  # 3: the authors' DFA scales, pandas' even windows, compat; 4: temporal protocol;
#                                  5: non-stationarity and H_eff saturation flags; 6: DFA fit diagnostics, nulls;
#                                  7: representation geometry


@dataclass(frozen=True)
class RunInputs:
    """The input files of one run's analysis and their digest."""

    run_id: str
    files: dict[str, list[StoreFile]]  # table -> files
    digest: str


def run_inputs(scan: StoreScan, run_id: str) -> RunInputs:
    """``run_id``'s input files in ``scan`` with their digest."""
    files = scan.run_files(run_id, RUN_INPUTS)
    return RunInputs(run_id, files, files_digest([f for t in RUN_INPUTS for f in files[t]], ANALYSIS_VERSION))


def is_current(scan: StoreScan, inputs: RunInputs) -> bool:
    """True when every per-run output of the run records the digest its inputs have now and has every column
    of its table's contract (an output of an analysis that predates a column is redone)."""
    outputs = scan.run_files(inputs.run_id, RUN_OUTPUTS)
    key = INPUT_DIGEST_KEY.decode()
    return all(len(outputs[t]) == 1 and outputs[t][0].metadata.get(key) == inputs.digest
               and set(TABLES[t].names) <= set(outputs[t][0].columns) for t in RUN_OUTPUTS)


def damaged_files(scan: StoreScan, run_id: str) -> list[tuple[str, str]]:
    """(path, reason) of the run's foreign files that stand where one of its input files should be.

    A truncated ``capture=000002.parquet`` is such a file; a stray ``notes.txt``
    in the run's folder is listed in unreadable_files but does not stop the run.
    """
    out = []
    for table, path, reason in scan.foreign:
        if table not in RUN_INPUTS or f"/run_id={run_id}/" not in path:
            continue
        name = path.rsplit("/", 1)[-1]
        if name.endswith(".parquet") and FILE_NAMES[table].fullmatch(name[:-len(".parquet")]):
            out.append((path, reason))
    return out


def _numbers(files: list[StoreFile], table: str) -> list[int]:
    return sorted(n for f in files for n in file_numbers(table, f.name))


def _spans(values) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``'0-2, 5, 7-8'``."""
    values, out, i = sorted(values), [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(f"{values[i]}" if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ", ".join(out) or "none"


def file_gaps(run: dict, inputs: RunInputs) -> str | None:
    """Why the run's files are not whole (None: they are).

    Captures must be numbered 0..n-1 without a gap. Epoch files must be
    1..epochs_completed; a running run may already hold the next epoch's file
    (it is written just before ``epochs_completed`` moves on).
    """
    problems = []
    captures = _numbers(inputs.files.get("activations", []), "activations")
    missing = sorted(set(range(max(captures) + 1)) - set(captures)) if captures else []
    if missing:
        problems.append(f"capture file(s) {_spans(missing)} missing (captures present: {_spans(captures)})")
    epochs = _numbers(inputs.files.get("train_metrics", []), "train_metrics")
    done = run.get("epochs_completed") or 0
    allowed = [list(range(1, done + 1))] + ([list(range(1, done + 2))] if run.get("status") == "running" else [])
    if epochs not in allowed:
        lacking = sorted(set(range(1, done + 1)) - set(epochs))
        extra = sorted(set(epochs) - set(range(1, done + 1 + (run.get("status") == "running"))))
        parts = [f"epoch file(s) {_spans(lacking)} missing"] if lacking else []
        parts += [f"epoch file(s) {_spans(extra)} beyond epochs_completed={done}"] if extra else []
        problems.append(", ".join(parts) + f" (runs says {done} epochs completed)")
    return "; ".join(problems) or None


def capture_gaps(epoch_captures: list[int], epoch_files: list[int]) -> str | None:
    """Why the end-of-epoch captures do not match the epoch files (None: they do)."""
    if sorted(epoch_captures) == sorted(epoch_files) and len(set(epoch_captures)) == len(epoch_captures):
        return None
    return (f"end-of-epoch captures for epochs {_spans(epoch_captures)} but train_metrics for "
            f"epochs {_spans(epoch_files)}")
