"""Every table of a store and its columns: the public data contract.

A store is a directory (or an s3:// / gs:// URI) holding one folder per table,
``<store>/<table>/``, of hive-partitioned Parquet files. Worker tables and the
per-run analysis tables are partitioned by ``run_id``
(``<store>/activations/run_id=<id>/capture=000003.parquet``); the cross-run
analysis tables are one file each (``<store>/claims/part.parquet``). Columns
listed here are what users and their scripts rely on; files may carry more.
Only pyarrow is needed: workers (``jobs``) and ``analysis`` both import it.
"""
from __future__ import annotations

import json
import re

import pyarrow as pa

RUNS = pa.schema([
    ("run_id", pa.string()),
    ("study", pa.string()),
    ("model", pa.string()),
    ("dataset", pa.string()),
    ("optimizer", pa.string()),
    ("seed", pa.int64()),
    ("status", pa.string()),          # running | finished | diverged | failed
    ("stop_reason", pa.string()),     # max_epochs | early_stopping | volatility | diverged | error
    ("epochs_completed", pa.int64()),
    ("config", pa.string()),          # the full trial config, JSON
    ("versions", pa.string()),        # software versions, JSON
    ("device", pa.string()),
    ("hostname", pa.string()),
    ("started_at", pa.timestamp("us", tz="UTC")),
    ("updated_at", pa.timestamp("us", tz="UTC")),
    ("error", pa.string()),
    ("attempts", pa.int64()),         # times the trial started (1 = never retried or resumed)
])

ACTIVATIONS = pa.schema([
    ("run_id", pa.string()),
    ("capture", pa.int32()),          # 0 = initialisation, then numbered in training order
    ("kind", pa.string()),            # init | epoch (after an epoch's validation) | step (every N steps)
    ("epoch", pa.int32()),            # epochs completed when captured
    ("step", pa.int64()),             # optimiser steps completed when captured
    ("stage", pa.string()),           # e.g. layer1..layer4
    ("channel", pa.int32()),          # channel index within the stage's output
    ("rank", pa.int32()),             # position in the run's random channel order; metrics use rank < K
    ("sample", pa.int32()),           # position in the probe set (fixed, unshuffled order)
    ("label", pa.int32()),
    ("value", pa.float32()),          # global-average-pooled activation
])

TRAIN_METRICS = pa.schema([
    ("run_id", pa.string()),
    ("epoch", pa.int32()),
    ("step", pa.int64()),
    ("train_loss", pa.float64()),
    ("train_acc", pa.float64()),
    ("val_loss", pa.float64()),
    ("val_acc", pa.float64()),
    ("lr", pa.float64()),
    ("epoch_time_s", pa.float64()),
    ("capture_time_s", pa.float64()),
])

