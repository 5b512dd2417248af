"""cluster.yaml validates against the Ray autoscaler schema shipped in the ray wheel, and follows our rules."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[1]


def _cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_matches_ray_schema():
    import ray

    schema = json.loads(Path(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json").read_text())
    jsonschema.validate(_cluster(), schema)


def test_cluster_layout():
    c = _cluster()
    types = c["available_node_types"]
    head = types[c["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # the head does no work
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) > 0]
    cpu = [n for n, t in types.items() if n != c["head_node_type"] and not t["resources"].get("GPU")]
    assert gpu and cpu
    for name, t in types.items():
        if name != c["head_node_type"]:
            assert "IamInstanceProfile" in t["node_config"], f"{name} workers need their own S3 role"
            assert t["max_workers"] >= t.get("min_workers", 0)
    assert gpu[0]["resources"]["CPU"] >= 8  # decoding needs 8-16 vCPUs per GPU
    assert any("pip install" in cmd and "retsam" in cmd for cmd in c["setup_commands"])
    assert any("--num-cpus=0" in cmd for cmd in c["head_start_ray_commands"])
    # token authentication on every node, with the one token the launcher copies to them (and clients read)
    starts = [cmd for cmd in c["head_start_ray_commands"] + c["worker_start_ray_commands"] if "ray start" in cmd]
    assert len(starts) == 2 and all(cmd.startswith("RAY_AUTH_MODE=token ray start") for cmd in starts)
    assert c["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def test_job_entry_points_forward_to_the_cli():
    import sys

    sys.path.insert(0, str(REPO))
    from jobs.run_cohort import job_argv

    assert job_argv(["in", "out"], "run") == ["run", "in", "out", "--address", "auto", "--no-progress"]
    assert job_argv(["out", "--address", "ray://h:10001"], "reprocess") == ["reprocess", "out", "--address", "ray://h:10001"]
