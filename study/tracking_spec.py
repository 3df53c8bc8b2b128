"""The ``tracking`` section of a study spec: which experiment trackers each run logs to while it trains.

```yaml
tracking:
  mlflow: {tracking_uri: http://mlflow:5000, experiment: my-study}   # or file:///abs/mlruns
  wandb: {project: my-study, mode: offline}
  aim: {repo: /data/aim}
  tensorboard: true                            # or {logdir: /data/tb}
```

Only the text is checked here. :func:`check_tracker_packages` names a tracker whose package this install lacks,
with the extra that brings it; ``dynstudy run`` calls it before Ray starts. What each tracker receives and under
which names: :mod:`dynstudy.study.tracker_names` and ``docs/trackers.md``.
"""
from __future__ import annotations

import importlib.util
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Tracker -> (the module it needs, the dynstudy extra that installs it).
TRACKER_PACKAGES = {"mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb"), "aim": ("aim", "aim"),
                    "tensorboard": ("tensorboardX", "tensorboard")}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MLflowTracking(_Strict):
    tracking_uri: Optional[str] = Field(None, description="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                                                          "MLflow's own default)")
    experiment: Optional[str] = Field(None, description="MLflow experiment name (default: the study's name)")

    @field_validator("tracking_uri")
    @classmethod
    def _uri_form(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not v.strip():
            raise ValueError("empty: give a URI (http://host:5000, file:///abs/path, sqlite:///mlflow.db) or leave it "
                             "out to use $MLFLOW_TRACKING_URI")
        return v


class WandbTracking(_Strict):
    project: Optional[str] = Field(None, min_length=1, description="W&B project (default: the study's name)")
    entity: Optional[str] = Field(None, description="W&B entity (team or user; default: the API key's)")
    mode: Optional[Literal["online", "offline", "disabled"]] = Field(
        None, description="W&B mode (default: $WANDB_MODE, else online)")


class AimTracking(_Strict):
    repo: Optional[str] = Field(None, description="Aim repository: a path or aim:// URI (default: Aim's, the "
                                                  "working directory's .aim)")
    experiment: Optional[str] = Field(None, description="Aim experiment name (default: the study's name)")


class TensorBoardTracking(_Strict):
    logdir: Optional[str] = Field(None, description="local folder of the event files, one sub-folder per run "
                                                    "(default: <store>/_tensorboard/<study>)")


class TrackingSpec(_Strict):
    """The trackers each run logs to; none by default."""

    mlflow: Optional[MLflowTracking] = None
    wandb: Optional[WandbTracking] = None
    aim: Optional[AimTracking] = None
    tensorboard: Optional[TensorBoardTracking] = Field(None, description="true, or {logdir: PATH}")

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, v):
        if v is None:  # `tracking:` with nothing under it
            return {}
        if not isinstance(v, (dict, TrackingSpec)):
            raise ValueError("tracking maps trackers to their settings, e.g. {mlflow: {experiment: my-study}, "
                             "wandb: {project: my-study}, aim: {repo: /data/aim}, tensorboard: true}")
        return v

    @field_validator("tensorboard", mode="before")
    @classmethod
    def _tensorboard_form(cls, v):
        if v is True:
            return {}
        if v is None or v is False:
            return None
        if not isinstance(v, dict):
            raise ValueError("use true, false or {logdir: PATH}")
        return v

    @property
    def enabled(self) -> list[str]:
        """The trackers this section turns on, in a fixed order."""
        return [name for name in TRACKER_PACKAGES if getattr(self, name) is not None]

    def tensorboard_logdir(self, store: str, study: str) -> str:
        """Where the TensorBoard event files go: ``logdir``, else ``<store>/_tensorboard/<study>``."""
        if self.tensorboard is not None and self.tensorboard.logdir:
            return self.tensorboard.logdir
        return f"{store.rstrip('/')}/_tensorboard/{study}"


def check_tracker_packages(tracking: TrackingSpec, store: str) -> None:
    """Refuse trackers whose package is not installed (the error names the extra), and a TensorBoard logdir on an
    object store (the event files are written locally); ValueError."""
    missing = [(name, *TRACKER_PACKAGES[name]) for name in tracking.enabled
               if importlib.util.find_spec(TRACKER_PACKAGES[name][0]) is None]
    if missing:
        parts = [f"tracking.{name} needs the {module} package" for name, module, _ in missing]
        extras = ",".join(extra for _, _, extra in missing)
        raise ValueError(f"{'; '.join(parts)}, which this install lacks: pip install 'dynstudy[{extras}]', or "
                         f"remove tracking.{missing[0][0]} from the spec")
    if tracking.tensorboard is not None and "://" in tracking.tensorboard_logdir(store, "x"):
        raise ValueError(f"tracking.tensorboard writes event files locally, but the store {store} is an object "
                         "store: give tracking.tensorboard.logdir, a local folder")
