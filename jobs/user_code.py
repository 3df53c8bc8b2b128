"""The user's own code a study names as ``module.path:function`` (a model builder, a training function).

The working directory is on the import path, as it is for Ray's workers (a local Ray job adds the driver's
working directory to theirs), so code next to the spec imports the same way on the driver and in the trials.
"""
from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

from dynstudy.jobs.models.names import close_matches


def import_function(module_name: str, function: str, what: str, error: type[Exception] = ValueError) -> Callable:
    """The function ``module_name:function``; ``error`` (its message starting with ``what``) says why it cannot be
    had: the module does not import, or holds no such function (with the closest names)."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ModuleNotFoundError, or the user's module failing at import
        raise error(f"{what}: cannot import {module_name!r} ({type(err).__name__}: {err}); make it importable "
                    "(PYTHONPATH, pip install, or ray job submit --working-dir) wherever the study runs") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        near = close_matches(function, [n for n in dir(module) if not n.startswith("_")], n=3)
        hint = f"; close names: {', '.join(near)}" if near else ""
        raise error(f"{what}: module {module_name!r} has no function {function!r}{hint}")
    return fn
