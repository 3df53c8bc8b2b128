"""DYNSTUDY_INJECT_FAULT: parsing and the once-per-run counting."""
from __future__ import annotations

import pytest

from jobs import faults


def test_parse_and_errors():
    assert faults.parse_fault("epoch=2,times=1,mode=exit") == {"epoch": 2, "times": 1, "mode": "exit"}
    for bad, word in [("epoch=x", "epoch='x'"), ("mode=boom,epoch=1", "mode='boom'"), ("times=1", "epoch=N"),
                      ("colour=red", "colour=red")]:
        with pytest.raises(ValueError, match=word):
            faults.parse_fault(bad)


def test_fires_at_its_epoch_at_most_times(tmp_path, monkeypatch):
    monkeypatch.setenv(faults.ENV, "epoch=2,times=2")
    monkeypatch.setenv("DYNSTUDY_FAULT_DIR", str(tmp_path))
    faults.maybe_inject(epoch=1, step=5, run_id="a")  # not its epoch
    for _ in range(2):
        with pytest.raises(faults.InjectedFault):
            faults.maybe_inject(epoch=2, step=9, run_id="a")
    faults.maybe_inject(epoch=2, step=9, run_id="a")  # budget spent
    with pytest.raises(faults.InjectedFault):
        faults.maybe_inject(epoch=2, step=9, run_id="b")  # counted per run
    monkeypatch.delenv(faults.ENV)
    faults.maybe_inject(epoch=2, step=9, run_id="c")
