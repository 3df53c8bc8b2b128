"""Checks the study driver runs before Ray starts.

Starting Ray, or connecting to a cluster, takes long enough that a mistake
found afterwards costs minutes; these checks find the common ones in a second
and say what to do, in one line:

* :func:`check_ray_address`: the cluster named by ``--address`` or
  ``RAY_ADDRESS`` answers at its host and port (a TCP connect, retried for up
  to 30 s, or ``DYNSTUDY_RAY_CONNECT_TIMEOUT_S``).
* :func:`check_store_writable`: a local store folder can be created and
  written to (``s3://`` and ``gs://`` stores are not checked).

Both raise :class:`PreflightError`, a ValueError. Besides the standard library
they use only the store contract's remote schemes
(:data:`dynstudy.store_contract.files.REMOTE_SCHEMES`), so the checks run
before Ray or torch is imported.
"""
from __future__ import annotations

import errno
import math
import os
import secrets
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from dynstudy.store_contract.files import REMOTE_SCHEMES

#: Environment variable Ray reads the cluster address from.
RAY_ADDRESS_ENV = "RAY_ADDRESS"
#: Environment variable overriding the default connect timeout (seconds).
TIMEOUT_ENV = "DYNSTUDY_RAY_CONNECT_TIMEOUT_S"
#: How long :func:`check_ray_address` keeps trying by default (seconds).
DEFAULT_TIMEOUT_S = 30.0
#: The longest a single connection attempt may take (seconds).
TRY_TIMEOUT_S = 2.0
#: The pause between two connection attempts (seconds).
RETRY_PAUSE_S = 0.2
#: Address forms Ray accepts, as named in error messages.
ACCEPTED_FORMS = "auto, local, host:port, ray://host:port, http(s)://host:port"
#: Start of the name of the probe file :func:`check_store_writable` writes.
PROBE_PREFIX = ".dynstudy-write-check-"


class PreflightError(ValueError):
    """A check before the study starts failed; the message says how to fix it."""


def _source(address: str | None) -> tuple[str, str, str] | None:
    """Which address applies, and how to name and drop it in messages.

    Parameters
    ----------
    address : str or None
        The explicit ``--address``; None or blank when not given.

    Returns
    -------
    tuple of str, or None
        ``(value, label, way_out)``, e.g. ``("h:1", "RAY_ADDRESS=h:1",
        "unset RAY_ADDRESS")``; None when neither ``address`` nor
        ``RAY_ADDRESS`` is set (a local run).
    """
    env_value = os.environ.get(RAY_ADDRESS_ENV, "").strip()
    if address is not None and address.strip():
        value = address.strip()
        way_out = "drop --address" + (f" and unset {RAY_ADDRESS_ENV}" if env_value else "")
        return value, f"--address {value}", way_out
    if env_value:
        return env_value, f"{RAY_ADDRESS_ENV}={env_value}", f"unset {RAY_ADDRESS_ENV}"
    return None


