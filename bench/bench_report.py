"""Benchmark: ``dynstudy report`` on generated stores, and the page it writes loaded in headless Chromium.

For each store (made by bench/bench_scale.py's generator and analysed), one command after another, each
in a fresh process: the report's wall time and peak RSS (the child's ru_maxrss), the main page's size, the
size of all it wrote (main page, ``<stem>_runs/``, ``<stem>_tables/``), and Chromium's wall time to load
the main page and draw it (``--dump-dom`` after the load event and a 0.5 s virtual-time wait, browser start
included) with the JavaScript errors it logged, then the same for the first cell page opened at its last
run. With ``--baseline`` another dynstudy (e.g. the main branch's) runs the same, alternating which goes
first, so the two read as a ratio on a loaded machine. Reports go under ``--out``, never into a store.

    .venv/bin/python bench/bench_report.py /work/scale/r100 /work/scale/r1000 \
        --baseline /work/baseline/.venv/bin/dynstudy
"""
from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.test_report_browser import BROWSERS, PROBE, WIDTH, console_errors  # noqa: E402

HERE = Path(sys.executable).parent / "dynstudy"


def timed_report(dynstudy: str, store: str, out: Path) -> tuple[float, float]:
    """(wall s, peak RSS MiB) of ``dynstudy report --store store --out out`` in a fresh process."""
    if out.parent.exists():
        shutil.rmtree(out.parent)
    out.parent.mkdir(parents=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen([dynstudy, "report", "--store", store, "--out", str(out)], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status:
        raise SystemExit(f"{dynstudy} report --store {store} failed (status {status})")
    return wall, usage.ru_maxrss / 1024


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def load(browser: str, page: Path, anchor: str, timeout: float) -> tuple[float | None, int | None, str]:
    """(wall s, JavaScript errors, what was drawn) of Chromium loading ``page`` (at ``anchor``) with the
    tests' probe; (None, None, "timed out") past ``timeout`` s."""
    probed = page.with_name(f"probed-{page.name}")
    probed.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    profile = page.parent / ".chromium-profile"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={profile}", f"--window-size={WIDTH},900", "--enable-logging=stderr",
           "--virtual-time-budget=30000", "--dump-dom", probed.as_uri() + (f"#{anchor}" if anchor else "")]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, None, "timed out"
    finally:
        probed.unlink()
        shutil.rmtree(profile, ignore_errors=True)
    wall = time.perf_counter() - t0
    found = re.search(r'data-probe="([^"]*)"', proc.stdout)
    if not found:
        return wall, None, "the probe did not report"
    probe = json.loads(html.unescape(found.group(1)))
    errors = len(probe["errors"]) + len(console_errors(proc.stderr))
    drawn = f"{probe['drawn']} of {probe['plots']} plots drawn" + (
        f", the run's {probe['target']}" if probe.get("target") is not None else "")
    return wall, errors, drawn


def measure(name: str, dynstudy: str, store: str, out_root: Path, browser: str | None, timeout: float) -> dict:
    out = out_root / name / Path(store).name / "report.html"
    wall, rss = timed_report(dynstudy, store, out)
    row = {"tool": name, "store": store, "report_s": wall, "peak_rss_mib": rss,
           "main_mb": out.stat().st_size / 1e6, "all_mb": folder_mb(out.parent)}
    if browser:
        row["main_load_s"], row["main_errors"], row["main_drawn"] = load(browser, out, "", timeout)
        cells = sorted((out.parent / "report_runs").glob("cell-*.html"))
        if cells:
            runs = re.findall(r'<section class="run" id="([^"]+)"', cells[0].read_text(encoding="utf-8"))
            row["cell_load_s"], row["cell_errors"], row["cell_drawn"] = load(browser, cells[0], runs[-1], timeout)
    print(json.dumps(row), flush=True)
    return row


def fmt(v, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stores", nargs="+", help="analysed stores (read only)")
    ap.add_argument("--dynstudy", default=str(HERE), help="the dynstudy to measure (default: this venv's)")
    ap.add_argument("--baseline", default=None, help="another dynstudy, measured side by side")
    ap.add_argument("--out", default="/tmp/bench-report", help="where the reports go")
    ap.add_argument("--browser-timeout", type=float, default=300.0, help="seconds before a page load is given up")
    ap.add_argument("--no-browser", action="store_true", help="skip the Chromium loads")
    args = ap.parse_args()
    browser = None if args.no_browser else next((p for p in map(shutil.which, BROWSERS) if p), None)
    tools = [("this", args.dynstudy)] + ([("baseline", args.baseline)] if args.baseline else [])
    rows = []
    for i, store in enumerate(args.stores):
        for name, exe in (tools if i % 2 == 0 else tools[::-1]):
            rows.append(measure(name, exe, store, Path(args.out), browser, args.browser_timeout))
    print("\n| store | dynstudy | report s | peak RSS MiB | main page MB | all files MB | main page in Chromium s "
          "| a cell page in Chromium s | JS errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        errors = [e for e in (r.get("main_errors"), r.get("cell_errors")) if e is not None]
        print(f"| {Path(r['store']).name} | {r['tool']} | {fmt(r['report_s'])} | {fmt(r['peak_rss_mib'], 0)} "
              f"| {fmt(r['main_mb'])} | {fmt(r['all_mb'])} | {fmt(r.get('main_load_s'))} "
              f"| {fmt(r.get('cell_load_s'))} | {sum(errors) if errors else '–'} |")


if __name__ == "__main__":
    main()
