"""Study specs: one typed, validated description of a multi-seed study.

A spec is YAML (or a preset name) with the axes ``models x datasets x
optimizers x seeds`` and the settings every trial shares. Every default is the
paper protocol's (``../shared/SPEC.md``) unless the field says otherwise.
Validation happens before Ray starts: a bad field raises :class:`SpecError`
whose message names the field, the bad value and what is allowed.
"""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dynstudy.analysis.kernels.params import DEFAULTS as D
from dynstudy.jobs.capture.settings import CAPTURE_DEFAULTS as C
from dynstudy.jobs.capture.settings import probe_length_problem, settings_problem
from dynstudy.jobs.models.names import MODEL_NAMES
from dynstudy.store_contract.files import check_store_uri
from dynstudy.study.spec_models import ModelEntry, ModelSpec, check_stage_names
from dynstudy.study.spec_yaml import SpecYAMLError, load_yaml, read_spec_file
from dynstudy.study.tracking_spec import TrackingSpec

__all__ = ["MODEL_NAMES", "ModelSpec", "SpecError", "StudySpec", "load_spec", "parse_spec", "preset_names"]
DATASET_NAMES = ("digits", "synthetic", "cifar10", "cifar100", "imagefolder")
#: Datasets that are read from a local root (or downloaded into it).
ROOTED_DATASETS = ("cifar10", "cifar100", "imagefolder")
DEFAULT_STORE = "dynstudy-store"
#: Study names: they name a folder in the store, so never '.' or '..'.
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
#: Optimizer labels: they are one '-'-separated part of a run id.
_LABEL_RE = re.compile(r"[A-Za-z0-9_.]+")
#: Longest repr of a bad value an error message shows.
REPR_LIMIT = 200
#: Most validation errors one message lists.
MAX_ERROR_LINES = 20


