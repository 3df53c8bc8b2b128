"""Make ``import torchvision`` work on a CPU build of torch.

PyPI ships torchvision only as CUDA builds. Beside a CPU torch their compiled
ops library (``_C.so``) cannot load, and ``import torchvision`` then fails with
"operator torchvision::nms does not exist" because ``torchvision/_meta_registrations.py``
registers fake kernels for ops that were never defined. Defining the schemas of
the missing detection ops before the import is enough for models, transforms
and datasets, which is all dynstudy uses. Where ``_C.so`` loads (a matching
torch/torchvision pair, CUDA or CPU) nothing is changed.

Call :func:`ensure_torchvision` before importing torchvision or timm; every
module of ``jobs`` that needs them does, so Ray workers get it too.
"""
from __future__ import annotations

import importlib.util
import os

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # keeps the torch.library.Library alive for the process


def _ops_library_loads() -> bool:
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    so = os.path.join(list(spec.submodule_search_locations)[0], "_C.so")
    if not os.path.exists(so):
        return False
    try:
        torch.ops.load_library(so)
    except (OSError, RuntimeError):
        return False
    return True


def ensure_torchvision() -> None:
    """Define torchvision's missing op schemas when its C++ ops cannot load.

    Idempotent and cheap after the first call.
    """
    global _library
    if _library is not None:
        return
    import torch

    if _ops_library_loads() and hasattr(torch.ops.torchvision, "nms"):
        _library = False  # real ops present; nothing to do
        return
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for name, schema in _SCHEMAS.items():
        try:
            lib.define(schema)
        except RuntimeError:  # already defined by someone else
            pass
    _library = lib