#: Tables written by workers, one folder of files per run.
WORKER_TABLES = {"runs": RUNS, "activations": ACTIVATIONS, "train_metrics": TRAIN_METRICS}


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
    ("nonstationary", pa.bool_()),    # h_raw > 1 (dynamics.NONSTATIONARY_ALPHA): the series drifts; null: no h_raw
    ("hz", pa.float64()),             # run-level z-scores over the end-of-epoch captures
    ("mz", pa.float64()),
    ("psi", pa.float64()),
    ("volatility", pa.float64()),
    # the DFA fit behind h_raw: the line through the channel-mean log F(s) (its slope is h_raw) and a two-slope fit
    ("dfa_n_scales", pa.int32()),
    ("dfa_span", pa.float64()),       # largest / smallest scale
    ("dfa_r2", pa.float64()),         # R^2 of the line (null with fewer than 3 scales)
    ("dfa_max_residual", pa.float64()),  # largest |log F - line| over the scales
    ("crossover_scale", pa.float64()),   # the two-slope fit's breakpoint (null with fewer than 5 scales)
    ("alpha_small", pa.float64()),    # its slope below the breakpoint
    ("alpha_large", pa.float64()),    # and above it
    ("dfa_scales", pa.list_(pa.int32())),       # the scales s
    ("log_f_mean", pa.list_(pa.float64())),     # log F(s) at each scale: mean over the channels with an exponent
    ("log_f_sd", pa.list_(pa.float64())),       # and its SD over them (null with one channel)
    ("fit_flags", pa.string()),       # narrow_span;poor_fit;nonstationary (dfa_fit.FIT_FLAGS); null: none
    # against the null of this capture's shape (K captures of i.i.d. noise; K = analysis.null_k; null with K = 0)
    ("null_k", pa.int32()),
    ("null_h_raw_mean", pa.float64()),
    ("null_h_raw_sd", pa.float64()),
    ("h_raw_z", pa.float64()),        # (h_raw - null mean) / null SD
    ("h_raw_p", pa.float64()),        # empirical two-sided p-value, (1 + #{as far from the null mean}) / (K + 1)
    ("null_m_mean", pa.float64()),
    ("null_m_sd", pa.float64()),
    ("m_z", pa.float64()),
    ("m_p", pa.float64()),
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
    ("reason", pa.string()),              # why the run is incomplete (a gap in its files); null: whole
    ("input_digest", pa.string()),        # digest of the input files this summary was computed from
    # flags (absent in older stores: unknown, not False); null where h_raw_mean is
    ("nonstationary", pa.bool_()),        # h_raw_mean > 1 (dynamics.NONSTATIONARY_ALPHA): the series drift
    ("n_nonstationary", pa.int32()),      # end-of-epoch captures whose h_raw > 1 (of n_epochs)
    ("h_eff_saturated", pa.bool_()),      # h_raw_mean beyond h_opt +/- 3 sigma_h: H_eff lies in a Gaussian tail
    # the end-of-epoch captures against their nulls (null with analysis.null_k = 0) and their DFA fits
    ("h_raw_z_mean", pa.float64()),       # mean of the captures' h_raw_z
    ("m_z_mean", pa.float64()),           # mean of the captures' m_z
    ("n_h_raw_beyond_null", pa.int32()),  # captures whose h_raw_p <= 0.05 (dfa_fit.BEYOND_NULL_P)
    ("n_m_beyond_null", pa.int32()),
    ("within_null", pa.bool_()),          # both counts are what chance gives (dfa_fit.within_null): noise-like
    ("n_fit_flagged", pa.int32()),        # captures whose fit is flagged narrow_span or poor_fit
    # representation geometry (geometry_metrics), stages' mean
    ("effective_rank_final", pa.float64()),  # effective rank at the last end-of-epoch capture
    ("cka_init_final", pa.float64()),        # CKA of the last end-of-epoch capture with the untrained network
    ("drift_settle_epoch", pa.int32()),      # first epoch from which CKA with the previous capture stays >= 0.98
    # the temporal protocol (null without every-N-step captures): over the run's series in training time
    ("temporal_h_raw", pa.float64()),         # mean DFA exponent over channels, whole run
    ("temporal_h_eff", pa.float64()),
    ("temporal_metastability", pa.float64()),  # Kuramoto metastability over channels, whole run
    ("temporal_trigger_step", pa.int64()),    # last step of the window where the volatility rule fires; null: never
    ("temporal_state", pa.string()),          # taxonomy state of the windows' series
    ("temporal_n_points", pa.int32()),        # captures (one per optimiser step) in the series
    ("temporal_nonstationary", pa.bool_()),   # temporal_h_raw > 1: the series over training time drift
    ("temporal_n_nonstationary", pa.int32()),  # sliding windows whose h_raw > 1
    ("temporal_h_eff_saturated", pa.bool_()),  # temporal_h_raw beyond h_opt +/- 3 sigma_h
])