def _split_host_port(netloc: str) -> tuple[str, str]:
    """Split ``host:port``, ``[v6]:port`` or bare ``v6:port`` into its parts.

    Parameters
    ----------
    netloc : str
        The part of an address after any ``scheme://`` and before any path.

    Returns
    -------
    tuple of str
        ``(host, port)``, either possibly empty (no port: ``port == ""``).
    """
    if netloc.startswith("["):
        host, bracket, rest = netloc[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return "", ""
        return host, rest[1:]
    host, colon, port = netloc.rpartition(":")
    return (host, port) if colon else (netloc, "")


def parse_ray_address(value: str, label: str | None = None) -> tuple[str, int] | None:
    """The host and port a Ray address points at.

    Parameters
    ----------
    value : str
        ``auto``, ``local``, ``host:port``, ``ray://host:port``,
        ``http://host:port`` or ``https://host:port`` (a path after the port
        is allowed in the last two); IPv6 hosts may be in brackets.
    label : str, optional
        How to name the value in errors (default: ``value`` itself).

    Returns
    -------
    tuple of (str, int), or None
        ``(host, port)``; None for ``auto`` and ``local``, which name no
        host to check.

    Raises
    ------
    PreflightError
        When the value has an unknown scheme, no host, no port, a port that
        is not a number, or one outside 1-65535.
    """
    label = label or value
    if value in ("auto", "local"):
        return None

    def bad(why: str) -> PreflightError:
        return PreflightError(f"{label}: not a Ray address ({why}); accepted forms: {ACCEPTED_FORMS}")

    if "://" in value:
        scheme, _, rest = value.partition("://")
        if scheme.lower() not in ("ray", "http", "https"):
            raise bad(f"unknown scheme {scheme!r}")
        netloc = urlsplit("//" + rest).netloc if scheme.lower() != "ray" else rest.rstrip("/")
    else:
        netloc = value
    host, port = _split_host_port(netloc)
    if not host:
        raise bad("no host")
    if not port:
        raise bad("no port")
    if not port.isascii() or not port.isdigit():
        raise bad(f"port {port!r} is not a number")
    if not 1 <= int(port) <= 65535:
        raise bad(f"port {int(port)} is outside 1-65535")
    return host, int(port)


def _timeout_s(timeout_s: float | None) -> float:
    """The connect timeout: ``timeout_s``, else the environment, else 30 s.

    Parameters
    ----------
    timeout_s : float or None
        An explicit timeout, which wins.

    Returns
    -------
    float
        Seconds, finite and non-negative.

    Raises
    ------
    PreflightError
        When ``DYNSTUDY_RAY_CONNECT_TIMEOUT_S`` is not such a number.
    """
    if timeout_s is not None:
        return float(timeout_s)
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise PreflightError(f"{TIMEOUT_ENV}={text!r} must be a number of seconds >= 0")
    return value


def _connect_until(host: str, port: int, timeout_s: float) -> OSError | None:
    """Try TCP connections to ``host:port`` until one succeeds or time is up.

    Parameters
    ----------
    host : str
        Host name or IP address.
    port : int
        TCP port.
    timeout_s : float
        How long to keep trying; at least one attempt is made.

    Returns
    -------
    OSError or None
        None once a connection succeeded, else the last attempt's error.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(0.05, min(TRY_TIMEOUT_S, remaining))):
                return None
        except OSError as err:
            last = err
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return last
        time.sleep(min(RETRY_PAUSE_S, remaining))


def _reason(err: OSError) -> str:
    """A short reason for a failed connection, e.g. ``Connection refused``.

    Parameters
    ----------
    err : OSError
        The error of the last attempt.

    Returns
    -------
    str
        The OS's text for the error, else the exception's text or type name.
    """
    return err.strerror or str(err) or type(err).__name__


def check_ray_address(address: str | None, timeout_s: float | None = None) -> None:
    """Check that the Ray cluster the study would use answers.

    Parameters
    ----------
    address : str or None
        The explicit ``--address``; when None (or blank) ``RAY_ADDRESS`` is
        used, and when that is unset too the study runs locally and nothing
        is checked. ``auto`` and ``local`` are accepted without a check.
    timeout_s : float, optional
        How long to keep trying to connect; default 30 s, or
        ``DYNSTUDY_RAY_CONNECT_TIMEOUT_S`` when set.

    Raises
    ------
    PreflightError
        At once when the address is malformed, naming it and the accepted
        forms; after ``timeout_s`` when nothing answers, e.g.
        ``RAY_ADDRESS=127.0.0.1:1: nothing answers at 127.0.0.1:1 after 30 s
        (Connection refused); start the cluster (ray start --head) or unset
        RAY_ADDRESS to run on this machine``.
    """
    source = _source(address)
    if source is None:
        return
    value, label, way_out = source
    target = parse_ray_address(value, label)
    if target is None:
        return
    host, port = target
    timeout = _timeout_s(timeout_s)
    err = _connect_until(host, port, timeout)
    if err is None:
        return
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    raise PreflightError(f"{label}: nothing answers at {where} after {timeout:g} s ({_reason(err)}); "
                         f"start the cluster (ray start --head) or {way_out} to run on this machine")


def _local_store_path(store: str) -> Path | None:
    """The folder of a local store, or None for an object-store URI.

    Parameters
    ----------
    store : str
        A path, a ``file://`` URI, or an ``s3://`` / ``gs://`` URI.

    Returns
    -------
    pathlib.Path or None
        The absolute folder; None for ``s3://`` and ``gs://``.

    Raises
    ------
    PreflightError
        When ``store`` is empty or has another scheme.
    """
    if not store.strip():
        raise PreflightError("store is empty; give a path or an s3:// / gs:// URI with --store")
    if "://" in store:
        scheme, _, rest = store.partition("://")
        if scheme.lower() in REMOTE_SCHEMES:
            return None
        if scheme.lower() != "file":
            raise PreflightError(f"store {store} has unknown scheme {scheme!r}; use a local path, s3:// or gs://")
        store = rest
    return Path(store).expanduser().resolve()


def _probe(folder: Path) -> None:
    """Create ``folder`` if needed, then write and delete a hidden probe file.

    Parameters
    ----------
    folder : pathlib.Path
        The store folder.

    Raises
    ------
    OSError
        When the folder cannot be created or written to.
    """
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f"{PROBE_PREFIX}{secrets.token_hex(6)}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"ok\n")
    finally:
        os.close(fd)
        try:
            os.unlink(probe)
        except FileNotFoundError:
            pass


def check_store_writable(store: str) -> None:
    """Check that the study can write to a local store.

    Parameters
    ----------
    store : str
        ``--store``: a local path or ``file://`` URI (created if missing,
        parents included), or an ``s3://`` / ``gs://`` URI (not checked).

    Raises
    ------
    PreflightError
        When the folder cannot be created or written, e.g. ``store /x/y is
        not writable (PermissionError: Permission denied); choose another
        --store or fix its permissions``; when the disk is full the advice is
        ``the disk is full; free space, then run again with --resume``.
    """
    folder = _local_store_path(store)
    if folder is None:
        return
    try:
        _probe(folder)
    except OSError as err:
        fix = ("the disk is full; free space, then run again with --resume" if err.errno == errno.ENOSPC
               else "choose another --store or fix its permissions")
        raise PreflightError(f"store {folder} is not writable ({type(err).__name__}: "
                             f"{err.strerror or err}); {fix}") from err
