"""A spec's models: the four name forms, entries with a label, kwargs and stages, stages per override, and the
run ids and trial configs they make (the zoo's exactly as before)."""
from __future__ import annotations

import hashlib

import pytest

import dynstudy.study.cli as cli
from dynstudy.study.grid import expand
from dynstudy.study.spec import SpecError, parse_spec

BASE = {"name": "t", "datasets": ["digits", "synthetic"], "seeds": [0]}
VIT = {"name": "timm/vit_tiny_patch16_224", "label": "vit_t16", "kwargs": {"img_size": 16, "patch_size": 4},
       "stages": ["blocks.2", "blocks.5", "blocks.8", "blocks.11"]}


def _trials(**patch):
    return expand(parse_spec({**BASE, **patch}), "/store")


def test_zoo_trials_keep_their_config_and_run_ids():
    trials = _trials(models=["resnet18", "tiny_cnn"])
    assert all(not {"model_name", "model_kwargs", "stages"} & set(t) for t in trials)
    key = b"t|resnet18|digits|sgd|0"
    assert trials[0]["model"] == "resnet18"
    assert trials[0]["run_id"] == f"resnet18-digits-sgd-s0-{hashlib.sha1(key).hexdigest()[:8]}"


def test_the_four_forms_and_entries():
    trials = _trials(models=["tiny_cnn", "timm/convnext_atto", "torchvision/regnet_y_400mf",
                             "mylab.nets:build_net", VIT])
    by_model = {t["model"]: t for t in trials if t["dataset"]["name"] == "digits"}
    assert list(by_model) == ["tiny_cnn", "timm/convnext_atto", "torchvision/regnet_y_400mf", "mylab.nets:build_net",
                              "vit_t16"]
    assert by_model["timm/convnext_atto"]["run_id"].startswith("timm_convnext_atto-digits-sgd-s0-")
    assert by_model["mylab.nets:build_net"]["run_id"].startswith("mylab.nets_build_net-digits-")
    vit = by_model["vit_t16"]
    assert (vit["model_name"], vit["model_kwargs"], vit["stages"]) == (VIT["name"], VIT["kwargs"], VIT["stages"])
    assert "stages" not in by_model["timm/convnext_atto"]  # chosen from the model before Ray starts


def test_overrides_name_stages_per_cell_and_match_labels():
    trials = _trials(models=["tiny_cnn", VIT], overrides=[
        {"match": {"models": ["vit_t16"], "datasets": ["synthetic"]}, "stages": ["blocks.0", "blocks.11"]},
        {"match": {"models": ["tiny_cnn"]}, "stages": ["stage2", "stage4"], "capture": {"channels_per_stage": 16}}])
    stages = {(t["model"], t["dataset"]["name"]): t.get("stages") for t in trials}
    assert stages == {("tiny_cnn", "digits"): ["stage2", "stage4"], ("tiny_cnn", "synthetic"): ["stage2", "stage4"],
                      ("vit_t16", "digits"): VIT["stages"], ("vit_t16", "synthetic"): ["blocks.0", "blocks.11"]}


@pytest.mark.parametrize("models, field, words", [
    (["timm/"], "models.0", ["timm/<name> needs a name"]),
    (["mylab.nets:"], "models.0", ["module.path:function"]),
    (["resnet"], "models.0", ["unknown model 'resnet'", "close matches: resnet50", "resnet18"]),
    ([7], "models.0", ["valid string"]),
    ([{"name": "timm/resnet18", "stages": []}], "models.0.stages", ["at least 1 item"]),
    ([{"name": "timm/resnet18", "stages": ["layer1", "layer1"]}], "models.0.stages", ["repeated: ['layer1']"]),
    ([{"name": "timm/resnet18", "label": "a b"}], "models.0.label", ["letters, digits"]),
    ([{"name": "timm/resnet18", "stage": ["layer1"]}], "models.0.stage", ["unknown field"]),
    (["timm/resnet18", "timm/resnet18"], "models", ["unique", "different labels"]),
])
def test_bad_entries_are_named(models, field, words):
    with pytest.raises(SpecError) as err:
        parse_spec({**BASE, "models": models}, source="s.yaml")
    msg = str(err.value)
    assert f"- {field}:" in msg and all(w in msg for w in words), msg


def test_run_refuses_an_unknown_timm_name_in_one_line_before_ray(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\nmodels: [timm/convnxt_atto]\ndatasets: [digits]\nseeds: [0]\n")
    assert cli.main(["run", str(spec), "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "timm has no model 'convnxt_atto'; close matches: timm/convnext_atto" in err
    assert not (tmp_path / "store").exists()  # refused before anything was written
