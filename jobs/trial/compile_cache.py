"""``train.compile``: torch.compile once per worker process and model shape, reused by its trials.

A worker process runs its trials one after another. The first trial of a
model shape compiles its network; a later trial of the same shape (same
model definition, stem, weights source, classes, channels, input side,
device and memory format) builds its own network as always (the seed fixes
the initial weights), then loads those weights into the process's compiled
network and trains that one, so the compiled graphs are reused instead of
traced again. The trial checkpoints, captures and evaluates the plain
module inside it (``state_dict`` keys stay those of an uncompiled run).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

#: The torch.compile backend (tests use "eager" to check the caching without a C++ build).
BACKEND = "inductor"
MAX_SHAPES = 4
_CACHE: "OrderedDict[tuple, tuple[nn.Module, nn.Module]]" = OrderedDict()


def compiled(key: tuple, model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``(module, compiled module)`` for a trial whose freshly built network is ``model``.

    ``key`` names the model shape (see the module docstring). On a miss,
    ``model`` itself is compiled and kept; on a hit, ``model``'s weights and
    buffers are loaded into the kept module, which is returned with its
    compiled wrapper. Not for trials running concurrently in one process.
    """
    entry = _CACHE.get(key)
    if entry is None:
        entry = (model, torch.compile(model, backend=BACKEND))
        _CACHE[key] = entry
        while len(_CACHE) > MAX_SHAPES:
            _CACHE.popitem(last=False)
        return entry
    _CACHE.move_to_end(key)
    module, wrapper = entry
    module.load_state_dict(model.state_dict())
    module.train(model.training)
    return module, wrapper


def clear() -> None:
    """Forget every compiled network of this process."""
    _CACHE.clear()
