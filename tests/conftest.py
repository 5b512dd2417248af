"""Shared fixtures: real data paths, one session-scoped local Ray, and a real S3 endpoint (moto_server)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path | None:
    """The shared public datasets: $RETSAM_DATA or ../shared/data beside the checkout."""
    env = os.environ.get("RETSAM_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = data_root()
    if root is None:
        pytest.skip("shared datasets not found: set RETSAM_DATA or place them at ../shared/data")
    return root


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the whole session (4 logical CPUs: actors, reads and writes must coexist)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real HTTP S3 endpoint: moto_server on 127.0.0.1, started and stopped here.

    Yields the endpoint URL; AWS_* variables are set so that s3fs, boto3 and Ray workers all reach it.
    """
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto_server did not start")
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    yield url
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture()
def s3_bucket(s3_endpoint):
    """A fresh bucket on the moto endpoint; returns its name."""
    import uuid

    import boto3

    name = f"retsam-test-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


# Session fixtures shared by the pipeline, CLI and QC tests: registered once here so the demo cohort is built and
# run once per session (a fixture imported into several test modules would be instantiated once per module).
from tests.pipeline_fixtures import demo_cohort, demo_run  # noqa: E402,F401
