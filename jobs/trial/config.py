"""What a trial config holds: the fields a trial reads, checked before it starts.

Trial configs come from :func:`dynstudy.study.grid.expand`, which writes each
section of the study spec complete (every field, the spec's default where the
spec leaves one out). The trial reads them as they are: a config without a
field is an error that names it, never a default of the trial's own.
"""
from __future__ import annotations

#: Top-level keys a trial reads (besides the sections below, and the optional model_name, model_kwargs,
#: stages and analysis).
TOP_LEVEL = ("run_id", "study", "store", "model", "seed", "use_gpu")
#: Section -> the fields of it a trial reads.
SECTIONS = {
    "dataset": ("name", "root", "download", "n_train", "n_val", "image_size"),
    "optimizer": ("name", "label", "lr", "momentum", "weight_decay"),
    "train": ("epochs", "batch_size", "scheduler", "plateau_patience", "plateau_factor", "early_stopping_patience",
              "stem", "pretrained", "amp", "volatility_stopping", "stop", "threads", "compile"),
    "capture": ("probe_size", "channels_per_stage", "redraw_channels", "store_channels", "every_n_steps",
                "step_probe_size", "enabled", "batch_size"),
}


def missing_fields(config: dict) -> list[str]:
    """The fields a trial reads that ``config`` lacks, as ``section.field`` (a whole missing section as its name)."""
    missing = [key for key in TOP_LEVEL if key not in config]
    for section, fields in SECTIONS.items():
        if section not in config:
            missing.append(section)
        else:
            missing += [f"{section}.{field}" for field in fields if field not in config[section]]
    return missing


def check_config(config: dict) -> None:
    """Raise ValueError naming every field a trial reads that ``config`` lacks."""
    missing = missing_fields(config)
    if missing:
        raise ValueError(f"trial config lacks {', '.join(missing)}; configs come from dynstudy.study.grid.expand")
