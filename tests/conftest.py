from __future__ import annotations

import os
import subprocess

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# Ray waits 30 s for a new head's GCS to bind its port; on a loaded 2-core machine that start can take longer
os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")


@pytest.fixture(autouse=True)
def _fault_dir(tmp_path, monkeypatch):
    """Fault-injection markers go to the test's own folder."""
    monkeypatch.setenv("DYNSTUDY_FAULT_DIR", str(tmp_path / "faults"))


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nothing may be written to: a read-only tmpfs where the tests are root (root ignores modes), else
    mode 0o555. Yields (folder, the error the probe meets)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder, "PermissionError: Permission denied"
        folder.chmod(0o755)
        return
    mount = ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)]
    if subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("mounting a read-only tmpfs failed")
    try:
        yield folder, "OSError: Read-only file system"
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