CELL_VARIABILITY = pa.schema([
    ("model", pa.string()),
    ("dataset", pa.string()),
    ("optimizer", pa.string()),
    ("metric", pa.string()),
    ("n_seeds", pa.int32()),
    ("mean", pa.float64()),
    ("std", pa.float64()),
    ("cv", pa.float64()),             # std / mean; null for a metric that can change sign (or a mean of 0)
    ("ci_low", pa.float64()),         # Student's t-interval of the mean (>= 2 seeds), cut to the metric's domain
    ("ci_high", pa.float64()),
    ("ci_clipped", pa.bool_()),       # a bound of the t-interval was cut to the metric's domain
    ("modal_state", pa.string()),     # the state most seeds of the cell reach
    ("state_agreement", pa.float64()),  # share of seeds in the modal state
    ("n_runs", pa.int32()),           # finished runs of the cell; n_seeds counts those with a value (a trigger fired)
])

GEOMETRY_METRICS = pa.schema([
    ("run_id", pa.string()),
    ("capture", pa.int32()),
    ("kind", pa.string()),              # init (the untrained network) | epoch
    ("epoch", pa.int32()),
    ("stage", pa.string()),
    ("width", pa.int32()),              # the stage's stored channels the geometry used (store_channels)
    ("n_samples", pa.int32()),          # probe samples
    ("effective_rank", pa.float64()),   # RankMe: exp of the entropy of the normalised singular values
    ("participation_ratio", pa.float64()),  # (sum lambda)^2 / sum lambda^2 of the channel covariance
    ("activation_variance", pa.float64()),  # mean channel variance over the probe samples
    ("cka_prev", pa.float64()),         # debiased linear CKA with the run's previous capture of this stage
    ("cka_init", pa.float64()),         # ... with the untrained network (capture 0)
    ("cka_final", pa.float64()),        # ... with the run's last end-of-epoch capture
    ("noise_effective_rank", pa.float64()),       # i.i.d. Gaussian features of the same shape
    ("noise_participation_ratio", pa.float64()),
    ("noise_cka", pa.float64()),        # CKA of the stage with such noise: the estimator's floor
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
    ("noise_h_raw", pa.float64()),    # the noise control at the same window and probe size
    ("probe_size", pa.int32()),       # the first P samples of the probe this row used (the whole probe, or less)
    # h_raw against the null of this window and probe size (as capture_metrics; null with analysis.null_k = 0)
    ("null_h_raw_mean", pa.float64()),
    ("null_h_raw_sd", pa.float64()),
    ("h_raw_z", pa.float64()),
    ("h_raw_p", pa.float64()),
])

TEMPORAL_METRICS = pa.schema([
    ("run_id", pa.string()),
    ("window", pa.int32()),           # 0, 1, ... sliding windows in training order; -1 the whole run
    ("start_step", pa.int64()),       # optimiser steps at the window's first and last capture
    ("end_step", pa.int64()),
    ("start_epoch", pa.int32()),      # the activations' epoch of the first and last capture
    ("end_epoch", pa.int32()),
    ("n_points", pa.int32()),
    ("h_raw", pa.float64()),
    ("h_eff", pa.float64()),
    ("metastability", pa.float64()),
    ("synchrony", pa.float64()),
    ("hz", pa.float64()),             # z-scores over the run's windows (null on the whole-run row)
    ("mz", pa.float64()),
    ("psi", pa.float64()),
    ("volatility", pa.float64()),
    ("nonstationary", pa.bool_()),    # h_raw > 1 (dynamics.NONSTATIONARY_ALPHA): the series drifts; null: no h_raw
    # the DFA fit behind h_raw, as in capture_metrics
    ("dfa_n_scales", pa.int32()),
    ("dfa_span", pa.float64()),
    ("dfa_r2", pa.float64()),
    ("dfa_max_residual", pa.float64()),
    ("crossover_scale", pa.float64()),
    ("alpha_small", pa.float64()),
    ("alpha_large", pa.float64()),
    ("dfa_scales", pa.list_(pa.int32())),
    ("log_f_mean", pa.list_(pa.float64())),
    ("log_f_sd", pa.list_(pa.float64())),
    ("fit_flags", pa.string()),
])

