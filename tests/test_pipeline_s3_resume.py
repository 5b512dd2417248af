"""Object storage end to end (moto_server: input AND output on S3) and crash safety (SIGKILL, then rerun)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from pipeline.runner import run_cohort
from pipeline.scan import scan
from pipeline.status import output_status, status_text
from tests.pipeline_fixtures import copy_images, fast_config

REPO = Path(__file__).resolve().parents[1]
QUIET = dict(progress=False, log=lambda m: None)


def test_s3_input_and_output(demo_cohort, s3_bucket, s3_endpoint, ray_local):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    names = ["retina_q75.jpg", "retina_hflip.jpg", "bad_truncated.jpg", "odd_rgba.png"]
    for n in names:
        s3.put_object(Bucket=s3_bucket, Key=f"cohort/site A/{n}", Body=(demo_cohort.input_dir / n).read_bytes())
    # an archive's DICOM export without a file extension, named by the manifest
    dicom = (demo_cohort.input_dir / "retina_op.dcm").read_bytes()
    s3.put_object(Bucket=s3_bucket, Key="cohort/site A/IM000001", Body=dicom)
    manifest = "path,participant_id,eye\n" + "".join(f"site A/{n},P{i},OD\n" for i, n in enumerate(names))
    manifest += "site A/IM000001,P4,OS\n"
    s3.put_object(Bucket=s3_bucket, Key="cohort/manifest.csv", Body=manifest.encode())
    out = f"s3://{s3_bucket}/results/run1"
    s = run_cohort(f"s3://{s3_bucket}/cohort/manifest.csv", out, fast_config(shard_size=2), **QUIET)
    assert s["processed"] == 5 and s["failed"] == 1 and s["ok"] == 4
    frames = scan(out)  # credentials/endpoint from the AWS_* environment
    df = frames["images"].collect()
    assert sorted(df["image_id"].to_list()) == sorted([f"site A/{n}" for n in names] + ["site A/IM000001"])
    op = df.filter(pl.col("image_id") == "site A/IM000001").row(0, named=True)
    assert op["status"] == "ok" and op["format"].startswith("DICOM") and op["scale_source"] == "dicom"
    assert df.filter(pl.col("image_id") == "site A/bad_truncated.jpg")["error"].item().startswith("corrupt or truncated")
    assert set(df["participant_id"]) == {"P0", "P1", "P2", "P3", "P4"}
    assert df["path"].to_list()[0].startswith(f"s3://{s3_bucket}/cohort/site A/")
    assert frames["segments"].collect().height == df["n_segment_rows"].sum() > 0
    assert frames["masks"].collect().height == 4
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="results/run1/")["Contents"]]
    assert not [k for k in keys if "/_staging/" in k]
    assert len([k for k in keys if k.startswith("results/run1/images/")]) == s["batches"]
    assert any(k.startswith("results/run1/_runs/") for k in keys)
    # resumable on S3 too; and an s3:// prefix as input
    s2 = run_cohort(f"s3://{s3_bucket}/cohort/", out, fast_config(), **QUIET)
    assert s2["processed"] == 0 and s2["skipped"] == 4
    assert s2["other_files_not_listed"] == 2  # the manifest and the extensionless DICOM: counted, named in the log
    # an object replaced after it was processed: the prefix listing's sizes find it, and it is processed again
    replaced = (demo_cohort.input_dir / "retina_q95.jpg").read_bytes()
    s3.put_object(Bucket=s3_bucket, Key="cohort/site A/retina_q75.jpg", Body=replaced)
    s3_changed = run_cohort(f"s3://{s3_bucket}/cohort/", out, fast_config(), reprocess_changed="size", **QUIET)
    assert (s3_changed["changed_on_storage"], s3_changed["processed"], s3_changed["superseded"]) == (1, 1, 1)
    df = scan(out)["images"].collect()
    assert df.height == 5 and df.filter(pl.col("image_id") == "site A/retina_q75.jpg")["file_bytes"].item() == len(replaced)
    st = output_status(out)  # `retsam status` on S3: the two runs that processed images, newest first
    assert st["images"] == 5 and [r["processed"] for r in st["runs"]] == [1, 5] and st["writing_now"] is None
    # never print secrets
    import json

    run = [k for k in keys if k.startswith("results/run1/_runs/")][0]
    assert "testing" not in json.dumps(json.loads(s3.get_object(Bucket=s3_bucket, Key=run)["Body"].read()))


def _committed(out: Path) -> int:
    return len(list(out.glob("images/batch=*/part-0.parquet")))


def test_resume_after_sigkill(demo_cohort, tmp_path, ray_local):
    """Kill the driver with SIGKILL mid-run; every Parquet file left is readable; the rerun completes the cohort
    with every image exactly once."""
    names = sorted(p.name for p in demo_cohort.input_dir.iterdir() if p.name.startswith("retina_"))[:10]
    src = copy_images(demo_cohort.input_dir, tmp_path / "in", names)
    out = tmp_path / "out"
    gcs = ray_local.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(src), str(out), "--address", gcs, "--canvas-size", "256",
           "--segmenter", "classical", "--shard-size", "2", "--segment-batch-size", "1", "--quantify-batch-size", "1",
           "--segment-actors", "1", "--quantify-actors", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.time() + 120
        while time.time() < deadline and _committed(out) < 1 and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    partial = _committed(out)
    assert 1 <= partial < 5
    for f in out.glob("[ism]*/batch=*/*.parquet"):  # everything a reader can see is complete Parquet
        pq.read_table(f)
    seen = scan(str(out))["images"].collect()
    assert seen["image_id"].is_unique().all() and 2 <= seen.height < len(names)
    killed = output_status(str(out))  # the killed run is named as cut short; its dead lock is not a live writer
    assert killed["images"] == seen.height and killed["writing_now"] is None
    assert [r["state"].split()[0] for r in killed["runs"]] == ["interrupted"]
    s = run_cohort(str(src), str(out), fast_config(shard_size=4, segment_num_cpus=2), **QUIET)  # threaded decode
    df = scan(str(out))["images"].collect()
    assert sorted(df["image_id"].to_list()) == names  # exactly once
    assert s["skipped"] == seen.height and s["processed"] == len(names) - seen.height
    after = output_status(str(out))
    assert [r["state"].split()[0] for r in after["runs"]] == ["finished", "interrupted"]
    assert after["runs"][0]["processed"] == s["processed"] and after["by_status"] == {"ok": len(names)}
    assert "interrupted (killed or failed: rerun to resume)" in status_text(after)
    assert not (out / "_staging").exists() or not any((out / "_staging").iterdir())
    frames = scan(str(out))
    assert frames["segments"].collect().height == df["n_segment_rows"].sum()
    assert frames["masks"].collect()["image_id"].is_unique().all()
    # nothing orphaned on disk either
    committed = {p.parent.name for p in out.glob("images/batch=*/part-0.parquet")}
    for table in ("segments", "masks"):
        assert {p.name for p in (out / table).glob("batch=*")} <= committed
