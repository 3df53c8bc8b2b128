"""An error that reaches the CLI is one line naming what failed and where; --debug adds the traceback."""
from __future__ import annotations

import errno
import os

import pytest

import dynstudy.study.cli as cli


def _getcwd_gone(args):
    os.getcwd  # noqa: B018  (what the failing code was about to use)
    raise FileNotFoundError(errno.ENOENT, "No such file or directory")


@pytest.mark.parametrize("debug", [False, True])
def test_an_os_error_without_a_path_names_where_it_happened(monkeypatch, capsys, debug):
    monkeypatch.setattr(cli, "cmd_status", _getcwd_gone)
    assert cli.main((["--debug"] if debug else []) + ["status"]) == 1
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert line.startswith("dynstudy status: FileNotFoundError: [Errno 2] No such file or directory (in _getcwd_gone, ")
    assert "test_cli_errors.py:" in line
    assert 'raise FileNotFoundError(errno.ENOENT, "No such file or directory")' in line
    assert ("Traceback (most recent call last)" in err) is debug


def test_an_os_error_with_a_path_names_it(tmp_path, monkeypatch, capsys):
    def unreadable(args):
        open(tmp_path / "missing" / "file")

    monkeypatch.setattr(cli, "cmd_status", unreadable)
    assert cli.main(["status"]) == 1
    assert capsys.readouterr().err == (f"dynstudy status: FileNotFoundError: [Errno 2] No such file or directory: "
                                       f"'{tmp_path / 'missing' / 'file'}'\n")


@pytest.fixture
def frozen_store(tmp_path):
    """A generated, unanalysed store nothing may be written to: a tmpfs remounted read-only where the tests are
    root (root ignores modes), else every folder at mode 0o555."""
    import subprocess

    from tests.store_factory import make_store

    store = tmp_path / "frozen"
    store.mkdir()
    root = os.geteuid() == 0
    if root and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(store)],
                               capture_output=True).returncode:
        pytest.skip("mounting a tmpfs failed")
    try:
        make_store(store, seeds=(0,), datasets=("digits",), epochs=2)
        if root:
            subprocess.run(["mount", "-o", "remount,ro", str(store)], check=True, capture_output=True)
        else:
            for folder in [store, *(p for p in store.rglob("*") if p.is_dir())]:
                folder.chmod(0o555)
        yield store
    finally:
        if root:
            subprocess.run(["umount", "-l", str(store)], capture_output=True)
        else:
            for folder in [store, *(p for p in store.rglob("*") if p.is_dir())]:
                folder.chmod(0o755)


@pytest.mark.parametrize("command", ["analyze", "report"])
def test_a_read_only_store_names_the_fix(frozen_store, capsys, command):
    assert cli.main([command, "--store", str(frozen_store)]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"dynstudy {command}: ")
    assert line.endswith("; the store (and a report's --out) must be writable: fix the permissions, or copy the "
                         "store somewhere writable")
    assert str(frozen_store) in line


def test_a_working_directory_removed_mid_command_is_named(tmp_path, monkeypatch, capsys):
    """As when Ray removes a job's unpacked --working-dir under its driver: getcwd fails inside the stdlib."""
    gone = tmp_path / "job-working-dir"
    gone.mkdir()
    monkeypatch.chdir(gone)

    def removed(args):
        gone.rmdir()
        os.path.abspath("store")

    monkeypatch.setattr(cli, "cmd_status", removed)
    assert cli.main(["status"]) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("dynstudy status: FileNotFoundError: [Errno 2] No such file or directory (in abspath, "
                           "called at "), line
    assert line.endswith(f'test_cli_errors.py:{removed.__code__.co_firstlineno + 2}: os.path.abspath("store"); '
                         f"the working directory {gone} no longer exists)"), line
