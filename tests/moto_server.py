"""A moto S3 server on loopback for tests, started in a subprocess and stopped by its pid."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server(env: dict | None = None, log: Path | None = None):
    """Yield the endpoint URL of a fresh moto server (``env``: extra variables for it, e.g. its auth settings;
    ``log``: a file that gets its request log, one line per request: :func:`requests_logged` counts them)."""
    port = free_port()
    sink = open(log, "ab") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=sink, env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        if log is not None:
            sink.close()


@contextlib.contextmanager
def s3_bucket(bucket: str, log: Path | None = None):
    """A moto server (:func:`moto_server`, requests logged to ``log``) with ``bucket`` created and the AWS variables
    pointing at it set for the duration; yields ``s3://<bucket>`` and restores the variables after."""
    with moto_server(log=log) as endpoint:
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_REGION": "us-east-1"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            import boto3

            boto3.client("s3").create_bucket(Bucket=bucket)
            yield f"s3://{bucket}"
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def requests_logged(log: Path) -> list[str]:
    """The requests in a moto server's log so far, as ``METHOD /path?query`` (see :func:`moto_server`)."""
    found = []
    for line in Path(log).read_text(errors="replace").splitlines():
        quoted = re.sub(r"\x1b\[[0-9;]*m", "", line).split('"')
        if len(quoted) >= 3 and " HTTP/" in quoted[1]:
            found.append(quoted[1].rsplit(" HTTP/", 1)[0])
    return found
