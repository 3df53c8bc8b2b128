"""Study specs: presets validate; every bad field is named with its value and the fix."""
from __future__ import annotations

import json
import re
import sys
import time

import pytest

import dynstudy.study.spec_yaml
from dynstudy.study.grid import expand, make_run_id
from dynstudy.study.spec import MODEL_NAMES, SpecError, load_spec, parse_spec, preset_names
from dynstudy.study.spec_yaml import MAX_ALIASES, MAX_SPEC_BYTES, check_size

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
    assert spec.analysis.compat == "dynstudy"  # dynstudy's channel aggregation unless asked for the authors'
    assert spec.train.batch_size == 512 and spec.train.plateau_patience == 5
    assert spec.train.early_stopping_patience == 10
    assert spec.optimizers[0].lr == 0.1 and spec.optimizers[0].momentum == 0.9


@pytest.mark.parametrize("patch, field, words", [
    ({"models": ["resnet9000"]}, "models.0", ["resnet9000", "close matches: resnet50", "resnet18", "timm/<name>"]),
    ({"train": {"epochs": -1}}, "train.epochs", ["-1", "greater than or equal to 1"]),
    ({"seeds": [0, 1.5]}, "seeds", ["1.5", "integers"]),
    ({"seeds": ["a"]}, "seeds", ["'a'"]),
    ({"seeds": [1, 1]}, "seeds", ["unique"]),
    ({"datasets": [{"name": "cifar10", "root": "/nonexistent/cifar"}]}, "datasets.0",
     ["/nonexistent/cifar", "does not exist"]),
    ({"datasets": [{"name": "cifar10"}]}, "datasets.0", ["root", "download"]),
    ({"datasets": ["mnist"]}, "datasets.0.name", ["mnist", "digits"]),
    ({"store": "ftp://host/x"}, "store", ["ftp", "s3://"]),
    ({"trian": {"epochs": 3}}, "trian", ["unknown field"]),
    ({"capture": {"probe_size": 20}}, "(top level)", ["probe_size=20", "at least 32"]),
    ({"analysis": {"compat": "paper"}}, "analysis.compat", ["'paper'", "'dynstudy'", "'authors'"]),
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
    from dynstudy.jobs.models.zoo import MODEL_NAMES as ZOO

    assert set(MODEL_NAMES) == set(ZOO)


def test_run_ids_are_stable_unique_and_study_scoped():
    spec = load_spec("demo")
    ids = [t["run_id"] for t in expand(spec, "/tmp/store")]
    assert len(set(ids)) == len(ids) == spec.n_trials
    assert ids == [t["run_id"] for t in expand(spec, "/elsewhere")]
    assert make_run_id("a", "m", "d", "o", 0) != make_run_id("b", "m", "d", "o", 0)
    assert all(c.isalnum() or c in "_-." for i in ids for c in i)


def test_resources_no_local_node_can_grant():
    from dynstudy.study.orchestrate import check_resources

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


def test_authors_compat_reaches_the_analysis_kernels():
    """analysis.compat: authors (here only for one cell) travels in the trial config to the capture kernels."""
    from dynstudy.analysis.run.capture_plan import metric_kwargs, run_params

    spec = parse_spec({**BASE, "datasets": ["digits", "synthetic"],
                       "overrides": [{"match": {"datasets": ["digits"]}, "analysis": {"compat": "authors"}}]})
    trials = {t["dataset"]["name"]: t for t in expand(spec, "/s")}
    kwargs = {name: metric_kwargs(run_params(json.dumps(t))[0]) for name, t in trials.items()}
    assert kwargs["digits"]["compat"] == "authors" and kwargs["synthetic"]["compat"] == "dynstudy"
    assert metric_kwargs(run_params(json.dumps({"analysis": {"h_opt": 0.7}}))[0])["compat"] == "dynstudy"  # older runs


# --- hostile or mistaken spec files: a clear SpecError, fast -----------------------------------------

HEAD = "name: t\nmodels: [tiny_cnn]\ndatasets: [digits]\nseeds: [0]\n"  # lines 1-4


def _spec_file(tmp_path, text: str) -> str:
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _refused(path: str, message: str, within_s: float = 2.0) -> None:
    """load_spec(path) raises SpecError with exactly ``invalid study spec <path>: <message>``, in time.

    A ``message`` that starts with a newline is a list of field errors, right after the colon.
    """
    full = f"invalid study spec {path}:{'' if message.startswith(chr(10)) else ' '}{message}"
    start = time.perf_counter()
    with pytest.raises(SpecError, match=f"^{re.escape(full)}$"):
        load_spec(path)
    assert time.perf_counter() - start < within_s


def test_oversized_spec_is_refused_before_parsing(tmp_path):
    just_over = _spec_file(tmp_path, HEAD + "description: " + "x" * MAX_SPEC_BYTES + "\n")
    _refused(just_over, "the file is 1.1 MiB; a spec is at most 1 MiB of YAML (is this the right file?)")
    # 600k characters, but 1.2 MB of UTF-8: the limit is on the encoded size
    multibyte = _spec_file(tmp_path, HEAD + "description: " + "é" * 600_000 + "\n")
    _refused(multibyte, "the file is 1.2 MiB; a spec is at most 1 MiB of YAML (is this the right file?)")
    check_size(MAX_SPEC_BYTES)
    with pytest.raises(dynstudy.study.spec_yaml.SpecYAMLError, match=r"^the file is 1\.1 MiB;"):
        check_size(MAX_SPEC_BYTES + 1)


def test_classic_alias_bomb_is_refused_while_composing(tmp_path):
    lol = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    levels = "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    bomb = _spec_file(tmp_path, HEAD + lol + levels)  # 72 aliases standing for 9**9 strings
    _refused(bomb, "YAML aliases (*name) expand to more than 10000 values by line 9, the most a spec may use "
                   "(an alias bomb?); write the values out instead")


def test_alias_count_is_limited(tmp_path):
    def overrides(n_aliases: int) -> str:
        return HEAD + "overrides:\n  - match: &m {models: [tiny_cnn]}\n" + "  - match: *m\n" * n_aliases

    spec = load_spec(_spec_file(tmp_path, overrides(MAX_ALIASES)))
    assert len(spec.overrides) == MAX_ALIASES + 1 and spec.overrides[-1].match.models == ["tiny_cnn"]
    _refused(_spec_file(tmp_path, overrides(MAX_ALIASES + 1)),
             "more than 100 YAML aliases (*name) by line 107, the most a spec may use; write the values out instead")


def test_anchors_and_merge_keys_still_work(tmp_path):
    text = HEAD + ("train: &t {epochs: 3, batch_size: 8}\n"
                   "overrides:\n  - match: {models: [tiny_cnn]}\n    train: {<<: *t, epochs: 4}\n")
    spec = load_spec(_spec_file(tmp_path, text))
    assert spec.train.epochs == 3 and spec.overrides[0].train == {"epochs": 4, "batch_size": 8}


def test_recursive_alias_is_refused(tmp_path):
    _refused(_spec_file(tmp_path, HEAD + "trian: &r [*r]\n"),
             "alias *r at line 5 is inside its own anchor &r; a spec cannot contain itself")


def test_deep_nesting_is_refused_fast(tmp_path):
    _refused(_spec_file(tmp_path, HEAD + "x: " + "[" * 100_000 + "\n"),
             "nesting deeper than 32 levels at line 5; a spec needs only a few levels (look for unclosed brackets)")
    # the top-level mapping is level 1: 31 brackets inside it are 32 levels, still read
    with pytest.raises(SpecError, match=r"- trian: unknown field; .* \(got \[{30}\[\]\]{30}\)$"):
        load_spec(_spec_file(tmp_path, HEAD + "trian: " + "[" * 31 + "]" * 31 + "\n"))
    _refused(_spec_file(tmp_path, HEAD + "trian:\n  " + "[" * 32 + "]" * 32 + "\n"),
             "nesting deeper than 32 levels at line 6; a spec needs only a few levels (look for unclosed brackets)")


def test_recursion_error_is_a_spec_error(tmp_path, monkeypatch):
    monkeypatch.setattr(dynstudy.study.spec_yaml, "MAX_DEPTH", 10**9)  # the backstop behind the depth limit
    _refused(_spec_file(tmp_path, HEAD + "x: " + "[" * 100_000 + "\n"),
             "nested too deeply to read (Python's recursion limit); a spec needs only a few levels")


@pytest.mark.parametrize("extra, message", [
    ("name: u\n", "duplicate key 'name' at the top level (lines 1 and 5); keep one"),
    ("train:\n  epochs: 3\n  batch_size: 4\n  epochs: 5\n",
     "duplicate key 'epochs' in train (lines 6 and 8); keep one"),
    ("train: {epochs: 3, 'epochs': 4}\n", "duplicate key 'epochs' in train (lines 5 and 5); keep one"),
    ("overrides:\n  - match: {models: [tiny_cnn]}\n    optimizer: {lr: 0.1,\n                lr: 0.2}\n",
     "duplicate key 'lr' in overrides.0.optimizer (lines 7 and 8); keep one"),
    ("capture: {1: a, 1.0: b}\n", "duplicate key '1.0' in capture (lines 5 and 5); keep one"),
])
def test_duplicate_keys_are_refused(tmp_path, extra, message):
    _refused(_spec_file(tmp_path, HEAD + extra), message)


def test_duplicate_keys_in_a_list_item_name_the_item(tmp_path):
    text = HEAD.replace("datasets: [digits]\n", "datasets:\n  - name: digits\n    n_train: 3\n    n_train: 4\n")
    _refused(_spec_file(tmp_path, text), "duplicate key 'n_train' in datasets.0 (lines 5 and 6); keep one")


@pytest.mark.parametrize("name", ["café", "ｔ", "٣", ".", "..", "a/b", "a b", "", "t\n"])
def test_study_name_is_an_ascii_slug(tmp_path, name):
    path = _spec_file(tmp_path, HEAD.replace("name: t", f"name: {json.dumps(name)}"))
    _refused(path, f"\n  - name: use ASCII letters, digits, '_', '-' and '.' only, and not '.' or '..' (got {name!r})")


@pytest.mark.parametrize("name", ["paper-2024.v2_B", "...", "a..b"])
def test_study_name_slugs_that_pass(tmp_path, name):
    assert load_spec(_spec_file(tmp_path, HEAD.replace("name: t", f"name: {json.dumps(name)}"))).name == name


@pytest.mark.parametrize("label, ok", [("sgd_0.1", True), ("Adam.2", True), ("café", False), ("sgd-1", False),
                                       ("a b", False)])
def test_optimizer_label_is_ascii(tmp_path, label, ok):
    path = _spec_file(tmp_path, HEAD + f"optimizers: [{{name: sgd, label: {json.dumps(label)}}}]\n")
    if ok:
        assert load_spec(path).optimizers[0].cell_label == label
    else:
        _refused(path, f"\n  - optimizers.0.label: use ASCII letters, digits, '_' and '.' only (got {label!r})")


def test_error_messages_show_at_most_200_characters_of_a_value(tmp_path):
    long = _spec_file(tmp_path, HEAD + "trian: " + "x" * 5000 + "\n")
    _refused(long, "\n  - trian: unknown field; check its spelling against the spec reference (docs/spec.md) "
                   f"(got '{'x' * 199}…)")
    bomb = ["lol"] * 9
    for _ in range(9):
        bomb = [bomb] * 9  # 9**10 strings, shared: a full repr would never finish
    start = time.perf_counter()
    with pytest.raises(SpecError, match=r"- extra: unknown field; .*\(got \[{10}'lol', 'lol'.{150,}…\)$") as err:
        parse_spec({**BASE, "extra": bomb})
    assert time.perf_counter() - start < 2.0 and len(str(err.value)) < 400


def test_error_lists_are_cut_after_20(tmp_path):
    path = _spec_file(tmp_path, HEAD.replace("models: [tiny_cnn]", f"models: {list(range(1000))}"))
    lines = [f"  - models.{i}: Input should be a valid string (got {i})" for i in range(20)]
    _refused(path, "\n" + "\n".join(lines) + "\n  … and 980 more; fix these first")


def test_unreadable_text_and_values(tmp_path):
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"name: t\n\x80\x81")
    _refused(str(binary), "not UTF-8 text (byte 8 is 0x80); save the spec as UTF-8 YAML (is this the right file?)")
    month_13 = _spec_file(tmp_path, HEAD.replace("name: t", "name: 2024-13-01"))
    _refused(month_13, "not valid YAML: month must be in 1..12")
    if not hasattr(sys, "get_int_max_str_digits"):
        return  # Python before 3.10.7 builds any int
    big_seed = _spec_file(tmp_path, HEAD.replace("seeds: [0]", "seeds: [" + "9" * 5000 + "]"))
    with pytest.raises(SpecError, match=f"^invalid study spec {re.escape(big_seed)}: not valid YAML: Exceeds the limit "
                                        r"\(4300 digits\) for integer string conversion"):
        load_spec(big_seed)


def test_the_spec_and_the_analysis_share_one_set_of_settings():
    """The spec's ``analysis`` section is the analysis parameters, field for field, default for default."""
    from dynstudy.analysis.kernels.params import DEFAULTS, NAMES
    from dynstudy.study.spec import AnalysisSpec

    assert sorted(AnalysisSpec.model_fields) == sorted(NAMES)
    assert AnalysisSpec().model_dump() == DEFAULTS.as_dict()
