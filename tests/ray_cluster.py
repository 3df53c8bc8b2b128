"""A real multi-node Ray cluster on this host, for tests: ``ray start --head`` and ``ray start --address``.

Token authentication is on, as in production (a fresh token per cluster).
Each cluster lives in its own temp folder, and is stopped by the pids of its
own processes (never ``ray stop``, which would stop every Ray process on the
machine): every process whose environment carries the cluster's mark
(:data:`MARK`, which each process inherits from ``ray start``, whatever Ray
renames it to), whose command line names the cluster's folder, and everything
they started. Stopping checks that none of them survives.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
#: The environment variable that marks every process of a test cluster (its value: the cluster's folder).
MARK = "DYNSTUDY_TEST_CLUSTER"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out[int(entry.name)] = (ppid, cmd)
    return out


def pids_naming(text: str, with_children: bool = True) -> list[int]:
    """Processes whose command line contains ``text`` (and, if asked, all their descendants)."""
    procs = process_table()
    found = {pid for pid, (_, cmd) in procs.items() if text in cmd and pid != os.getpid()}
    while with_children:
        more = {pid for pid, (ppid, _) in procs.items() if ppid in found} - found
        if not more:
            break
        found |= more
    return sorted(found)


def is_zombie(pid: int) -> bool:
    """True for a process that has ended and waits only to be reaped (or is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def pids_marked(value: str, mark: str = MARK) -> list[int]:
    """Processes whose environment holds ``mark=value`` (a cluster's processes, renamed or orphaned alike)."""
    needle = f"{mark}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return sorted(found)


def kill(pids, sig=signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class LocalCluster:
    """A head and ``workers`` worker nodes on this host, each with ``cpus`` CPUs.

    ``shared_temp=True`` starts every node with the same ``--temp-dir`` (two
    nodes on one host then share one session folder); otherwise each node
    gets its own.
    """

    def __init__(self, workers: int = 1, cpus: int = 1, shared_temp: bool = False):
        # a short folder: Ray's socket paths below it must stay under 107 bytes
        self.root = Path(tempfile.mkdtemp(prefix="dynray-"))
        token = self.root / "token"
        token.write_text(secrets.token_hex(32))
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN_PATH": str(token), MARK: str(self.root)}
        self.env.pop("RAY_ADDRESS", None)
        self.port, self.dash = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dash}"
        self.temp = [self.root / ("ray" if shared_temp else f"node{i}") for i in range(workers + 1)]
        self.workers, self.cpus = workers, cpus

    def ray(self, *args, timeout=180, check=True, cwd=None) -> subprocess.CompletedProcess:
        done = subprocess.run([str(BIN / "ray"), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=cwd)
        if check and done.returncode:
            raise RuntimeError(f"ray {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        return done

    def __enter__(self) -> "LocalCluster":
        try:
            self.ray("start", "--head", f"--port={self.port}", f"--dashboard-port={self.dash}",
                     "--dashboard-host=127.0.0.1", f"--num-cpus={self.cpus}", "--include-dashboard=true",
                     f"--temp-dir={self.temp[0]}", *self.agent_ports())
            for i in range(1, self.workers + 1):
                self.ray("start", f"--address={self.address}", f"--num-cpus={self.cpus}", f"--temp-dir={self.temp[i]}",
                         *self.agent_ports())
            self.wait_for_nodes(self.workers + 1)
            self.wait_for_job_agent()
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def agent_ports() -> list[str]:
        """Free ports for a node's dashboard agent (Ray's fixed defaults clash with any other Ray on the host)."""
        return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}"]

    def __exit__(self, *exc) -> None:
        self.stop()

    def alive_nodes(self) -> int:
        done = self.ray("status", f"--address={self.address}", check=False, timeout=60)
        block = done.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        return sum(1 for line in block.splitlines() if line.strip().startswith("1 node_"))

    def wait_for_nodes(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.alive_nodes() < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster has fewer than {n} nodes after {timeout} s")
            time.sleep(1)

    def wait_for_job_agent(self, timeout: float = 300) -> None:
        """Until a trivial job goes through: right after start the head answers 'No available agent to submit job'."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.ray("job", "submit", "--address", self.dashboard, "--", "true", check=False, timeout=120)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"no job agent after {timeout} s:\n{done.stderr[-2000:]}")
            time.sleep(2)

    def worker_raylet_pids(self) -> list[int]:
        """The raylet of each worker node (its own temp folder names it)."""
        return [p for t in self.temp[1:] for p in pids_naming(f"--raylet_socket_name={t}", with_children=False)
                if "raylet" in process_table()[p][1]]

    def worker_node_processes(self) -> list[int]:
        """Every process of the worker nodes: those naming a worker node's temp folder, and their descendants
        (its raylet, the raylet's workers, its agents)."""
        return sorted({p for t in self.temp[1:] for p in pids_naming(str(t))} - set(self.head_processes()))

    def head_processes(self) -> list[int]:
        """Every process of the head node (its temp folder named, and their descendants)."""
        return pids_naming(str(self.temp[0]))

    def processes(self) -> list[int]:
        """Every live process of this cluster: marked in its environment, or naming its folders, and their
        descendants."""
        named = {p for t in set(self.temp) for p in pids_naming(str(t))}
        marked = set(pids_marked(str(self.root)))
        procs = process_table()
        found = named | marked
        while True:
            more = {pid for pid, (ppid, _) in procs.items() if ppid in found} - found
            if not more:
                return sorted(p for p in found if not is_zombie(p))
            found |= more

    def stop(self) -> None:
        """SIGTERM every process of the cluster, SIGKILL what is left after 15 s; raise if any survives."""
        pids = self.processes()
        kill(pids, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while (left := self.processes()) and time.monotonic() < deadline:
            kill(left)
            time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)
        if left:
            procs = process_table()
            raise RuntimeError(f"processes of the test cluster survived its stop: "
                               f"{[(p, procs.get(p, (0, '?'))[1][:80]) for p in left]}")
