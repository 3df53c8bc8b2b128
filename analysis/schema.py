"""The store's tables and their columns: the public data contract.

A store is a directory (or an s3:// / gs:// URI) holding one folder per table,
``<store>/<table>/``, of hive-partitioned Parquet files. Worker tables are
partitioned by ``run_id`` (``<store>/activations/run_id=<id>/capture=00003.parquet``);
analysis tables are written whole by ``dynstudy analyze``. Columns listed here
are what users and their scripts rely on; files may carry more.

The worker tables (runs, activations, train_metrics) are defined by their
writer, :mod:`jobs.store`; this module adds the tables ``dynstudy analyze``
writes. Only pyarrow is needed.
"""
from __future__ import annotations

import pyarrow as pa

from jobs.store import ACTIVATIONS, RUNS, TRAIN_METRICS, WORKER_TABLES  # noqa: F401  (re-exported: all tables here)

CAPTURE_METRICS = pa.schema([
    ("run_id", pa.string()),
    ("capture", pa.int32()),
    ("kind", pa.string()),            # init | epoch | step
    ("epoch", pa.int32()),
    ("step", pa.int64()),
    ("h_raw", pa.float64()),
    ("h_eff", pa.float64()),
    ("metastability", pa.float64()),
    ("synchrony", pa.float64()),
    ("n_channels", pa.int32()),
    ("n_valid", pa.int32()),          # channels with a defined DFA exponent
    ("reason", pa.string()),          # why h_raw is missing, if it is
    ("hz", pa.float64()),             # run-level z-scores over the end-of-epoch captures
    ("mz", pa.float64()),
    ("psi", pa.float64()),
    ("volatility", pa.float64()),
])

RUN_SUMMARY = pa.schema([
    ("run_id", pa.string()),
    ("study", pa.string()),
    ("model", pa.string()),
    ("dataset", pa.string()),
    ("optimizer", pa.string()),
    ("seed", pa.int64()),
    ("status", pa.string()),
    ("n_epochs", pa.int32()),
    ("h_raw_mean", pa.float64()),
    ("h_eff_mean", pa.float64()),
    ("metastability_mean", pa.float64()),
    ("synchrony_mean", pa.float64()),
    ("psi_mean", pa.float64()),
    ("psi_std", pa.float64()),
    ("r_hz_mz", pa.float64()),
    ("r_psi_acc", pa.float64()),
    ("state", pa.string()),
    ("trigger_epoch", pa.int32()),    # null: the volatility rule never fired
    ("best_val_acc", pa.float64()),
    ("best_epoch", pa.int32()),
    ("final_val_acc", pa.float64()),
    ("noise_h_raw_mean", pa.float64()),   # noise control, same pipeline
    ("order_h_raw_mean", pa.float64()),   # order control, same pipeline
    ("init_h_raw", pa.float64()),         # init control: the epoch-0 capture
])

CELL_VARIABILITY = pa.schema([
    ("model", pa.string()),
    ("dataset", pa.string()),
    ("optimizer", pa.string()),
    ("metric", pa.string()),
    ("n_seeds", pa.int32()),
    ("mean", pa.float64()),
    ("std", pa.float64()),
    ("cv", pa.float64()),
    ("ci_low", pa.float64()),
    ("ci_high", pa.float64()),
    ("boot_low", pa.float64()),       # percentile bootstrap interval of the mean (>= 3 seeds)
    ("boot_high", pa.float64()),
    ("modal_state", pa.string()),     # the state most seeds of the cell reach
    ("state_agreement", pa.float64()),  # share of seeds in the modal state
])

CONTROLS = pa.schema([
    ("run_id", pa.string()),
    ("capture", pa.int32()),
    ("epoch", pa.int32()),
    ("kind", pa.string()),
    ("control", pa.string()),         # noise | order | channel_draw (the init control is capture 0)
    ("h_raw", pa.float64()),
    ("h_eff", pa.float64()),
    ("metastability", pa.float64()),
    ("synchrony", pa.float64()),
    ("spread", pa.float64()),         # channel_draw: std of h_raw over the re-drawn subsets
])

WINDOW_SENSITIVITY = pa.schema([
    ("run_id", pa.string()),
    ("capture", pa.int32()),
    ("kind", pa.string()),
    ("epoch", pa.int32()),
    ("smooth_window", pa.int32()),
    ("h_raw", pa.float64()),
    ("metastability", pa.float64()),
    ("noise_h_raw", pa.float64()),    # the noise control at the same window
])

CLAIMS = pa.schema([
    ("claim", pa.string()),
    ("model", pa.string()),
    ("optimizer", pa.string()),
    ("dataset", pa.string()),         # one dataset, or "a vs b" for the integration claim
    ("n", pa.int32()),                # runs (or seeds) the test used
    ("statistic", pa.float64()),
    ("effect_size", pa.float64()),
    ("effect_name", pa.string()),
    ("p_value", pa.float64()),
    ("verdict", pa.string()),         # supported | not supported | untested
    ("detail", pa.string()),
])

SENSITIVITY = pa.schema([
    ("parameter", pa.string()),       # h_opt | sigma_h | smooth_window | w_h
    ("value", pa.float64()),
    ("claim", pa.string()),
    ("model", pa.string()),
    ("optimizer", pa.string()),
    ("dataset", pa.string()),
    ("verdict", pa.string()),
    ("default_verdict", pa.string()), # at the runs' own settings
    ("flipped", pa.bool_()),
    ("states_changed", pa.int32()),   # runs whose taxonomy state differs from the default
    ("n_runs", pa.int32()),
])

#: Tables written by ``dynstudy analyze``.
ANALYSIS_TABLES = {
    "capture_metrics": CAPTURE_METRICS,
    "run_summary": RUN_SUMMARY,
    "cell_variability": CELL_VARIABILITY,
    "controls": CONTROLS,
    "window_sensitivity": WINDOW_SENSITIVITY,
    "claims": CLAIMS,
    "sensitivity": SENSITIVITY,
}
TABLES = {**WORKER_TABLES, **ANALYSIS_TABLES}
