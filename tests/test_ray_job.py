"""The cluster path as the README gives it: `ray job submit --working-dir . -- python jobs/...` against a running
Ray head (started here with `ray start --head`, token authentication on, as Ray enables by default from 2.59 for
local clusters), not the in-process Ray the other tests use. A cohort run, a resubmission that skips what is
done, a refused repeated submission id, and a reprocess job from the stored masks."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, _free_port
from tests.pipeline_fixtures import copy_images

pytest.importorskip("aiohttp_cors", reason="ray job submission needs ray[default] (the test extra installs it)")

RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head with its dashboard (the job server) on free ports; yields (dashboard URL, client env)."""
    tmp = tmp_path_factory.mktemp("rayhead")
    token = tmp / "auth_token"  # a token file, as cluster.yaml mounts ~/.ray/auth_token on every node
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}
    dash = _free_port()
    # short temp dir: Ray's socket paths must stay under the 107-byte limit
    temp_dir = Path("/tmp") / f"rj{os.getpid()}"
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--port", str(_free_port()), "--dashboard-host", "127.0.0.1",
         "--dashboard-port", str(dash), "--include-dashboard", "true", "--num-cpus", "4",
         "--object-store-memory", str(300 * 2**20), "--temp-dir", str(temp_dir),
         # the session's own Ray holds the default agent ports
         *[a for flag in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
                          "--metrics-export-port", "--ray-client-server-port") for a in (flag, str(_free_port()))]],
        env=env, stdout=open(tmp / "head.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 90
    while True:
        try:
            req = urllib.request.Request(f"{url}/api/version", headers={"Authorization": f"Bearer {token.read_text()}"})
            urllib.request.urlopen(req, timeout=2).read()
            break
        except OSError:
            if head.poll() is not None or time.time() > deadline:
                os.killpg(head.pid, signal.SIGKILL)
                pytest.fail(f"ray head did not come up: {(tmp / 'head.log').read_text()[-2000:]}")
            time.sleep(1)
    yield url, env
    os.killpg(head.pid, signal.SIGTERM)  # only this head's process group: `ray stop` would kill the session's Ray too
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)


def submit(url: str, env: dict, submission_id: str, *entrypoint: str) -> subprocess.CompletedProcess:
    """`ray job submit`, waiting (up to a minute) for the head's job agent, which comes up after the dashboard."""
    deadline = time.time() + 60
    while True:
        done = subprocess.run([RAY, "job", "submit", "--address", url, "--working-dir", str(REPO),
                               "--submission-id", submission_id, "--", *entrypoint],
                              env=env, capture_output=True, text=True, timeout=420)
        if "No available agent" not in done.stderr or time.time() > deadline:
            return done
        time.sleep(2)


def test_job_api_refuses_a_client_without_the_token(ray_head):
    url, env = ray_head
    anonymous = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    done = subprocess.run([RAY, "job", "list", "--address", url], env=anonymous, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and "auth" in (done.stdout + done.stderr).lower()


def test_cohort_job_on_a_running_cluster(ray_head, demo_cohort, tmp_path):
    import polars as pl

    from pipeline.scan import scan

    url, env = ray_head
    names = ["retina_q95.jpg", "retina_hflip.jpg", "odd_exif_rot90.jpg", "bad_truncated.jpg"]
    inp = copy_images(demo_cohort.input_dir, tmp_path / "in", names)
    out = tmp_path / "out"
    args = [str(inp), str(out), "--canvas-size", "256", "--segmenter", "classical", "--qc-overlays", "none"]

    first = submit(url, env, "cohort-1", "python", "jobs/run_cohort.py", *args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "processed 4, skipped 0" in first.stdout
    df = scan(str(out))["images"].collect()
    assert sorted(df["image_id"].to_list()) == sorted(names)
    status = dict(zip(df["image_id"], df["status"]))
    assert status["bad_truncated.jpg"] == "error" and sum(s == "ok" for s in status.values()) == 3
    run = json.loads(next((out / "_runs").glob("*.json")).read_text())
    assert run["status"] == "finished" and run["config"]["address"] == "auto"  # joined the cluster, no Ray of its own

    again = submit(url, env, "cohort-1", "python", "jobs/run_cohort.py", *args)
    assert again.returncode != 0  # a repeated submission id is refused: no double run by accident
    resumed = submit(url, env, "cohort-2", "python", "jobs/run_cohort.py", *args)
    assert resumed.returncode == 0 and "processed 0, skipped 4" in resumed.stdout, resumed.stdout[-3000:]
    assert scan(str(out))["images"].collect().height == 4

    before = df.filter(pl.col("status") == "ok").sort("image_id")["vessel_density_all_retina"].to_list()
    redo = submit(url, env, "reprocess-1", "python", "jobs/reprocess.py", str(out))
    assert redo.returncode == 0, redo.stdout[-3000:] + redo.stderr[-3000:]
    after = scan(str(out))["images"].collect()
    assert after.height == 4 and after["image_id"].n_unique() == 4
    assert after.filter(pl.col("status") == "ok").sort("image_id")["vessel_density_all_retina"].to_list() == pytest.approx(before)
