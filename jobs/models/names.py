"""Which models a spec can name, as text: no torch, so a spec is checked before anything heavy is imported.

Four forms:

* one of the zoo's twelve names (:data:`MODEL_NAMES`), e.g. ``resnet18``;
* ``timm/<name>``: any timm architecture, e.g. ``timm/convnext_atto``;
* ``torchvision/<name>``: a torchvision classification model, e.g. ``torchvision/regnet_y_400mf``;
* ``module.path:function``: the user's own builder, e.g. ``mylab.nets:build_net``.

Whether a timm or torchvision name exists, or a user module imports, is
checked later (:mod:`dynstudy.jobs.models.sources`, still before Ray starts).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

MODEL_NAMES = (
    "tiny_cnn", "tiny_resnet",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "densenet121", "mobilenet_v2", "vgg16_bn", "vit_b_16", "vit_tiny",
)
KINDS = ("zoo", "timm", "torchvision", "user")
#: How a spec names a model outside the zoo, for messages.
FORMS = "timm/<name>, torchvision/<name>, or module.path:function (your own builder)"

_TIMM_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_TORCHVISION_RE = re.compile(r"[A-Za-z0-9_]+")
_USER_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
_SLUG_RE = re.compile(r"[^A-Za-z0-9_.]")


@dataclass(frozen=True)
class ModelRef:
    """A parsed model name.

    Attributes
    ----------
    kind : one of :data:`KINDS`.
    target : the zoo name, the timm or torchvision name, or ``module.path:function``.
    """

    kind: str
    target: str

    @property
    def module(self) -> str:
        """The module path of a user builder."""
        return self.target.split(":", 1)[0]

    @property
    def function(self) -> str:
        """The function name of a user builder."""
        return self.target.split(":", 1)[1]


def close_matches(name: str, known, n: int = 5) -> list[str]:
    """Up to ``n`` names of ``known`` that look like ``name`` (difflib), best first.

    Parameters
    ----------
    name : the name that was not found.
    known : iterable of str, the names that exist.
    n : most matches returned.
    """
    known = list(known)
    found = difflib.get_close_matches(name, known, n=n, cutoff=0.6)
    if not found:  # a name inside a longer one (resnet -> resnet18, ...)
        found = sorted((k for k in known if name and name in k), key=len)[:n]
    return found


def parse_model_ref(name: str) -> ModelRef:
    """The kind and target of a model name; ValueError says what is allowed and what is close.

    Parameters
    ----------
    name : a spec's model name.

    Raises
    ------
    ValueError
        For a name in none of the four forms, e.g. ``unknown model 'resnet9000';
        close matches: resnet18, ...; or name any model as timm/<name>, ...``.
    """
    if name in MODEL_NAMES:
        return ModelRef("zoo", name)
    for prefix, rule in (("timm/", _TIMM_RE), ("torchvision/", _TORCHVISION_RE)):
        if name.startswith(prefix):
            target = name[len(prefix):]
            if not rule.fullmatch(target):
                raise ValueError(f"model {name!r}: {prefix}<name> needs a name of letters, digits and _ "
                                 f"(e.g. {prefix}resnet18)")
            return ModelRef(prefix[:-1], target)
    if ":" in name:
        if not _USER_RE.fullmatch(name):
            raise ValueError(f"model {name!r}: a builder is named module.path:function (e.g. mylab.nets:build_net)")
        return ModelRef("user", name)
    near = close_matches(name, MODEL_NAMES)
    hint = f"close matches: {', '.join(near)}" if near else f"the zoo: {', '.join(MODEL_NAMES)}"
    raise ValueError(f"unknown model {name!r}; {hint}; or name any model as {FORMS}")


def model_slug(label: str) -> str:
    """``label`` as one part of a run id: characters other than letters, digits, ``_`` and ``.`` become ``_``.

    The zoo's names are their own slugs, so their run ids are what they always were.
    """
    return _SLUG_RE.sub("_", label)