TEMPORAL_CONTROLS = pa.schema([
    ("run_id", pa.string()),
    ("window", pa.int32()),           # as in temporal_metrics
    ("control", pa.string()),         # shuffled | phase_randomised | iaaft
    ("h_raw", pa.float64()),          # one surrogate's metrics
    ("h_eff", pa.float64()),
    ("metastability", pa.float64()),
    ("synchrony", pa.float64()),
    # the window's own h_raw and M against K surrogates of this control (K = analysis.null_k; null with K = 0)
    ("null_k", pa.int32()),
    ("null_h_raw_mean", pa.float64()),
    ("null_h_raw_sd", pa.float64()),
    ("h_raw_z", pa.float64()),
    ("h_raw_p", pa.float64()),        # empirical two-sided p-value, (1 + #{as far from the null mean}) / (K + 1)
    ("null_m_mean", pa.float64()),
    ("null_m_sd", pa.float64()),
    ("m_z", pa.float64()),
    ("m_p", pa.float64()),
])

CLAIMS = pa.schema([
    ("claim", pa.string()),           # the claim; a claim + " (on H_raw)" stands in for a saturated H_eff test
    ("model", pa.string()),
    ("optimizer", pa.string()),
    ("dataset", pa.string()),         # one dataset, or "a vs b" for the integration claim
    ("n", pa.int32()),                # runs (or seeds) the test used
    ("statistic", pa.float64()),      # Welch's t; the mean lead; the largest state count
    ("effect_size", pa.float64()),
    ("effect_name", pa.string()),
    ("ci_low", pa.float64()),         # 95% interval of effect_size (Hedges' g: noncentral t; mean lead: t), or null
    ("ci_high", pa.float64()),
    ("mean_diff", pa.float64()),      # integration: mean difference (first minus second dataset), Welch 95% interval
    ("diff_low", pa.float64()),
    ("diff_high", pa.float64()),
    ("test", pa.string()),            # the test and its interval method
    ("p_value", pa.float64()),        # the test's own p
    ("p_adjusted", pa.float64()),     # Holm within the family; null: not a test of the family
    ("family", pa.string()),          # the multiplicity family (the claim)
    ("n_tests", pa.int32()),          # tests in the family
    ("verdict", pa.string()),         # supported | not supported | insufficient seeds (needs N) | untested
                                      # | H_eff saturated
    ("n_runs", pa.int32()),           # runs of the cell (or pair) in the study
    ("n_dropped", pa.int32()),        # of those, runs the test did not use
    ("dropped", pa.string()),         # why, with counts ("1 not finished (diverged); 2 no trigger")
    ("detail", pa.string()),
    ("plateau_points", pa.float64()), # the accuracy plateau's points the analysis used (``--plateau-points``);
                                      # absent in older stores: the default, params.PLATEAU_POINTS
])

SENSITIVITY = pa.schema([
    ("parameter", pa.string()),       # h_opt | sigma_h | smooth_window | w_h | vol_threshold | probe_size
    ("value", pa.float64()),
    ("claim", pa.string()),
    ("model", pa.string()),
    ("optimizer", pa.string()),
    ("dataset", pa.string()),
    ("verdict", pa.string()),
    ("p_value", pa.float64()),        # the test's own p at this setting
    ("p_adjusted", pa.float64()),     # Holm within the claim's family at this setting
    ("default_verdict", pa.string()), # at the runs' own settings
    ("default_p_adjusted", pa.float64()),
    ("flipped", pa.bool_()),          # a real change: supported <-> not supported
    ("changed", pa.bool_()),          # any other change (to or from insufficient seeds, untested, saturated)
    ("null_flips", pa.int32()),       # real flips at this setting in the null study (dataset labels permuted)
    ("states_changed", pa.int32()),   # runs whose taxonomy state differs from the default
    ("n_runs", pa.int32()),
])

