"""The ``models`` entries of a study spec: a name, or a mapping with a label, builder kwargs and stages.

```yaml
models:
  - resnet18                                   # the zoo
  - timm/convnext_atto                         # any timm architecture
  - torchvision/regnet_y_400mf                 # a torchvision classification model
  - name: timm/vit_tiny_patch16_224            # with builder kwargs, a label and stages of its own
    label: vit_t32
    kwargs: {img_size: 32, patch_size: 4}
    stages: [blocks.2, blocks.5, blocks.8, blocks.11]
  - mylab.nets:build_net                       # the user's builder (module.path:function)
```

Only the text is checked here (no torch): that the name has one of the four
forms (:mod:`dynstudy.jobs.models.names`; a zoo-like name that is not in the zoo is
refused with close matches). Whether a timm or torchvision name exists, a
builder imports, and the stages exist and fire once is checked before Ray
starts (:func:`dynstudy.jobs.models.registry.check_model_names`,
:func:`dynstudy.jobs.capture.fit_check.check_trials_fit`).
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from dynstudy.jobs.models.names import parse_model_ref

#: Model labels: ASCII letters, digits, '_', '.' and '/' (a run id shows them with '/' as '_').
_LABEL_RE = re.compile(r"[A-Za-z0-9_./]+")


class ModelSpec(BaseModel):
    """One model of the study."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="zoo name, timm/<name>, torchvision/<name> or module.path:function")
    label: Optional[str] = Field(None, description="the model's name in cells, run ids and overrides (default: name)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the model's builder")
    stages: Optional[list[str]] = Field(None, min_length=1, description="module names to capture (default: chosen "
                                                                         "from the model, four of them)")

    @property
    def cell_label(self) -> str:
        return self.label or self.name

    @field_validator("name")
    @classmethod
    def _known_form(cls, v: str) -> str:
        parse_model_ref(v)  # ValueError: what is allowed, and close matches
        return v

    @field_validator("label")
    @classmethod
    def _label_chars(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not _LABEL_RE.fullmatch(v):
            raise ValueError("use ASCII letters, digits, '_', '.' and '/' only")
        return v

    @field_validator("stages")
    @classmethod
    def _stage_names(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        return check_stage_names(v)


def check_stage_names(stages: Optional[list[str]]) -> Optional[list[str]]:
    """Refuse empty or repeated stage names (ValueError); return ``stages``."""
    if stages is None:
        return None
    bad = [s for s in stages if not s.strip()]
    if bad:
        raise ValueError("stage names are module names (e.g. layer1, blocks.3); an empty one is not")
    repeated = sorted({s for s in stages if stages.count(s) > 1})
    if repeated:
        raise ValueError(f"stages must be unique; repeated: {repeated}")
    return stages


def _entry(value: Any) -> Any:
    """A ``models`` item: a plain name becomes ``{"name": name}`` (its form checked); a mapping stays."""
    if isinstance(value, str):
        parse_model_ref(value)  # ValueError: what is allowed, and close matches
        return {"name": value}
    if isinstance(value, dict):
        return value
    raise PydanticCustomError("string_type", "Input should be a valid string")


#: One item of a spec's ``models``: a name, or a mapping as :class:`ModelSpec`.
ModelEntry = Annotated[ModelSpec, BeforeValidator(_entry)]
