"""cluster.yaml passes Ray's own autoscaler config validation."""
from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = yaml.safe_load((Path(__file__).parent.parent / "cluster.yaml").read_text())


def test_cluster_yaml_is_valid_for_ray():
    validate_config(prepare_config(copy.deepcopy(CLUSTER)))


def test_cluster_shape():
    nodes = CLUSTER["available_node_types"]
    assert nodes[CLUSTER["head_node_type"]]["resources"] == {"CPU": 0}  # trials never land on the head
    gpu = nodes["gpu_worker"]["node_config"]["InstanceType"]
    assert gpu.split(".")[0] in {"g5", "g6", "g6e", "p4d", "p5"}
    assert any("pip install" in c and "-e ." in c for c in CLUSTER["setup_commands"])
    assert "/home/ubuntu/dynstudy" in CLUSTER["file_mounts"]


def test_validation_catches_a_typo():
    bad = copy.deepcopy(CLUSTER)
    bad["available_node_types"]["gpu_worker"]["min_workerz"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))
