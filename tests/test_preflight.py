"""Checks before Ray starts: the cluster address answers, the store is writable."""
from __future__ import annotations

import errno
import re
import socket
import time

import pytest

from dynstudy.study import preflight
from dynstudy.study.preflight import PreflightError, check_ray_address, check_store_writable

FORMS = "accepted forms: auto, local, host:port, ray://host:port, http(s)://host:port"


@pytest.fixture(autouse=True)
def _no_ray_env(monkeypatch):
    """No RAY_ADDRESS or timeout override from the caller's environment."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(preflight.TIMEOUT_ENV, raising=False)


@pytest.fixture
def listening():
    """A TCP socket listening on 127.0.0.1; yields its port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        yield srv.getsockname()[1]


@pytest.fixture
def closed_port():
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return port


def test_preflight_error_is_a_value_error():
    assert issubclass(PreflightError, ValueError)


def test_no_address_is_a_local_run():
    check_ray_address(None)
    check_ray_address("")


@pytest.mark.parametrize("value", ["auto", "local"])
def test_auto_and_local_are_not_checked(value, monkeypatch):
    check_ray_address(value, timeout_s=0)
    monkeypatch.setenv("RAY_ADDRESS", value)
    check_ray_address(None, timeout_s=0)


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}", "http://127.0.0.1:{port}",
                                  "http://127.0.0.1:{port}/", "https://localhost:{port}/api"])
def test_open_port_passes_for_each_form(listening, form):
    start = time.monotonic()
    check_ray_address(form.format(port=listening), timeout_s=5)
    assert time.monotonic() - start < 2


def test_ipv6_in_brackets():
    try:
        srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        srv.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with srv:
        srv.listen(4)
        port = srv.getsockname()[1]
        check_ray_address(f"[::1]:{port}", timeout_s=5)
        check_ray_address(f"ray://[::1]:{port}", timeout_s=5)
    assert preflight.parse_ray_address("http://[::1]:8265/") == ("::1", 8265)


def test_closed_port_fails_after_the_timeout(closed_port, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{closed_port}")
    start = time.monotonic()
    with pytest.raises(PreflightError) as info:
        check_ray_address(None, timeout_s=1)
    elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 3.5
    where = f"127.0.0.1:{closed_port}"
    assert str(info.value) == (f"RAY_ADDRESS={where}: nothing answers at {where} after 1 s (Connection refused); "
                               "start the cluster (ray start --head) or unset RAY_ADDRESS to run on this machine")


def test_explicit_address_is_named_and_wins_over_env(closed_port, listening, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{listening}")
    with pytest.raises(PreflightError, match=re.escape(
            f"--address 127.0.0.1:{closed_port}: nothing answers at 127.0.0.1:{closed_port} after 0.3 s (")) as info:
        check_ray_address(f"127.0.0.1:{closed_port}", timeout_s=0.3)
    assert str(info.value).endswith("or drop --address and unset RAY_ADDRESS to run on this machine")
    monkeypatch.delenv("RAY_ADDRESS")
    with pytest.raises(PreflightError, match=r"or drop --address to run on this machine$"):
        check_ray_address(f"ray://127.0.0.1:{closed_port}", timeout_s=0)


def test_env_address_used_when_address_is_none(listening, closed_port, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", f"ray://127.0.0.1:{listening}")
    check_ray_address(None, timeout_s=2)
    monkeypatch.setenv("RAY_ADDRESS", f"ray://127.0.0.1:{closed_port}")
    with pytest.raises(PreflightError, match=re.escape(f"RAY_ADDRESS=ray://127.0.0.1:{closed_port}: nothing answers")):
        check_ray_address(None, timeout_s=0)


def test_timeout_from_env(closed_port, monkeypatch):
    monkeypatch.setenv(preflight.TIMEOUT_ENV, "0.5")
    start = time.monotonic()
    with pytest.raises(PreflightError, match=r"after 0\.5 s \(Connection refused\)"):
        check_ray_address(f"127.0.0.1:{closed_port}")
    assert time.monotonic() - start < 2.5
    monkeypatch.setenv(preflight.TIMEOUT_ENV, "soon")
    with pytest.raises(PreflightError, match=re.escape(
            f"{preflight.TIMEOUT_ENV}='soon' must be a number of seconds >= 0")):
        check_ray_address(f"127.0.0.1:{closed_port}")


@pytest.mark.parametrize("value, why", [
    ("localhost", "no port"),
    ("ray://head", "no port"),
    ("http://head/", "no port"),
    ("head:", "no port"),
    ("head:abc", "port 'abc' is not a number"),
    ("ray://head:10001x", "port '10001x' is not a number"),
    ("head:0", "port 0 is outside 1-65535"),
    ("head:70000", "port 70000 is outside 1-65535"),
    (":6379", "no host"),
    ("tcp://head:6379", "unknown scheme 'tcp'"),
    ("AUTO", "no port"),
])
def test_malformed_address_fails_at_once(value, why, monkeypatch):
    start = time.monotonic()
    message = f"--address {value}: not a Ray address ({why}); {FORMS}"
    with pytest.raises(PreflightError, match=f"^{re.escape(message)}$"):
        check_ray_address(value, timeout_s=30)
    monkeypatch.setenv("RAY_ADDRESS", value)
    with pytest.raises(PreflightError, match=f"^{re.escape(f'RAY_ADDRESS={value}: not a Ray address ({why})')}"):
        check_ray_address(None, timeout_s=30)
    assert time.monotonic() - start < 1


def test_store_is_created_and_left_clean(tmp_path):
    store = tmp_path / "a" / "b" / "store"
    check_store_writable(str(store))
    assert store.is_dir() and list(store.iterdir()) == []
    check_store_writable(str(store))  # an existing folder is fine too
    check_store_writable(f"file://{tmp_path / 'c'}")
    assert (tmp_path / "c").is_dir() and list((tmp_path / "c").iterdir()) == []


def test_store_below_a_file_is_not_writable(tmp_path):
    (tmp_path / "plain").write_text("not a folder")
    bad = tmp_path / "plain" / "store"
    with pytest.raises(PreflightError) as info:
        check_store_writable(str(bad))
    assert str(info.value) == (f"store {bad} is not writable (NotADirectoryError: Not a directory); "
                               "choose another --store or fix its permissions")
    assert isinstance(info.value.__cause__, NotADirectoryError)


def test_store_full_disk_message(tmp_path, monkeypatch):
    def full(folder):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(preflight, "_probe", full)
    with pytest.raises(PreflightError, match=re.escape(
            f"store {tmp_path} is not writable (OSError: No space left on device); "
            "the disk is full; free space, then run again with --resume")):
        check_store_writable(str(tmp_path))


@pytest.mark.parametrize("uri", ["s3://bucket/studies/x", "gs://bucket/x", "S3://bucket"])
def test_object_stores_are_not_checked(uri):
    check_store_writable(uri)


def test_store_unknown_scheme():
    with pytest.raises(PreflightError, match=re.escape("store hdfs://nn/x has unknown scheme 'hdfs'")):
        check_store_writable("hdfs://nn/x")


def test_a_read_only_store_is_refused_before_ray_in_one_line(read_only_dir, monkeypatch, capsys):
    from dynstudy.study.cli import main

    folder, why = read_only_dir
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # the store is checked first: Ray is never reached
    for store in (folder, folder / "store"):
        assert main(["run", "smoke", "--store", str(store), "--quiet"]) == 2
        assert capsys.readouterr().err == (f"dynstudy run: store {store} is not writable ({why}); choose another "
                                           "--store or fix its permissions\n")
    assert list(folder.iterdir()) == []