#: Tables written by ``dynstudy analyze``.
STOPPING = pa.schema([
    ("run_id", pa.string()),
    ("model", pa.string()),
    ("dataset", pa.string()),
    ("optimizer", pa.string()),
    ("seed", pa.int64()),
    ("rule", pa.string()),            # volatility | patience_loss | patience_acc | plateau_loss | budget
    ("setting", pa.string()),         # the rule's parameters, JSON
    ("stop_epoch", pa.int32()),       # null: the rule never fires (the run trains to its end)
    ("final_epoch", pa.int32()),
    ("epochs_saved", pa.int32()),     # final_epoch - stop_epoch (0 when it never fires)
    ("acc_at_stop", pa.float64()),    # val_acc of the model at the stop epoch (no best weights restored)
    ("given_up_best", pa.float64()),  # percentage points below the run's best val_acc
    ("given_up_final", pa.float64()),  # percentage points below its final epoch's val_acc
])

STOPPING_SUMMARY = pa.schema([
    ("model", pa.string()),
    ("dataset", pa.string()),
    ("optimizer", pa.string()),
    ("rule", pa.string()),
    ("selection", pa.string()),       # held_out (chosen on the other cells) | in_sample (on every cell)
    ("setting", pa.string()),         # the chosen setting, JSON; null: no other cell to choose on
    ("tolerance", pa.float64()),      # points given up against the best that a chosen setting may cost, on average
    ("met_tolerance", pa.bool_()),    # the chosen setting met it where it was chosen
    ("n_runs", pa.int32()),
    ("n_fired", pa.int32()),          # runs the rule stopped before their end
    ("epochs_saved_mean", pa.float64()),
    ("epochs_saved_low", pa.float64()),   # t-interval of the mean over the cell's runs
    ("epochs_saved_high", pa.float64()),
    ("given_up_mean", pa.float64()),      # points against the run's best
    ("given_up_low", pa.float64()),
    ("given_up_high", pa.float64()),
    ("given_up_final_mean", pa.float64()),
    ("margin", pa.float64()),         # extra points against the baseline that count as equal
    ("p", pa.float64()),              # intersection-union p: saves more epochs and is non-inferior in accuracy
    ("p_adjusted", pa.float64()),     # Holm over every rule and cell
    ("verdict", pa.string()),         # saves more | not shown | insufficient seeds (needs N) | untested | baseline
    ("detail", pa.string()),
])

SEED_AGREEMENT = pa.schema([
    ("model", pa.string()),
    ("dataset", pa.string()),
    ("optimizer", pa.string()),
    ("stage", pa.string()),
    ("epoch", pa.int32()),
    ("run_a", pa.string()),
    ("run_b", pa.string()),
    ("seed_a", pa.int64()),
    ("seed_b", pa.int64()),
    ("n_samples", pa.int32()),
    ("width_a", pa.int32()),            # stored channels of the stage in each run
    ("width_b", pa.int32()),
    ("cka", pa.float64()),              # debiased linear CKA of the two seeds' captures of the stage at this epoch
    ("shuffled_cka", pa.float64()),     # the same with run_a's probe samples in a fixed random order (control)
])

ANALYSIS_TABLES = {
    "capture_metrics": CAPTURE_METRICS,
    "run_summary": RUN_SUMMARY,
    "cell_variability": CELL_VARIABILITY,
    "controls": CONTROLS,
    "window_sensitivity": WINDOW_SENSITIVITY,
    "geometry_metrics": GEOMETRY_METRICS,
    "temporal_metrics": TEMPORAL_METRICS,
    "temporal_controls": TEMPORAL_CONTROLS,
    "claims": CLAIMS,
    "sensitivity": SENSITIVITY,
    "stopping": STOPPING,
    "stopping_summary": STOPPING_SUMMARY,
    "seed_agreement": SEED_AGREEMENT,
}
TABLES = {**WORKER_TABLES, **ANALYSIS_TABLES}

