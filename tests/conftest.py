from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# Ray waits 30 s for a new head's GCS to bind its port; on a loaded 2-core machine that start can take longer
os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")


@pytest.fixture(autouse=True)
def _fault_dir(tmp_path, monkeypatch):
    """Fault-injection markers go to the test's own folder."""
    monkeypatch.setenv("DYNSTUDY_FAULT_DIR", str(tmp_path / "faults"))