class SpecError(ValueError):
    """A study spec that cannot run; the message says which field and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Strict):
    name: Literal["digits", "synthetic", "cifar10", "cifar100", "imagefolder"]
    root: Optional[str] = Field(None, description="local data root (CIFAR, ImageFolder)")
    download: bool = Field(False, description="download CIFAR into root when online")
    n_train: Optional[int] = Field(None, ge=1, description="use only the first n training images")
    n_val: Optional[int] = Field(None, ge=1, description="use only the first n validation images")
    image_size: Optional[int] = Field(None, ge=4, description="ImageFolder resize target")

    @model_validator(mode="after")
    def _root_needed(self) -> "DatasetSpec":
        if self.name == "imagefolder" and not self.root:
            raise ValueError("imagefolder needs 'root': a folder with train/ and val/ class folders")
        if self.name in ("cifar10", "cifar100") and not self.root and not self.download:
            raise ValueError(f"{self.name} needs 'root' (an extracted copy) or 'download: true' on an online machine")
        if self.root and not self.download and not Path(self.root).expanduser().exists():
            raise ValueError(f"data root {self.root!r} does not exist; point 'root' at the extracted data")
        return self


class OptimizerSpec(_Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    label: Optional[str] = Field(None, description="name of this optimiser in cells and run ids (default: name)")
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)

    @property
    def cell_label(self) -> str:
        return self.label or self.name

    @field_validator("label")
    @classmethod
    def _label_chars(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not _LABEL_RE.fullmatch(v):
            raise ValueError("use ASCII letters, digits, '_' and '.' only")
        return v


class StopSpec(_Strict):
    """``train.stop``: a stopping rule of :mod:`dynstudy.analysis.kernels.stopping_rules` with every one of its
    parameters, decided after every epoch (the run's ``stop_reason`` is the rule's name)."""

    rule: str = Field(description="volatility | patience_loss | patience_acc | plateau_loss | budget")
    params: dict = Field(description="the rule's parameters, all of them (dynstudy stopping --runs shows settings)")

    @model_validator(mode="after")
    def _rule_and_params(self) -> "StopSpec":
        from dynstudy.analysis.kernels.stopping_rules import COUNT_PARAMS, RULE_PARAMS

        if self.rule not in RULE_PARAMS:
            raise ValueError(f"train.stop.rule={self.rule!r} is not a stopping rule; use one of "
                             f"{', '.join(RULE_PARAMS)}")
        need = RULE_PARAMS[self.rule]
        missing, unknown = [k for k in need if k not in self.params], sorted(set(self.params) - set(need))
        if missing or unknown:
            raise ValueError(f"train.stop.params for rule {self.rule!r} must set exactly {', '.join(need)}"
                             + (f"; missing {', '.join(missing)}" if missing else "")
                             + (f"; unknown {', '.join(unknown)}" if unknown else ""))
        for k, v in self.params.items():
            if k in COUNT_PARAMS and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"train.stop.params.{k}={v!r} is invalid: use an integer >= 1")
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"train.stop.params.{k}={v!r} is invalid: use a number >= 0")
        return self


class TrainSpec(_Strict):
    epochs: int = Field(100, ge=1, description="maximum epochs")
    batch_size: int = Field(512, ge=1)
    scheduler: Literal["plateau", "cosine", "none"] = "plateau"
    plateau_patience: int = Field(5, ge=0)
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    early_stopping_patience: Optional[int] = Field(10, ge=1, description="epochs without val-loss gain; null = off")
    stem: Literal["stock", "cifar"] = "stock"
    pretrained: Optional[str] = Field(None, description="null (from scratch), a local weights file, or 'hub'")
    amp: bool = Field(True, description="bf16 autocast and channels_last on GPU (ignored on CPU)")
    volatility_stopping: bool = Field(False, description="stop when the Psi-volatility rule fires (opt-in)")
    stop: Optional[StopSpec] = Field(None, description="a stopping rule decided after every epoch, e.g. {rule: "
                                                       "patience_acc, params: {patience: 5, min_delta: 0.0}}")
    threads: int = Field(1, ge=1, description="torch CPU threads per trial")
    compile: bool = Field(False, description="torch.compile the network, once per worker process and model shape "
                                            "(reused by the trials that process runs); the first epoch pays the "
                                            "compile time")
    function: Optional[str] = Field(None, description="train each run with this function of yours, "
                                    "'package.module:function', called with a dynstudy.jobs.trial.user_function."
                                    "TrialContext (null: the built-in trainer)")

    @field_validator("function")
    @classmethod
    def _function_ref(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v):
            raise ValueError(f"{v!r}: name the function as package.module:function (e.g. mylab.train:main)")
        return v

    @field_validator("pretrained")
    @classmethod
    def _weights_exist(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and v != "hub" and not Path(v).expanduser().is_file():
            raise ValueError(f"weights file {v!r} not found; give a local file, 'hub' (online machines), or null")
        return v


class CaptureSpec(_Strict):
    probe_size: int = Field(C["probe_size"], ge=2, description="first P validation images, fixed order")
    channels_per_stage: int = Field(C["channels_per_stage"], ge=1)
    redraw_channels: bool = Field(C["redraw_channels"],
                                  description="re-draw the channel subset at every capture (the authors' code)")
    store_channels: Union[int, Literal["all"], None] = Field(
        C["store_channels"],
        description="channels stored per stage (>= channels_per_stage, or 'all'); null = channels_per_stage")
    every_n_steps: Optional[int] = Field(C["every_n_steps"], ge=1, description="also capture every N optimiser "
                                         "steps (the temporal protocol's series over training time)")
    step_probe_size: int = Field(C["step_probe_size"], ge=2, description="every-N-step captures keep the first P_t "
                                                                         "probe images and the metric channels only")
    enabled: bool = Field(C["enabled"], description="false only to measure capture overhead: nothing can be analysed")
    batch_size: int = Field(C["batch_size"], ge=1)

    @model_validator(mode="after")
    def _settings_agree(self) -> "CaptureSpec":
        problem = settings_problem(self.model_dump())
        if problem:
            raise ValueError(problem)
        return self


class AnalysisSpec(_Strict):
    """The spec's ``analysis`` section: the settings of :class:`dynstudy.analysis.kernels.params.AnalysisParams`,
    with their defaults from there and the bounds a value must respect."""

    smooth_window: int = Field(D.smooth_window, ge=1)
    h_opt: float = D.h_opt
    sigma_h: float = Field(D.sigma_h, gt=0)
    w_h: float = Field(D.w_h, ge=0, le=1)
    min_scale: int = Field(D.min_scale, ge=4)
    n_scales: int = Field(D.n_scales, ge=2)
    vol_window: int = Field(D.vol_window, ge=2)
    vol_threshold: float = Field(D.vol_threshold, gt=0)
    vol_patience: int = Field(D.vol_patience, ge=1)
    temporal_window: int = Field(D.temporal_window, ge=2, description="temporal protocol: captures per sliding window")
    temporal_stride: int = Field(D.temporal_stride, ge=1,
                                 description="temporal protocol: captures between window starts")
    null_k: int = Field(D.null_k, ge=0, le=999, description="simulations per null distribution (0: none)")
    compat: Literal["dynstudy", "authors"] = Field(
        D.compat, description="channel aggregation: 'dynstudy' (H_raw over the channels with an exponent, dead "
                                "channels out of the Kuramoto order) or 'authors' (their code: all-channel mean, "
                                "missing if any channel has no exponent; dead channels at phase 0)")

    @model_validator(mode="after")
    def _temporal_window_has_scales(self) -> "AnalysisSpec":
        from dynstudy.analysis.kernels.dynamics import dfa_scales

        if len(dfa_scales(self.temporal_window, self.min_scale, self.n_scales)) < 2:
            fit = next(n for n in range(self.temporal_window, 100 * self.min_scale)
                       if len(dfa_scales(n, self.min_scale, self.n_scales)) >= 2)
            raise ValueError(f"analysis.temporal_window={self.temporal_window} gives fewer than two DFA scales from "
                             f"analysis.min_scale={self.min_scale}: use {fit} or more")
        return self


class ResourceSpec(_Strict):
    cpus_per_trial: float = Field(1, gt=0)
    gpus_per_trial: float = Field(0, ge=0)
    max_concurrent_trials: Optional[int] = Field(None, ge=1)
    max_failures: int = Field(2, ge=0, description="retries of a failed trial, from its last checkpoint")


class CellMatch(_Strict):
    models: Optional[list[str]] = None
    datasets: Optional[list[str]] = None


class Override(_Strict):
    """Settings for the cells that ``match`` selects, over the study's own.

    The paper trained VGG-16-BN with lr 0.01 and DenseNet-121 with weight
    decay 1e-4, for example; overrides express that in one spec.
    """

    match: CellMatch
    stages: Optional[list[str]] = Field(None, min_length=1, description="module names to capture in these cells")
    optimizer: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    capture: dict[str, Any] = Field(default_factory=dict)
    analysis: dict[str, Any] = Field(default_factory=dict)

    def applies(self, model: str, dataset: str) -> bool:
        m = self.match
        return (m.models is None or model in m.models) and (m.datasets is None or dataset in m.datasets)

    @field_validator("stages")
    @classmethod
    def _stage_names(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        return check_stage_names(v)


class StudySpec(_Strict):
    name: str
    description: str = ""
    models: list[ModelEntry] = Field(min_length=1)
    datasets: list[DatasetSpec] = Field(min_length=1)
    optimizers: list[OptimizerSpec] = Field(default_factory=lambda: [OptimizerSpec()], min_length=1)
    seeds: list[int] = Field(min_length=1)
    train: TrainSpec = TrainSpec()
    capture: CaptureSpec = CaptureSpec()
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)  # built when asked: its check imports the kernels
    resources: ResourceSpec = ResourceSpec()
    overrides: list[Override] = Field(default_factory=list)
    tracking: TrackingSpec = Field(TrackingSpec(), description="experiment trackers each run logs to "
                                                               "(docs/trackers.md)")
    store: str = DEFAULT_STORE

    @field_validator("name")
    @classmethod
    def _name_chars(cls, v: str) -> str:
        if not _NAME_RE.fullmatch(v) or v in (".", ".."):
            raise ValueError("use ASCII letters, digits, '_', '-' and '.' only, and not '.' or '..'")
        return v

    @field_validator("models")
    @classmethod
    def _unique_models(cls, v: list[ModelSpec]) -> list[ModelSpec]:
        _unique([m.cell_label for m in v], "models (labels; give two entries of one model different labels)")
        return v

    @property
    def model_labels(self) -> list[str]:
        """The models' cell labels, in spec order."""
        return [m.cell_label for m in self.models]

    def cell_stages(self, model: ModelSpec, dataset: str) -> Optional[list[str]]:
        """The stages the spec names for one cell: the last override that names some, else the model entry's."""
        stages = model.stages
        for ov in self.overrides:
            if ov.stages is not None and ov.applies(model.cell_label, dataset):
                stages = ov.stages
        return stages

    @field_validator("datasets", mode="before")
    @classmethod
    def _names_to_dicts(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": d} if isinstance(d, str) else d for d in v]
        return v

    @field_validator("seeds", mode="before")
    @classmethod
    def _integer_seeds(cls, v: Any) -> Any:
        if isinstance(v, list):
            bad = [s for s in v if isinstance(s, bool) or not isinstance(s, int) or s < 0]
            if bad:
                raise ValueError(f"seeds must be non-negative integers; got {_short_repr(bad)}")
            _unique(v, "seeds")
        return v

    @field_validator("store")
    @classmethod
    def _store_scheme(cls, v: str) -> str:
        check_store_uri(v)
        return v

    def cell_settings(self, model: str, dataset: str, optimizer: OptimizerSpec) -> dict:
        """The optimizer/train/capture/analysis settings of one cell, overrides applied in order."""
        parts = {"optimizer": optimizer, "train": self.train, "capture": self.capture, "analysis": self.analysis}
        for ov in self.overrides:
            if ov.applies(model, dataset):
                for key in parts:
                    patch = getattr(ov, key)
                    if patch:
                        parts[key] = type(parts[key]).model_validate({**parts[key].model_dump(), **patch})
        return parts

    @model_validator(mode="after")
    def _overrides_valid(self) -> "StudySpec":
        for i, ov in enumerate(self.overrides):
            for axis, known in (("models", self.model_labels), ("datasets", [d.name for d in self.datasets])):
                bad = [v for v in (getattr(ov.match, axis) or []) if v not in known]
                if bad:
                    raise ValueError(f"overrides.{i}.match.{axis}: {_short_repr(bad)} not in the study's {axis} "
                                     f"{_short_repr(known)}")
            for model in self.model_labels:
                for ds in self.datasets:
                    if not ov.applies(model, ds.name):
                        continue
                    for opt in self.optimizers:
                        try:
                            self.cell_settings(model, ds.name, opt)
                        except ValidationError as err:
                            first = err.errors()[0]
                            raise ValueError(f"overrides.{i}: {'.'.join(map(str, first['loc']))}: "
                                             f"{first['msg']} (got {_short_repr(first.get('input'))})") from None
        return self

    @model_validator(mode="after")
    def _cells_unique(self) -> "StudySpec":
        _unique([o.cell_label for o in self.optimizers], "optimizers (labels)")
        _unique([d.name for d in self.datasets], "datasets")
        problem = probe_length_problem(self.capture.probe_size, self.analysis.min_scale)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def n_trials(self) -> int:
        return len(self.models) * len(self.datasets) * len(self.optimizers) * len(self.seeds)


def _unique(values: list, field: str) -> list:
    seen, dup = set(), []
    for v in values:
        if v in seen:
            dup.append(v)
        seen.add(v)
    if dup:
        raise ValueError(f"{field} must be unique; repeated: {_short_repr(dup)}")
    return values


def _short_repr(value: Any, limit: int = REPR_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters plus "…", without building the rest.

    A spec's lists and dicts can be huge, or share their parts a billion times
    over (YAML aliases), so a full ``repr`` could take minutes and gigabytes.
    """
    out, size = [], 0
    for chunk in _repr_chunks(value, limit):
        out.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    text = "".join(out)
    return text if len(text) <= limit else text[:limit] + "…"


def _repr_chunks(value: Any, limit: int):
    """The pieces of ``repr(value)``, lists and dicts lazily, long strings cut short."""
    if type(value) in (list, dict):
        is_dict = type(value) is dict
        yield "{" if is_dict else "["
        for i, item in enumerate(value.items() if is_dict else value):
            if i:
                yield ", "
            if is_dict:
                yield from _repr_chunks(item[0], limit)
                yield ": "
                item = item[1]
            yield from _repr_chunks(item, limit)
        yield "}" if is_dict else "]"
    elif isinstance(value, str) and len(value) > limit:
        yield repr(value[:limit])
    else:
        yield repr(value)


def _format_errors(err: ValidationError, source: str) -> str:
    """One line per validation error (at most :data:`MAX_ERROR_LINES`): field, problem, bad value."""
    lines = [f"invalid study spec {source}:"]
    errors = err.errors()
    for e in errors[:MAX_ERROR_LINES]:
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        shown = "" if isinstance(got, (dict, list)) and e["type"] != "extra_forbidden" else f" (got {_short_repr(got)})"
        if e["type"] == "extra_forbidden":
            msg = "unknown field; check its spelling against the spec reference (docs/spec.md)"
        lines.append(f"  - {loc}: {msg}{shown}")
    if len(errors) > MAX_ERROR_LINES:
        lines.append(f"  … and {len(errors) - MAX_ERROR_LINES} more; fix these first")
    return "\n".join(lines)


def preset_names() -> list[str]:
    """Names of the specs shipped in ``study/presets``."""
    files = resources.files("dynstudy.study.presets").iterdir()
    return sorted(p.name.removesuffix(".yaml") for p in files if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    return resources.files("dynstudy.study.presets").joinpath(f"{name}.yaml").read_text()


def parse_spec(data: Any, source: str = "<dict>") -> StudySpec:
    """Validate a mapping as a :class:`StudySpec`, or raise :class:`SpecError`."""
    if not isinstance(data, dict) or not data:
        raise SpecError(f"invalid study spec {source}: expected a non-empty YAML mapping with name, models, "
                        "datasets, seeds")
    try:
        return StudySpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_errors(err, source)) from None
    except RecursionError:
        raise SpecError(_too_deep(source)) from None


def _too_deep(source: str) -> str:
    """The message for input nested past Python's recursion limit."""
    return (f"invalid study spec {source}: nested too deeply to read (Python's recursion limit); "
            "a spec needs only a few levels")


def load_spec(ref: str, overrides: Optional[dict] = None) -> StudySpec:
    """Load a spec from a YAML path or a preset name, apply top-level overrides.

    Parameters
    ----------
    ref : str
        Path to a YAML file, or the name of a preset (``dynstudy presets``).
    overrides : dict, optional
        Top-level fields to replace before validation (e.g. ``{"store": ...}``).
    """
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SpecError(f"spec file {ref!r} not found; give a YAML path or one of the presets: "
                            f"{', '.join(preset_names())}")
        source = str(path)
        data = _read_yaml(source, lambda: read_spec_file(path))
    elif ref in preset_names():
        source = f"preset {ref!r}"
        data = _read_yaml(source, lambda: preset_text(ref))
    else:
        raise SpecError(f"{ref!r} is neither a spec file nor a preset; presets: {', '.join(preset_names())}")
    if overrides and isinstance(data, dict):
        data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return parse_spec(data, source)


def _read_yaml(source: str, read_text) -> Any:
    """The data of the YAML ``read_text()`` returns (limits: :mod:`dynstudy.study.spec_yaml`); failures are
    SpecErrors."""
    try:
        return load_yaml(read_text())
    except SpecYAMLError as err:
        raise SpecError(f"invalid study spec {source}: {err}") from None
    except RecursionError:
        raise SpecError(_too_deep(source)) from None
    except OSError as err:
        raise SpecError(f"spec file {source} cannot be read: {err.strerror or err}") from None
    except (yaml.YAMLError, ValueError) as err:
        raise SpecError(f"invalid study spec {source}: not valid YAML: {err}") from None
