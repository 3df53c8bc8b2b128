from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


@pytest.fixture(autouse=True)
def _fault_dir(tmp_path, monkeypatch):
    """Fault-injection markers go to the test's own folder."""
    monkeypatch.setenv("DYNSTUDY_FAULT_DIR", str(tmp_path / "faults"))
