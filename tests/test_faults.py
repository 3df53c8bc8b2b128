"""DYNSTUDY_INJECT_FAULT: parsing, its error messages, and counting per run and per invocation."""
from __future__ import annotations

import re

import pytest

from dynstudy.jobs.trial import faults

EXAMPLE = '(example: DYNSTUDY_INJECT_FAULT="epoch=2,times=1,mode=exception")'


def test_parse_and_errors():
    assert faults.parse_fault("epoch=2,times=1,mode=exit") == {"epoch": 2, "times": 1, "mode": "exit"}
    assert faults.parse_fault(" step = 7 , run=abc ,") == {"step": 7, "times": 1, "mode": "exception", "run": "abc"}
    for bad, word in [("epoch=x", "epoch='x'"), ("mode=boom,epoch=1", "mode='boom'"), ("times=1", "epoch=N"),
                      ("colour=red", "colour=red")]:
        with pytest.raises(ValueError, match=word):
            faults.parse_fault(bad)


@pytest.mark.parametrize("bad, message", [
    ("epoch=abc", "epoch='abc' must be a non-negative integer"),
    ("epoch=", "epoch='' is empty; give a non-negative integer"),
    ("epoch=1,run=", "run='' is empty; give part of a run id"),
    ("foo=1", "unknown key 'foo' in 'foo=1'; allowed keys: epoch, mode, run, step, times"),
    ("epoch", "bad entry 'epoch'; use key=value with keys epoch, mode, run, step, times"),
    ("mode=boom", "mode='boom' is not a mode; allowed: exception, exit"),
    ("epoch=1,epoch=2", "epoch given twice ('epoch=1', 'epoch=2'); give each key once"),
    ("times=1", "'times=1' gives neither epoch=N nor step=N; add one"),
    ("step=-1", "step='-1' must be a non-negative integer"),
])
def test_malformed_values_name_variable_entry_and_fix(bad, message):
    with pytest.raises(ValueError, match=f"^{re.escape(f'DYNSTUDY_INJECT_FAULT: {message} {EXAMPLE}')}$"):
        faults.parse_fault(bad)


def test_check_fault_env(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    assert faults.check_fault_env() is None
    assert faults.check_fault_env({}) is None
    assert faults.check_fault_env({faults.ENV: ""}) is None
    assert faults.check_fault_env({faults.ENV: "  "}) is None
    assert faults.check_fault_env({faults.ENV: "epoch=3"}) == {"epoch": 3, "times": 1, "mode": "exception"}
    monkeypatch.setenv(faults.ENV, "step=4,mode=exit")
    assert faults.check_fault_env() == {"step": 4, "times": 1, "mode": "exit"}
    with pytest.raises(ValueError, match=re.escape("epoch='abc' must be a non-negative integer")):
        faults.check_fault_env({faults.ENV: "epoch=abc"})


def test_fires_at_its_epoch_at_most_times(tmp_path, monkeypatch):
    monkeypatch.setenv(faults.ENV, "epoch=2,times=2")
    monkeypatch.setenv(faults.FAULT_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(faults.INVOCATION_ENV, raising=False)
    faults.maybe_inject(epoch=1, step=5, run_id="a")  # not its epoch
    for _ in range(2):
        with pytest.raises(faults.InjectedFault):
            faults.maybe_inject(epoch=2, step=9, run_id="a")
    faults.maybe_inject(epoch=2, step=9, run_id="a")  # budget spent
    assert (tmp_path / "default" / "a.count").read_text() == "2"
    with pytest.raises(faults.InjectedFault):
        faults.maybe_inject(epoch=2, step=9, run_id="b")  # counted per run
    monkeypatch.delenv(faults.ENV)
    faults.maybe_inject(epoch=2, step=9, run_id="c")


def test_two_invocations_each_inject_once(tmp_path, monkeypatch):
    monkeypatch.setenv(faults.ENV, "epoch=2,times=1,mode=exception")
    monkeypatch.setenv(faults.FAULT_DIR_ENV, str(tmp_path))
    first, second = faults.new_invocation(), faults.new_invocation()
    assert first != second and re.fullmatch(r"[0-9a-f]{16}", first)
    for invocation in (first, second):
        monkeypatch.setenv(faults.INVOCATION_ENV, invocation)
        with pytest.raises(faults.InjectedFault):
            faults.maybe_inject(epoch=2, step=9, run_id="r1")
        faults.maybe_inject(epoch=2, step=9, run_id="r1")  # the retry in this invocation goes through
        assert (tmp_path / invocation / "r1.count").read_text() == "1"
    monkeypatch.setenv(faults.INVOCATION_ENV, first)
    faults.maybe_inject(epoch=2, step=9, run_id="r1")  # still spent in the first invocation


def test_marker_path(tmp_path):
    env = {faults.FAULT_DIR_ENV: str(tmp_path)}
    assert faults.marker_path("r", env) == tmp_path / "default" / "r.count"
    assert faults.marker_path("r", {**env, faults.INVOCATION_ENV: "ab12"}) == tmp_path / "ab12" / "r.count"
    assert faults.marker_path("r", {**env, faults.INVOCATION_ENV: "../x/y"}) == tmp_path / ".._x_y" / "r.count"
    assert faults.marker_path("r", {**env, faults.INVOCATION_ENV: ".."}) == tmp_path / "_" / "r.count"
