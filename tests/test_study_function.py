"""A study of the user's own training function (``train.function``): under Ray Tune with an injected hard exit,
checked against the function run without Ray; a function that cannot be imported is refused before Ray; one that
returns without finishing its recorder leaves its run marked failed."""
from __future__ import annotations

import io
from pathlib import Path

import duckdb
import pytest

from dynstudy.analysis.pipeline.analyze import analyze
from dynstudy.analysis.pipeline.catalog import open_catalog
from dynstudy.analysis.report.build import write_report
from dynstudy.jobs.trial import faults
from dynstudy.jobs.trial.session import LocalSession
from dynstudy.jobs.trial.user_function import RETURNED_UNFINISHED, run_function_trial
from dynstudy.store_contract.files import read_run_row
from dynstudy.study.grid import expand
from dynstudy.study.orchestrate import run_study
from dynstudy.study.spec import load_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def rows(store, table, order):
    rel = duckdb.connect().sql(f"SELECT * EXCLUDE (epoch_time_s, capture_time_s) FROM read_parquet("
                               f"'{store}/{table}/**/*.parquet', hive_partitioning=false) ORDER BY {order}"
                               if table == "train_metrics" else
                               f"SELECT * FROM read_parquet('{store}/{table}/**/*.parquet', hive_partitioning=false) "
                               f"ORDER BY {order}")
    return rel.fetchall()


@pytest.fixture
def in_examples(monkeypatch):
    """The examples folder as the working directory: the spec names study_train:main, imported from there."""
    monkeypatch.chdir(EXAMPLES)
    return load_spec("study_digits.yaml")


@pytest.mark.slow  # Ray Tune with 2 runs of 3 epochs and a retry each: about 40 s on 2 cores
def test_a_function_study_survives_a_hard_exit_exactly_once(tmp_path, monkeypatch, in_examples):
    for trial in expand(in_examples, str(tmp_path / "clean")):  # each seed run once without Ray
        run_function_trial(trial, LocalSession(tmp_path / "ck" / trial["run_id"]))
    monkeypatch.setenv(faults.ENV, "epoch=2,times=1,mode=exit")
    out = io.StringIO()
    summary = run_study(in_examples, store=str(tmp_path / "s"), num_cpus=2, out=out)
    assert (summary["finished"], summary["failed"]) == (2, 0), out.getvalue()
    assert out.getvalue().count("retrying from its last checkpoint") == 2
    for table, order in (("activations", "run_id, capture, stage, rank, sample"), ("train_metrics", "run_id, epoch")):
        assert rows(tmp_path / "s", table, order) == rows(tmp_path / "clean", table, order), table
    con = duckdb.connect()
    assert con.sql(f"SELECT list(attempts ORDER BY seed), list(DISTINCT status) FROM read_parquet("
                   f"'{tmp_path}/s/runs/**/*.parquet')").fetchall() == [([2, 2], ["finished"])]
    analyze(str(tmp_path / "s"), out=io.StringIO())
    write_report(open_catalog(str(tmp_path / "s")), tmp_path / "r.html")
    assert "Retried or resumed runs (2)" in (tmp_path / "r.html").read_text()


def test_a_function_that_cannot_be_imported_is_refused_before_ray(tmp_path, monkeypatch, in_examples):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # never reached
    train = in_examples.train.model_copy(update={"function": "study_train:mian"})
    spec = in_examples.model_copy(update={"train": train})
    with pytest.raises(ValueError, match=r"invalid study spec: train.function 'study_train:mian': module 'study_train' "
                                         r"has no function 'mian'; close names: main"):
        run_study(spec, store=str(tmp_path), out=io.StringIO())
    assert not list(tmp_path.rglob("*.parquet"))


def test_a_function_returning_without_finish_leaves_its_run_failed(tmp_path, in_examples, monkeypatch):
    import study_train

    monkeypatch.setattr(study_train, "main", capture_only)
    (trial, _) = expand(in_examples, str(tmp_path))
    trial = {**trial, "train": {**trial["train"], "epochs": 1}}
    run_function_trial(trial, LocalSession(tmp_path / "ck"))
    row = read_run_row(str(tmp_path), trial["run_id"])
    assert (row["status"], row["error"]) == ("failed", RETURNED_UNFINISHED)


def capture_only(trial):
    """A training function that captures the untrained network and returns without finishing."""
    import study_train

    rec = trial.recorder(study_train.make_model(), probe=study_train.digits()[1])
    rec.capture(epoch=0)
