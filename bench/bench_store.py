"""Benchmark: what each command costs on a large store, side by side with another dynstudy.

Generates (or resumes) a store of ``--runs`` runs with bench_scale.py's generator and analyses
it once where it has no analysis yet, then times each command in a fresh process and reports
wall time and peak RSS (the process's ru_maxrss, children included), for this checkout's
``dynstudy`` and, with ``--baseline DYNSTUDY``, for another installation's (e.g. the main
branch's), with the ratio baseline / this. Each command runs ``--repeats`` times, alternating
which goes first; the median is shown. The first command of this checkout warms the store's
index (written by ``status`` and ``analyze``; ``sql`` only reads it).

Commands: ``sql`` over run_summary, ``sql`` on one run's capture_metrics and activations,
``status``, ``analyze`` with every run current, and ``report`` as it is.

    .venv/bin/python bench/bench_store.py --runs 1000 --out /work/scale/r1000 \\
        --baseline /work/main/.venv/bin/dynstudy
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_scale  # noqa: E402

HERE = str(Path(sys.executable).parent / "dynstudy")


def commands(store: str, run_id: str, report_dir: str) -> dict[str, list[str]]:
    """The timed commands (arguments after ``dynstudy``) by row name."""
    return {
        "sql run_summary count": ["sql", "--store", store, "SELECT count(*) FROM run_summary"],
        "sql one run capture_metrics": ["sql", "--store", store,
                                        f"SELECT count(*) FROM capture_metrics WHERE run_id = '{run_id}'"],
        "sql one run activations": ["sql", "--store", store,
                                    f"SELECT count(*) FROM activations WHERE run_id = '{run_id}'"],
        "status": ["status", "--store", store],
        "analyze (all current)": ["analyze", "--store", store],
        "report": ["report", "--store", store, "--out", f"{report_dir}/report.html"],
    }


def timed(exe: str, args: list[str]) -> tuple[float, float]:
    """(wall s, peak RSS MiB) of ``exe args`` in a fresh process; SystemExit when it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([exe, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status:
        raise SystemExit(f"{exe} {' '.join(args[:1])} failed ({status}): {proc.stderr.read().decode()[-500:]}")
    return wall, usage.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--captures", type=int, default=13)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--out", required=True, help="the store (generated where runs are missing)")
    ap.add_argument("--baseline", help="another installation's dynstudy executable to compare with")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="row names to run (default: all)")
    args = ap.parse_args()
    out = Path(args.out)
    t0 = time.perf_counter()
    written = bench_scale.generate(out, args.runs, args.captures, args.channels, args.samples)
    print(f"store {out}: {args.runs} runs, {written} generated in {time.perf_counter() - t0:.0f} s", flush=True)
    if not (out / "claims").exists():
        t0 = time.perf_counter()
        timed(HERE, ["analyze", "--store", str(out)])
        print(f"analysed in {time.perf_counter() - t0:.0f} s", flush=True)
    run_id = sorted(p.name for p in (out / "runs").iterdir())[len(list((out / "runs").iterdir())) // 2][len("run_id="):]
    timed(HERE, ["status", "--store", str(out)])  # the index is current before the first timed command
    exes = {"this": HERE, **({"baseline": args.baseline} if args.baseline else {})}
    print(f"{'command':30s} " + " ".join(f"{name + ' s':>11s} {name + ' MiB':>13s}" for name in exes)
          + ("   baseline/this" if args.baseline else ""), flush=True)
    with tempfile.TemporaryDirectory() as report_dir:
        for row, cmd in commands(str(out), run_id, report_dir).items():
            if args.only and row not in args.only:
                continue
            got = {name: [] for name in exes}
            for r in range(args.repeats):
                for name in (list(exes) if r % 2 == 0 else list(reversed(exes))):
                    got[name].append(timed(exes[name], cmd))
            med = {name: (statistics.median(w for w, _ in v), max(m for _, m in v)) for name, v in got.items()}
            line = f"{row:30s} " + " ".join(f"{med[n][0]:11.2f} {med[n][1]:13.0f}" for n in exes)
            if args.baseline:
                line += f"   {med['baseline'][0] / med['this'][0]:6.1f}x"
            print(line, flush=True)


if __name__ == "__main__":
    main()
