"""The cluster path as the README gives it: `ray job submit --working-dir . -- python jobs/...` against a running
cluster laid out as cluster.yaml lays it out (a head with no CPUs and the job server, a worker node joined with the
same token file, token authentication on), started here with `ray start`, not the in-process Ray the other tests
use. A cohort run, a resubmission that skips what is done, a refused repeated submission id, a reprocess job from
the stored masks, and a client and a node without the token kept out."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, _free_port
from tests.pipeline_fixtures import copy_images

pytest.importorskip("aiohttp_cors", reason="ray job submission needs ray[default] (the test extra installs it)")

RAY = str(Path(sys.executable).parent / "ray")


WORKER_CPUS = 3  # the head has none (as in cluster.yaml): every task runs on the worker node


def _agent_ports() -> list[str]:
    """Free ports for one node's agents (the session's own Ray holds the default ones)."""
    flags = ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
             "--metrics-export-port")
    return [a for flag in flags for a in (flag, str(_free_port()))]


def _node(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([RAY, "start", "--block", "--object-store-memory", str(300 * 2**20), *_agent_ports(),
                             *args], env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(node: subprocess.Popen) -> None:
    """Stop one node's process group only: `ray stop` would kill the session's Ray too."""
    if node.poll() is None:
        os.killpg(node.pid, signal.SIGTERM)
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)


def _alive_nodes(url: str, env: dict) -> int:
    listed = subprocess.run([RAY, "list", "nodes", "--address", url, "--format", "json"], env=env,
                            capture_output=True, text=True, timeout=60)
    try:
        return sum(n.get("state") == "ALIVE" for n in json.loads(listed.stdout))
    except ValueError:
        return 0


def _wait_for_nodes(n: int, url: str, env: dict, started: list[subprocess.Popen], log: Path) -> None:
    """Until the state API (through the head's dashboard) lists `n` live nodes; stops `started` and fails after 90 s
    or when the newest of them exits."""
    deadline = time.time() + 90
    while _alive_nodes(url, env) < n:
        if started[-1].poll() is not None or time.time() > deadline:
            for node in reversed(started):
                _stop(node)
            pytest.fail(f"Ray node {len(started)} did not come up: {log.read_text()[-2000:]}")
        time.sleep(1)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """cluster.yaml's layout on this machine: a head with no CPUs running the job server, one worker node joined
    with the same token file; yields (dashboard URL, client env, GCS address, token-free env)."""
    tmp = tmp_path_factory.mktemp("raycluster")
    token = tmp / "auth_token"  # a token file, as cluster.yaml mounts ~/.ray/auth_token on every node
    token.write_text(secrets.token_hex(32))
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    bare["RAY_USAGE_STATS_ENABLED"] = "0"
    env = bare | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    dash, gcs = _free_port(), f"127.0.0.1:{_free_port()}"
    # short temp dir: Ray's socket paths must stay under the 107-byte limit; removed after the nodes stop
    ray_tmp = tempfile.mkdtemp(prefix="rj", dir="/tmp")
    head = _node(["--head", "--port", gcs.split(":")[1], "--num-cpus", "0", "--dashboard-host", "127.0.0.1",
                  "--dashboard-port", str(dash), "--include-dashboard", "true", "--ray-client-server-port",
                  str(_free_port()), "--temp-dir", ray_tmp], env, tmp / "head.log")
    url = f"http://127.0.0.1:{dash}"
    _wait_for_nodes(1, url, env, [head], tmp / "head.log")
    worker = _node(["--address", gcs, "--num-cpus", str(WORKER_CPUS)], env, tmp / "worker.log")
    _wait_for_nodes(2, url, env, [head, worker], tmp / "worker.log")  # the jobs' resource plan must see the worker
    yield url, env, gcs, bare
    _stop(worker)
    _stop(head)
    shutil.rmtree(ray_tmp, ignore_errors=True)  # each session leaves ~30 MB of logs and sockets there


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


def test_neither_a_client_nor_a_node_without_the_token_gets_in(ray_cluster, tmp_path):
    url, _, gcs, bare = ray_cluster
    done = subprocess.run([RAY, "job", "list", "--address", url], env=bare, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "auth" in (done.stdout + done.stderr).lower()
    wrong = tmp_path / "wrong_token"
    wrong.write_text(secrets.token_hex(32))
    intruder = subprocess.run([RAY, "start", "--address", gcs, "--num-cpus", "1", *_agent_ports()],
                              env=bare | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(wrong)},
                              capture_output=True, text=True, timeout=120, start_new_session=True)
    assert intruder.returncode != 0 and "InvalidAuthToken" in intruder.stdout + intruder.stderr



def test_retsam_run_without_the_token_says_so(ray_cluster, demo_cohort, tmp_path):
    """`retsam run --address` from a shell that lacks the token: Ray only says it cannot connect; we say why."""
    _, _, gcs, bare = ray_cluster
    inp = copy_images(demo_cohort.input_dir, tmp_path / "in", ["retina_q95.jpg"])
    done = subprocess.run([str(Path(sys.executable).parent / "retsam"), "run", str(inp), str(tmp_path / "out"),
                           "--address", gcs, "--segmenter", "classical", "--no-progress"],
                          env=bare, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "refused this client's authentication token" in done.stderr and "RAY_AUTH_MODE=token" in done.stderr
    assert not (tmp_path / "out" / "images").exists()  # nothing half-written


def test_cohort_job_on_a_running_cluster(ray_cluster, demo_cohort, tmp_path):
    import polars as pl

    from pipeline.scan import scan

    url, env, _, _ = ray_cluster
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
    assert run["resources"]["cluster_cpus"] == WORKER_CPUS  # the worker node's CPUs: it joined with the token

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
