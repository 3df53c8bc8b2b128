"""Benchmark: S3 requests per ``dynstudy sql`` over run_summary, at several store sizes, on a local S3 server.

Copies the ``runs`` and ``run_summary`` files of the first N runs of an analysed local store (e.g. one of
bench_store.py's) into a moto S3 server on loopback that logs every request, then counts the requests of one
``dynstudy sql "SELECT count(*) FROM run_summary"`` (a fresh process) three ways: through the listing path
with no index (every file's footer and rows read), through the listing path with the store's index warm
(the listing pages, the index and its rows cache), and through run_summary's compaction (written as
``dynstudy analyze`` writes it at its end: :func:`dynstudy.store_contract.compaction.compact`).

    .venv/bin/python bench/bench_s3_requests.py --source /work/scale/r1000 --runs 20 1000
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from dynstudy.analysis.pipeline.catalog import open_catalog  # noqa: E402
from dynstudy.store_contract.compaction import compact  # noqa: E402
from dynstudy.store_contract.files import filesystem  # noqa: E402
from dynstudy.store_contract.index import RACY_MARGIN_NS  # noqa: E402
from tests.moto_server import moto_server, requests_logged  # noqa: E402

DYNSTUDY = str(Path(sys.executable).parent / "dynstudy")
QUERY = "SELECT count(*) FROM run_summary"
TABLES = ("runs", "run_summary")


def upload(source: Path, store: str, n: int) -> list[str]:
    """Copy the first ``n`` runs' files of ``TABLES`` from the local ``source`` to ``store``; their run ids."""
    ids = sorted(p.name for p in (source / "run_summary").iterdir() if p.name.startswith("run_id="))[:n]
    if len(ids) < n:
        raise SystemExit(f"{source} has {len(ids)} analysed runs, fewer than {n}")
    fs, inner = filesystem(store)
    for table in TABLES:
        for folder in ids:
            for f in (source / table / folder).iterdir():
                if f.name.endswith(".parquet") and not f.name.startswith("."):
                    with fs.open_output_stream(f"{inner}/{table}/{folder}/{f.name}") as sink:
                        sink.write(f.read_bytes())
    return [i[len("run_id="):] for i in ids]


def counted(log: Path, store: str) -> tuple[int, Counter, float, str]:
    """(requests, by method, wall s, printed count) of one ``dynstudy sql`` over run_summary in a fresh process."""
    before = len(requests_logged(log))
    t0 = time.perf_counter()
    out = subprocess.run([DYNSTUDY, "sql", "--store", store, "--format", "csv", QUERY], capture_output=True,
                         text=True, check=True).stdout
    wall = time.perf_counter() - t0
    seen = requests_logged(log)[before:]
    return len(seen), Counter(r.split(" ", 1)[0] for r in seen), wall, out.splitlines()[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, type=Path, help="an analysed local store (runs and run_summary)")
    ap.add_argument("--runs", type=int, nargs="+", default=[20, 1000])
    ap.add_argument("--cold-max", type=int, default=1000,
                    help="count the path without an index only up to this many runs (it reads every file)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, moto_server(log=Path(tmp) / "requests.log") as endpoint:
        log = Path(tmp) / "requests.log"
        os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_REGION": "us-east-1"})
        import boto3

        boto3.client("s3").create_bucket(Bucket="dynstudy-bench")
        print(f"{'runs':>6s} {'path':28s} {'requests':>8s} {'by method':28s} {'wall s':>7s} {'count':>6s}", flush=True)
        for n in args.runs:
            store = f"s3://dynstudy-bench/r{n}"
            upload(args.source, store, n)
            time.sleep(RACY_MARGIN_NS / 1e9 + 0.5)  # the index trusts no entry of a file younger than this
            rows = [("listing, no index", counted(log, store))] if n <= args.cold_max else []
            open_catalog(store, tables=("run_summary",))  # a reader that writes the index (as status, report do)
            rows.append(("listing, index warm", counted(log, store)))
            compact(store, "run_summary")  # what analyze does at its end
            rows.append(("compaction", counted(log, store)))
            for name, (total, methods, wall, count) in rows:
                by = " ".join(f"{m}:{c}" for m, c in sorted(methods.items()))
                print(f"{n:6d} {name:28s} {total:8d} {by:28s} {wall:7.2f} {count:>6s}", flush=True)


if __name__ == "__main__":
    main()
