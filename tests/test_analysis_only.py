"""An analysis-only install: reading and analysing a store works without torch, torchvision, timm, ray or sklearn."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = ("torch", "torchvision", "timm", "ray", "sklearn")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not installed (blocked by the test)")
            return None

    sys.meta_path.insert(0, Block())
    import importlib.util
    real = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in BLOCKED else real(name, *a)

    from tests.store_factory import make_store
    from dynstudy.study.cli import main
    store = sys.argv[1]
    make_store(store, seeds=(0, 1), datasets=("digits",))
    codes = [main(["analyze", "--store", store]), main(["sql", "--store", store, "SELECT count(*) FROM run_summary"]),
             main(["report", "--store", store]), main(["status", "--store", store]), main(["run", "smoke"])]
    print("CODES", codes)
    print("LOADED", sorted(m for m in BLOCKED if m in sys.modules))
""")


def test_analysis_commands_need_no_training_stack(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "store")], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert "CODES [0, 0, 0, 0, 2]" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
    assert "LOADED []" in done.stdout
    assert ("dynstudy run: training needs torch, torchvision, timm, ray, sklearn, which this install lacks: "
            "pip install 'dynstudy[train]' (analyze, sql, report and status work without them)") in done.stderr
