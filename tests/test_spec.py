"""Study specs: presets validate; every bad field is named with its value and the fix."""
from __future__ import annotations

import pytest

from study.grid import expand, make_run_id
from study.spec import MODEL_NAMES, SpecError, load_spec, parse_spec, preset_names

BASE = {"name": "t", "models": ["tiny_cnn"], "datasets": ["digits"], "seeds": [0, 1]}


def test_presets_are_listed_and_valid():
    assert {"demo", "smoke", "paper"} <= set(preset_names())
    demo = load_spec("demo")
    assert demo.n_trials == 2 * 2 * 1 * 2
    assert load_spec("smoke").n_trials == 2


def test_defaults_are_the_paper_protocol():
    spec = parse_spec(BASE)
    assert spec.capture.probe_size == 2048 and spec.capture.channels_per_stage == 32
    assert spec.analysis.h_opt == 0.7 and spec.analysis.sigma_h == 0.15 and spec.analysis.w_h == 0.5
    assert spec.analysis.vol_threshold == 0.35 and spec.analysis.vol_window == 3
    assert spec.train.batch_size == 512 and spec.train.plateau_patience == 5 and spec.train.early_stopping_patience == 10
    assert spec.optimizers[0].lr == 0.1 and spec.optimizers[0].momentum == 0.9


@pytest.mark.parametrize("patch, field, words", [
    ({"models": ["resnet9000"]}, "models", ["resnet9000", "resnet18"]),
    ({"train": {"epochs": -1}}, "train.epochs", ["-1", "greater than or equal to 1"]),
    ({"seeds": [0, 1.5]}, "seeds", ["1.5", "integers"]),
    ({"seeds": ["a"]}, "seeds", ["'a'"]),
    ({"seeds": [1, 1]}, "seeds", ["unique"]),
    ({"datasets": [{"name": "cifar10", "root": "/nonexistent/cifar"}]}, "datasets.0", ["/nonexistent/cifar", "does not exist"]),
    ({"datasets": [{"name": "cifar10"}]}, "datasets.0", ["root", "download"]),
    ({"datasets": ["mnist"]}, "datasets.0.name", ["mnist", "digits"]),
    ({"store": "ftp://host/x"}, "store", ["ftp", "s3://"]),
    ({"trian": {"epochs": 3}}, "trian", ["unknown field"]),
    ({"capture": {"probe_size": 20}}, "(top level)", ["probe_size=20", "at least 32"]),
    ({"optimizers": [{"name": "sgd"}, {"name": "sgd"}]}, "(top level)", ["unique", "sgd"]),
])
def test_bad_fields_are_named(patch, field, words):
    with pytest.raises(SpecError) as err:
        parse_spec({**BASE, **patch}, source="test.yaml")
    msg = str(err.value)
    assert "test.yaml" in msg and f"- {field}:" in msg, msg
    for w in words:
        assert w in msg, msg


def test_empty_and_malformed_files(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(SpecError, match="non-empty YAML mapping"):
        load_spec(str(empty))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(str(bad))
    with pytest.raises(SpecError, match="not found"):
        load_spec(str(tmp_path / "missing.yaml"))
    with pytest.raises(SpecError, match="neither a spec file nor a preset"):
        load_spec("no-such-preset")


def test_model_names_match_the_zoo():
    from jobs.models import MODEL_NAMES as ZOO

    assert set(MODEL_NAMES) == set(ZOO)


def test_run_ids_are_stable_unique_and_study_scoped():
    spec = load_spec("demo")
    ids = [t["run_id"] for t in expand(spec, "/tmp/store")]
    assert len(set(ids)) == len(ids) == spec.n_trials
    assert ids == [t["run_id"] for t in expand(spec, "/elsewhere")]
    assert make_run_id("a", "m", "d", "o", 0) != make_run_id("b", "m", "d", "o", 0)
    assert all(c.isalnum() or c in "_-." for i in ids for c in i)


def test_resources_no_local_node_can_grant():
    from study.orchestrate import check_resources

    spec = parse_spec({**BASE, "resources": {"cpus_per_trial": 4, "gpus_per_trial": 1}})
    with pytest.raises(SpecError, match=r"resources.cpus_per_trial=4\.?0? but this machine offers 2 CPU"):
        check_resources(spec, {"CPU": 2.0})
    with pytest.raises(SpecError, match=r"resources.gpus_per_trial=1\.?0? but this machine offers 0 GPU"):
        check_resources(spec, {"CPU": 8.0})
    check_resources(spec, {"CPU": 8.0, "GPU": 1.0})


def test_overrides_apply_per_cell_and_are_validated():
    spec = load_spec("paper")
    trials = {(t["model"], t["dataset"]["name"]): t for t in expand(spec, "/s")}
    assert len(trials) == 18 and spec.n_trials == 90
    assert trials[("vgg16_bn", "cifar10")]["optimizer"]["lr"] == 0.01
    assert trials[("vgg16_bn", "cifar10")]["analysis"]["smooth_window"] == 15
    assert trials[("densenet121", "cifar100")]["optimizer"]["weight_decay"] == 1e-4
    assert trials[("vit_b_16", "cifar10")]["capture"]["probe_size"] == 256
    assert trials[("resnet18", "cifar10")]["optimizer"]["lr"] == 0.1
    with pytest.raises(SpecError, match=r"overrides.0.match.models: \['vgg16_bn'\] not in"):
        parse_spec({**BASE, "overrides": [{"match": {"models": ["vgg16_bn"]}, "optimizer": {"lr": 0.01}}]})
    with pytest.raises(SpecError, match=r"overrides.0: lr: .*greater than 0"):
        parse_spec({**BASE, "overrides": [{"match": {"models": ["tiny_cnn"]}, "optimizer": {"lr": -1}}]})