#: Analysis tables written whole (one file), not one partition per run.
UNPARTITIONED = ("cell_variability", "claims", "sensitivity", "stopping", "stopping_summary", "seed_agreement")
#: Tables with one folder ``run_id=<id>`` per run.
PARTITIONED = tuple(t for t in TABLES if t not in UNPARTITIONED)
#: Per-run tables ``dynstudy analyze`` writes; each file records the digest of its inputs.
RUN_OUTPUTS = tuple(t for t in ANALYSIS_TABLES if t not in UNPARTITIONED)
#: Worker tables whose files a run's analysis reads.
RUN_INPUTS = ("runs", "activations", "train_metrics")

#: The file names (without ``.parquet``) each table may hold; anything else is foreign.
FILE_NAMES = {
    "runs": re.compile(r"run"),
    # one capture per file, or (steps=FIRST-LAST) every-N-step captures FIRST..LAST of one epoch in one file
    "activations": re.compile(r"capture=(\d{6})|steps=(\d{6})-(\d{6})"),
    "train_metrics": re.compile(r"epoch=(\d{6})"),
    **{t: re.compile(r"part") for t in ANALYSIS_TABLES},
}

#: Columns a file must have to belong to its table (a file may lack newer optional ones).
KEY_COLUMNS = {
    "runs": ("run_id", "study", "status", "config"),
    "activations": ("run_id", "capture", "kind", "epoch", "stage", "rank", "sample", "label", "value"),
    "train_metrics": ("run_id", "epoch", "val_acc"),
    "capture_metrics": ("run_id", "capture", "kind", "epoch"),
    "run_summary": ("run_id", "status", "n_epochs"),
    "controls": ("run_id", "capture", "control"),
    "window_sensitivity": ("run_id", "capture", "smooth_window"),
    "geometry_metrics": ("run_id", "capture", "stage"),
    "temporal_metrics": ("run_id", "window", "h_raw"),
    "temporal_controls": ("run_id", "window", "control"),
    "cell_variability": ("model", "dataset", "optimizer", "metric"),
    "claims": ("claim", "verdict"),
    "sensitivity": ("parameter", "value", "claim"),
    "stopping": ("run_id", "rule", "setting"),
    "stopping_summary": ("rule", "selection", "verdict"),
    "seed_agreement": ("model", "dataset", "optimizer", "stage", "epoch", "run_a", "run_b", "cka"),
}



def file_numbers(table: str, stem: str) -> list[int]:
    """The capture (activations) or epoch (train_metrics) numbers a file named ``stem`` holds."""
    groups = [g for g in FILE_NAMES[table].fullmatch(stem).groups() if g is not None]
    return list(range(int(groups[0]), int(groups[-1]) + 1))


#: Parquet key-value metadata written into every file.
WRITE_ID_KEY = b"dynstudy.write_id"          # a fresh random id per write: two versions of a file never look alike
INPUT_DIGEST_KEY = b"dynstudy.input_digest"  # per-run analysis outputs: the digest of the inputs they came from


def schema_problem(table: str, schema: pa.Schema) -> str | None:
    """Why a file with ``schema`` does not belong to ``table`` (None: it does).

    A file belongs when it has the table's key columns and every contract
    column it has carries the contract's type; extra columns are allowed.
    """
    contract = TABLES[table]
    missing = [c for c in KEY_COLUMNS[table] if c not in schema.names]
    if missing:
        return f"foreign schema: no column {', '.join(missing)} (a {table} file has {', '.join(KEY_COLUMNS[table])})"
    for field in contract:
        if field.name in schema.names:
            got = schema.field(field.name).type
            if got != field.type:
                return f"foreign schema: column {field.name} is {got}, the contract says {field.type}"
    return None


#: Keys of a trial config (``runs.config``) that do not determine the run's result.
NOT_IDENTITY = ("store",)


def config_identity(config) -> dict:
    """The part of a trial config (dict or the ``runs.config`` JSON) that determines the run's result."""
    cfg = json.loads(config) if isinstance(config, str) else dict(config)
    return {k: v for k, v in cfg.items() if k not in NOT_IDENTITY}
