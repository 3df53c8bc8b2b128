"""One import name: dynstudy works from a folder that holds its own ``analysis``, ``jobs``, ``study`` and
``store_contract`` packages, as research repositories often do.

Each check runs where a user would: the working directory is such a folder (first on ``sys.path`` for
``python -c`` and for the workers of ``ray job submit --working-dir .``), and the user's packages stay
importable beside dynstudy's.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.ray_cluster import kill, pids_naming
from tests.store_factory import make_store

BIN = Path(sys.executable).parent
#: The user's own packages: each one says whose it is, and none of them is dynstudy's.
USER_PACKAGES = ("analysis", "jobs", "study", "store_contract")


def user_folder(root: Path) -> Path:
    """A research repository's folder with its own packages named like dynstudy's folders."""
    for name in USER_PACKAGES:
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(f"OWNER = 'user'\nNAME = {name!r}\n")
    (root / "analysis" / "dynamics.py").write_text("OWNER = 'user'\n")
    return root


def run_here(cwd: Path, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def test_the_cli_works_from_a_folder_with_its_own_packages(tmp_path):
    here = user_folder(tmp_path / "repo")
    store = tmp_path / "store"
    make_store(store, seeds=(0, 1), epochs=4)
    dynstudy = str(BIN / "dynstudy")
    assert "demo" in run_here(here, dynstudy, "presets").stdout
    run_here(here, dynstudy, "analyze", "--store", str(store), timeout=300)
    out = run_here(here, dynstudy, "sql", "--store", str(store), "--format", "json",
                   "SELECT count(*) AS n FROM run_summary").stdout
    assert json.loads(out) == [{"n": 4}]
    run_here(here, dynstudy, "report", "--store", str(store), "--out", str(tmp_path / "r.html"))
    assert (tmp_path / "r.html").stat().st_size > 100_000


def test_the_python_api_works_beside_the_users_packages(tmp_path):
    here = user_folder(tmp_path / "repo")
    store = tmp_path / "store"
    make_store(store, seeds=(0,), epochs=3)
    code = """
import json, sys
import analysis, analysis.dynamics, jobs, study, store_contract
import dynstudy
from dynstudy.analysis.kernels import dynamics
run_id = dynstudy.open_catalog(sys.argv[1]).execute("SELECT min(run_id) FROM runs").fetchone()[0]
run = dynstudy.read_run(sys.argv[1], run_id)
m = dynstudy.capture_metrics(run.captures[1].acts, run.captures[1].labels, smooth_window=1, min_scale=4)
print(json.dumps({"user": [analysis.OWNER, analysis.dynamics.OWNER, jobs.OWNER, study.OWNER, store_contract.OWNER],
                  "ours": dynamics.__name__, "captures": len(run.captures), "epochs": len(run.train_metrics),
                  "h_raw": m["h_raw"], "torch": "torch" in sys.modules, "ray": "ray" in sys.modules}))
"""
    got = json.loads(run_here(here, sys.executable, "-c", code, str(store)).stdout)
    assert got["user"] == ["user"] * 5 and got["ours"] == "dynstudy.analysis.kernels.dynamics"
    assert got["captures"] == 4 and got["epochs"] == 3 and 0 < got["h_raw"] < 3
    assert not got["torch"] and not got["ray"]  # the public API and analysis import neither


@pytest.mark.slow
def test_a_ray_task_works_from_a_shipped_folder_with_its_own_packages(tmp_path):
    """A working directory shipped to Ray's workers (``ray job submit --working-dir .``, here ``runtime_env``)
    comes first on every worker's sys.path: a task there still imports dynstudy's kernels, and the user's
    ``analysis`` is the user's."""
    here = user_folder(tmp_path / "repo")
    code = """
import json, sys, ray
import numpy as np

@ray.remote
def task():
    import analysis
    import dynstudy
    from dynstudy.analysis.kernels import dynamics
    x = np.random.default_rng(0).standard_normal((4, 512))
    return analysis.OWNER, dynamics.__name__, float(dynstudy.dfa_exponents(x).mean())

ray.init(num_cpus=1, include_dashboard=False, _temp_dir=sys.argv[1], runtime_env={"working_dir": "."},
         logging_level="WARNING")
print("RESULT " + json.dumps(ray.get(task.remote())))
ray.shutdown()
"""
    temp = Path(tempfile.mkdtemp(prefix="dynray-"))  # short: Ray's socket paths below it must stay under 107 bytes
    try:
        done = run_here(here, sys.executable, "-c", code, str(temp), timeout=600)
    finally:
        kill(pids_naming(str(temp)))
        shutil.rmtree(temp, ignore_errors=True)
    owner, name, alpha = json.loads(done.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert owner == "user" and name == "dynstudy.analysis.kernels.dynamics" and 0.3 < alpha < 0.7
