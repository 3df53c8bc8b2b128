"""The ``dynstudy`` command line.

    dynstudy run [SPEC]                 run a study (default: the built-in demo), analyse, report
    dynstudy analyze --store DIR        signal files -> metric tables
    dynstudy sql --store DIR "SELECT"   read-only SQL over every table of the store (--format csv|json|parquet,
                                        --run RUN_ID: only that run's files)
    dynstudy report --store DIR         write the HTML report (+ CSV tables) to DIR/report.html
    dynstudy status --store DIR         runs per cell by status, and the running runs
    dynstudy export --store DIR --to T  send a study's metrics to mlflow, wandb or tensorboard
    dynstudy capture --checkpoints DIR --model M --dataset D
                                        a run's trajectory from its saved checkpoints, as a run of the store
    dynstudy presets [--show NAME]      list the shipped specs, or print one's YAML

The store defaults to $DYNSTUDY_STORE, else ./dynstudy-store. An error is one
line on stderr (exit 2: bad input; 1: a failure); ``--debug`` adds its traceback.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
import tempfile
import traceback
from pathlib import Path

from dynstudy.analysis.kernels.params import PLATEAU_POINTS, STOP_MARGIN, STOP_TOLERANCE
from dynstudy.study.spec import DEFAULT_STORE, SpecError, load_spec, preset_names, preset_text
from dynstudy.study.sql_output import FORMATS, format_table, write_result
from dynstudy.study.tracker_names import EXPORT_TARGETS


def _one_line(err) -> str:
    return " ".join(str(err).split())


def _check_output_outside(store: str, output: str | None) -> None:
    """``dynstudy sql --output`` never writes into a local store (it would replace a table's file)."""
    from dynstudy.store_contract.files import is_remote, resolve_store

    if not output or is_remote(store):
        return
    root = resolve_store(store)
    if os.path.realpath(output).startswith(os.path.realpath(root) + os.sep):
        raise ValueError(f"--output {output!r} is inside the store {root!r}; dynstudy sql writes nothing into the "
                         "store: give a path outside it")


def cmd_sql(args) -> int:
    """Run read-only SQL (see :mod:`dynstudy.study.readonly_sql`); a refusal or an SQL error is one line, exit 2."""
    import duckdb

    from dynstudy.analysis.pipeline.catalog import open_catalog, query_tables
    from dynstudy.analysis.pipeline.run_filter import query_runs
    from dynstudy.store_contract.files import run_folder_problem
    from dynstudy.store_contract.schemas import TABLES
    from dynstudy.study.readonly_sql import RefusedStatement, read_only_statements, statement_text

    if args.format == "parquet" and not args.output:
        raise ValueError("--format parquet writes a file: give --output FILE")
    _check_output_outside(args.store, args.output)
    problems = [run_folder_problem(r) for r in args.run or ()]
    if any(problems):
        raise ValueError(f"--run: {next(p for p in problems if p)}; give run ids as the runs table lists them")
    tables = query_tables(args.query)
    runs = {t: args.run for t in tables} if args.run else query_runs(args.query)
    # a query that names its tables (not unreadable_files) may read run_summary from an object store's compaction
    con = open_catalog(args.store, sandbox=True, tables=tables, runs=runs, compacted=tables != tuple(TABLES))
    try:
        statements = read_only_statements(con, args.query)
        if args.format != "table" and len(statements) > 1:
            raise RefusedStatement(f"dynstudy sql: --format {args.format} writes one result; give one query")
        for st in statements:
            rel = con.sql(statement_text(st))
            if rel is not None:
                write_result(rel, args.format, args.output, args.limit)
    except RefusedStatement as err:
        print(err, file=sys.stderr)
        return 2
    except duckdb.CatalogException as err:
        views = con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()
        tables = [r[0] for r in views]
        print(f"dynstudy sql: {_one_line(err)} (tables in this store: {', '.join(tables + ['unreadable_files'])})",
              file=sys.stderr)
        return 2
    except duckdb.Error as err:
        print(f"dynstudy sql: {_one_line(err)}", file=sys.stderr)
        return 2
    return 0


def cluster_address(address: str | None) -> str | None:
    """The Ray cluster to analyse on: ``--address``, else ``$RAY_ADDRESS`` (set under ``ray job submit``), else
    None (this machine)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def cmd_analyze(args) -> int:
    from dynstudy.analysis.pipeline.analyze import analyze

    result = analyze(args.store, force=args.force, workers=args.workers, plateau_points=args.plateau_points,
                     address=cluster_address(args.address))
    return 1 if result["failed"] else 0


def default_report(store: str) -> Path:
    """Where ``run`` and ``report`` put the report: ``<store>/report.html``, or ``./<last part>-report.html``
    for an object store."""
    if "://" in store:
        return Path(f"{store.rstrip('/').rsplit('/', 1)[-1]}-report.html")
    return Path(store).expanduser() / "report.html"


def cmd_report(args) -> int:
    from dynstudy.analysis.pipeline.report_catalog import report_catalog
    from dynstudy.analysis.report.build import write_report

    out = write_report(report_catalog(args.store), args.out or default_report(args.store))
    print(f"report: {Path(out).resolve()}")
    return 0


def cmd_stopping(args) -> int:
    """Stopping rules compared on an analysed store's curves (:mod:`dynstudy.analysis.stats.stopping`)."""
    import duckdb
    import pyarrow as pa

    from dynstudy.analysis.pipeline.stopping_compare import compare_store
    from dynstudy.store_contract.schemas import STOPPING, STOPPING_SUMMARY

    if args.format == "parquet" and not args.output:
        raise ValueError("--format parquet writes a file: give --output FILE")
    rows, summary = compare_store(args.store, args.tolerance, args.margin)
    table = pa.Table.from_pylist(rows, schema=STOPPING) if args.runs else pa.Table.from_pylist(
        summary, schema=STOPPING_SUMMARY)
    con = duckdb.connect()
    con.register("result", table)
    cols = "*" if args.format != "table" or args.runs else (
        "model, dataset, optimizer, rule, selection, setting, n_runs, n_fired, round(epochs_saved_mean, 2) AS saved, "
        "round(given_up_mean, 2) AS given_up, verdict")
    order = "run_id, rule, setting" if args.runs else "model, dataset, optimizer, rule, selection"
    write_result(con.sql(f"SELECT {cols} FROM result ORDER BY {order}"), args.format, args.output, args.limit)
    return 0


def cmd_status(args) -> int:
    from dynstudy.analysis.pipeline.catalog import open_catalog

    con = open_catalog(args.store, tables=("runs",))
    if not con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'runs'").fetchall()[0][0]:
        raise FileNotFoundError(f"store {args.store!r} has no runs yet; run a study first (dynstudy run)")
    rel = con.sql("""
        SELECT study, model, dataset, optimizer, count(*) AS runs,
               count(*) FILTER (status = 'finished') AS finished,
               count(*) FILTER (status = 'running') AS running,
               count(*) FILTER (status = 'failed') AS failed,
               count(*) FILTER (status = 'diverged') AS diverged
        FROM runs GROUP BY ALL ORDER BY ALL""")
    print(format_table(rel.columns, rel.fetchall()))
    running = con.sql("""
        SELECT run_id, epochs_completed || ' / ' || coalesce(json_extract_string(config, '$.train.epochs'), '?')
                   AS epochs, coalesce(attempts, 1) AS attempts, strftime(updated_at, '%Y-%m-%d %H:%M:%S') AS updated
        FROM runs WHERE status = 'running' ORDER BY run_id""")
    rows = running.fetchall()
    if rows:
        print(f"\nrunning ({len(rows)}):")
        print(format_table(running.columns, rows, max_width=60))
    return 0


def cmd_export(args) -> int:
    """A finished study's metrics sent to a tracker (:mod:`dynstudy.study.tracker_export`)."""
    from dynstudy.study.tracker_export import export_store

    done = export_store(args.store, args.to, uri=args.uri, project=args.project)
    counts = ", ".join(f"{k} {v}" for k, v in done.items())
    print(f"export to {args.to}: {counts}")
    return 0


def cmd_presets(args) -> int:
    """List the presets, or print only one preset's YAML (``--show NAME``), ready to redirect into a file."""
    if args.show:
        if args.show not in preset_names():
            raise ValueError(f"no preset {args.show!r}; presets: {', '.join(preset_names())}")
        sys.stdout.write(preset_text(args.show))
        return 0
    for name in preset_names():
        spec = load_spec(name)
        print(f"{name:8s} {spec.n_trials:4d} runs  {spec.description}")
    return 0


def _inside_ray_job() -> bool:
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def _leave_job_working_dir(store: str, report: str | None) -> None:
    """Under ``ray job submit``, stop depending on Ray's temporary copy of ``--working-dir``.

    The job's driver starts inside Ray's unpacked copy of the working
    directory, and a runtime-env agent deletes that copy once it counts no
    user of it on its node (two nodes on one host that share a ``--temp-dir``
    share the copy, so the other node's agent deletes it while this driver
    still runs in it: ``os.getcwd()`` then fails at the end of training). So
    a relative store (which would live inside that copy and vanish with it)
    is refused, the modules the driver needs after training are imported
    now, and the driver moves to the system temp folder.
    """
    if "://" not in store and not os.path.isabs(os.path.expanduser(store)):
        raise ValueError(f"store {store!r} is a relative path; under `ray job submit` it would be written into Ray's "
                         "temporary copy of --working-dir, which Ray deletes: pass an absolute --store on shared "
                         "storage, or s3:// / gs://")
    if report is not None and not os.path.isabs(report):
        raise ValueError(f"--report {report!r} is a relative path; under `ray job submit` give an absolute path")
    import dynstudy.analysis.pipeline.analyze  # noqa: F401
    import dynstudy.analysis.pipeline.catalog  # noqa: F401  (imported before the working directory can go)
    import dynstudy.analysis.pipeline.ray_dispatch  # noqa: F401
    import dynstudy.analysis.report.build  # noqa: F401
    import dynstudy.study.orchestrate  # noqa: F401

    os.chdir(tempfile.gettempdir())


#: What ``dynstudy run`` needs beyond an analysis-only install (the ``train`` extra).
TRAINING_STACK = ("torch", "torchvision", "timm", "ray", "sklearn")


#: What ``dynstudy capture`` needs of it (no Ray: it runs in this process).
CAPTURE_STACK = ("torch", "torchvision", "sklearn")


def check_training_stack(modules: tuple[str, ...] = TRAINING_STACK, what: str = "training") -> None:
    """Name the missing packages of ``modules`` (what ``what`` needs) and the extra that brings them."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"{what} needs {', '.join(missing)}, which this install lacks: pip install "
                         "'dynstudy[train]' (analyze, sql, report and status work without them)")


def cmd_run(args) -> int:
    check_training_stack()
    spec = load_spec(args.spec, {"store": args.store})
    if _inside_ray_job():
        _leave_job_working_dir(spec.store, args.report)
    from dynstudy.study.orchestrate import run_study

    verbosity = "quiet" if args.quiet else "verbose" if args.verbose else "events"
    summary = run_study(spec, resume=args.resume, replace=args.replace, address=args.address, verbosity=verbosity)
    if args.no_analyze:
        return 0 if summary["failed"] == 0 and not summary["unfinished"] else 1
    from dynstudy.analysis.pipeline.analyze import analyze
    from dynstudy.analysis.pipeline.report_catalog import report_catalog
    from dynstudy.analysis.report.build import write_report

    analyze(summary["store"], workers=None, address=cluster_address(args.address))  # on the cluster, if one trained
    out = Path(args.report) if args.report else default_report(summary["store"])
    write_report(report_catalog(summary["store"]), out, title=f"dynstudy: {spec.name}")
    print(f"\nreport: {out.resolve()}\nquery:  dynstudy sql --store {summary['store']} \"SELECT * FROM run_summary\"")
    return 0 if summary["failed"] == 0 and not summary["unfinished"] else 1


def cmd_capture(args) -> int:
    """One run captured from saved checkpoints (:mod:`dynstudy.jobs.capture.checkpoint_capture`)."""
    check_training_stack(CAPTURE_STACK, "dynstudy capture")
    from dynstudy.jobs.capture.checkpoint_capture import CaptureRequest, capture_checkpoints

    order = tuple(n.strip() for n in args.order.split(",") if n.strip()) if args.order else None
    req = CaptureRequest(args.checkpoints, args.model, args.dataset, args.store, args.run_id, args.seed,
                         args.probe_size, args.channels_per_stage, order, args.optimizer, args.data_root, args.stem,
                         tuple(args.stages.split(",")) if args.stages else None)
    done = capture_checkpoints(req)
    epochs = done["epochs"]
    print(f"capture: run {done['run_id']} {done['status']}: {len(epochs)} checkpoints as epochs "
          f"{epochs[0]}..{epochs[-1]} "
          f"(numbered {'as the checkpoints state' if done['numbering'] == 'checkpoints' else 'in order'}); "
          f"train_metrics from the checkpoints: {', '.join(done['records']) or 'none'}; store {args.store}")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dynstudy")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    default_store = os.environ.get("DYNSTUDY_STORE", DEFAULT_STORE)
    store_help = (f"store directory or s3:// / gs:// URI (default: $DYNSTUDY_STORE if set, else {DEFAULT_STORE}; "
                  f"now {default_store})")
    p = argparse.ArgumentParser(prog="dynstudy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"dynstudy {_version()}")
    p.add_argument("--debug", action="store_true", help="on an error, print its traceback too")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a study (default: the demo), then analyse and report")
    r.add_argument("spec", nargs="?", default="demo", help="YAML spec file or preset name (default: demo)")
    r.add_argument("--store", default=None, help="store directory or s3:// / gs:// URI (default: the spec's `store`)")
    r.add_argument("--resume", action="store_true",
                   help="continue the unfinished runs of this study from their checkpoints")
    r.add_argument("--replace", action="store_true",
                   help="remove the files of this study's runs already in the store and train them again")
    r.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a local instance)")
    r.add_argument("--no-analyze", action="store_true", help="stop after training")
    r.add_argument("--report", default=None,
                   help="HTML report path (default: <store>/report.html; ./<prefix>-report.html for an object store)")
    noise = r.add_mutually_exclusive_group()
    noise.add_argument("--quiet", action="store_true", help="no progress lines, only the summary and errors")
    noise.add_argument("--verbose", action="store_true", help="also one line per epoch of every run")
    r.set_defaults(func=cmd_run)

    a = sub.add_parser("analyze", help="compute metric tables from the signal files")
    a.add_argument("--store", default=default_store, help=store_help)
    a.add_argument("--force", action="store_true", help="re-analyse runs that are already current")
    a.add_argument("--workers", type=int, default=None, help="parallel processes (default: one per CPU)")
    a.add_argument("--address", default=None,
                   help="Ray cluster address: each run's analysis is a task there (default: $RAY_ADDRESS, else this "
                        "machine's processes); needs the train extra")
    a.add_argument("--plateau-points", type=float, default=PLATEAU_POINTS,
                   help=f"accuracy plateau: first epoch within this many points of the run's best (default "
                        f"{PLATEAU_POINTS:g})")
    a.set_defaults(func=cmd_analyze)

    s = sub.add_parser("sql", help="read-only SQL over the store's tables")
    s.add_argument("query", help="one or more queries (SELECT, FROM, VALUES, DESCRIBE, SUMMARIZE, SHOW, EXPLAIN)")
    s.add_argument("--store", default=default_store, help=store_help)
    s.add_argument("--format", choices=FORMATS, default="table",
                   help="table (for reading: rounded, cut to --limit rows) or csv / json / parquet (every row, "
                        "full precision; parquet needs --output)")
    s.add_argument("--output", metavar="FILE", default=None, help="write the result here instead of stdout")
    s.add_argument("--limit", type=int, default=50, help="rows printed at most by --format table (default 50)")
    s.add_argument("--run", action="append", metavar="RUN_ID", default=None,
                   help="open only this run's files of the per-run tables (repeatable); the cross-run tables whole")
    s.set_defaults(func=cmd_sql)

    rep = sub.add_parser("report", help="write the HTML report and CSV tables")
    rep.add_argument("--store", default=default_store, help=store_help)
    rep.add_argument("--out", default=None,
                     help="HTML path (default: <store>/report.html; ./<prefix>-report.html for an object store)")
    rep.set_defaults(func=cmd_report)

    st = sub.add_parser("status", help="runs per cell by status, and the running runs' epochs and attempts")
    st.add_argument("--store", default=default_store, help=store_help)
    st.set_defaults(func=cmd_status)

    so = sub.add_parser("stopping", help="stopping rules replayed on the store's curves, settings chosen without "
                                         "peeking, each against patience")
    so.add_argument("--store", default=default_store, help=store_help)
    so.add_argument("--tolerance", type=float, default=STOP_TOLERANCE,
                    help=f"points of val accuracy a chosen setting may give up against the best (default "
                         f"{STOP_TOLERANCE:g})")
    so.add_argument("--margin", type=float, default=STOP_MARGIN,
                    help=f"extra points against patience that still count as equal (default {STOP_MARGIN:g})")
    so.add_argument("--runs", action="store_true", help="every run, rule and setting instead of the per-cell summary")
    so.add_argument("--format", choices=FORMATS, default="table", help="as for sql")
    so.add_argument("--output", metavar="FILE", default=None, help="write the result here instead of stdout")
    so.add_argument("--limit", type=int, default=100, help="rows printed at most by --format table (default 100)")
    so.set_defaults(func=cmd_stopping)

    ex = sub.add_parser("export", help="send a study's per-epoch metrics, run summaries and cell variability to "
                                       "MLflow, W&B or TensorBoard (again: nothing is sent twice)")
    ex.add_argument("--store", default=default_store, help=store_help)
    ex.add_argument("--to", required=True, choices=EXPORT_TARGETS, help="the tracker")
    ex.add_argument("--uri", default=None,
                    help="mlflow: tracking URI (default $MLFLOW_TRACKING_URI); wandb: the folder it writes into "
                         "(default $WANDB_DIR; the mode is $WANDB_MODE); tensorboard: the log folder (default "
                         "<store>/_tensorboard/<study>)")
    ex.add_argument("--project", default=None, help="MLflow experiment or W&B project (default: the study's name)")
    ex.set_defaults(func=cmd_export)

    c = sub.add_parser("capture", help="capture a run's trajectory from its saved checkpoints (torch.save, Lightning, "
                                       "Hugging Face) as a run of the store")
    c.add_argument("--checkpoints", required=True, metavar="DIR", help="the folder the checkpoints are in")
    c.add_argument("--model", required=True,
                   help="the dynstudy model they are of: a zoo name, timm/<name>, torchvision/<name> or "
                        "module:function; hf: the Hugging Face architecture in the checkpoint folders' config.json")
    c.add_argument("--dataset", required=True, help="the dataset they were trained on (its classes, channels, probe)")
    c.add_argument("--store", default=default_store, help=store_help)
    c.add_argument("--run-id", default=None, help="the run's id (default: ckpt-<folder name>-s<seed>)")
    c.add_argument("--seed", type=int, default=0, help="the run's seed: fixes the channel draw (default 0)")
    c.add_argument("--probe-size", type=int, default=None,
                   help="probe images: the dataset's first P validation images (default: the model's paper P, else "
                        "2048)")
    c.add_argument("--channels-per-stage", type=int, default=32, help="metric channels per stage, K (default 32)")
    c.add_argument("--order", default=None, metavar="FILE1,FILE2,...",
                   help="the checkpoints in training order, names inside DIR (default: by the epoch or step in their "
                        "names)")
    c.add_argument("--optimizer", default="unknown", help="the cell's optimizer label (default: unknown)")
    c.add_argument("--data-root", default=None, help="the dataset's files (cifar10, cifar100, imagefolder)")
    c.add_argument("--stages", default=None, metavar="M1,M2,...",
                   help="module names to capture (default: the model's stages; hf: four feature levels)")
    c.add_argument("--stem", choices=("stock", "cifar"), default="stock",
                   help="the zoo model's stem it was trained with (default: stock)")
    c.set_defaults(func=cmd_capture)

    pr = sub.add_parser("presets", help="list the shipped study specs")
    pr.add_argument("--show", metavar="NAME", help="print only this preset's YAML (e.g. > my_study.yaml)")
    pr.set_defaults(func=cmd_presets)
    return p


def _where(err: BaseException, start_dir: str | None) -> str:
    """`` (in f, file:line: code)`` for an OS error that names no path (nor does its cause), else ''.

    The line is the innermost one with source (a frozen stdlib module has
    none), and a working directory ``start_dir`` that has gone since the
    command started (what ``os.getcwd()`` fails on) is named.
    """
    while err is not None:
        if isinstance(err, OSError) and err.errno is not None and not err.filename and err.__traceback__:
            frames = traceback.extract_tb(err.__traceback__)
            code = next((f for f in reversed(frames) if f.line), frames[-1])
            at = f"{code.filename}:{code.lineno}: {code.line}"
            where = f"in {code.name}, {at}" if code is frames[-1] else f"in {frames[-1].name}, called at {at}"
            if start_dir is not None and not os.path.isdir(start_dir):
                where += f"; the working directory {start_dir} no longer exists"
            return f" ({where})"
        err = err.__cause__
    return ""


def _fix(err: BaseException) -> str:
    """What to do about an OS error the command met writing: ``; <fix>``, or '' for any other error."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return "; the disk is full: free space, then run the command again"
    if isinstance(err, OSError) and err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return ("; the store (and a report's --out) must be writable: fix the permissions, or copy the store "
                "somewhere writable")
    return ""


def main(argv=None) -> int:
    """Run one command; an error is one line on stderr (``--debug``: with its traceback)."""
    args = build_parser().parse_args(argv)
    from dynstudy.study.orchestrate import StudyError

    try:
        start_dir = os.getcwd()
    except FileNotFoundError:
        start_dir = None

    try:
        return args.func(args)
    except (SpecError, FileNotFoundError, ValueError, StudyError, OSError) as err:
        if args.debug:
            traceback.print_exc()
        expected = (isinstance(err, (SpecError, ValueError))
                    or (isinstance(err, FileNotFoundError) and err.errno is None))
        kind = "" if expected or isinstance(err, StudyError) else f"{type(err).__name__}: "
        print(f"dynstudy {args.command}: {kind}{err}{_where(err, start_dir)}{_fix(err)}", file=sys.stderr)
        return 2 if expected else 1


if __name__ == "__main__":
    sys.exit(main())
