"""The examples in the docstrings run, and give what they show (analysis and the store contract: pure code)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import dynstudy.analysis
import dynstudy.store_contract


def _modules() -> list[str]:
    names = ["dynstudy"]
    for package in (dynstudy.analysis, dynstudy.store_contract):
        names += [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    return sorted(n for n in names if not n.endswith(".ray_dispatch"))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
