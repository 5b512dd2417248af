"""The `retsam` command line: segment (no Ray), demo, run/status, and the guarded optional commands."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import polars as pl
import pytest

from pipeline.cli import build_parser, main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for cmd in ("run", "demo", "segment", "reprocess", "quantify", "status"):
        assert cmd in text
    args = build_parser().parse_args(["run", "in", "out", "--num-gpus", "0", "--set", "shard_size=10"])
    assert args.num_gpus == 0 and args.set == ["shard_size=10"]


def test_segment_writes_original_size_masks(demo_cohort, tmp_path, capsys):
    imgs = [demo_cohort.input_dir / n for n in ("retina_crop_tb.jpg", "retina_half.jpg")]
    bad = demo_cohort.input_dir / "bad_tiny.jpg"
    rc = main(["segment", *map(str, imgs), str(bad), "--out", str(tmp_path), "--canvas-size", "256",
               "--segmenter", "classical"])
    assert rc == 0
    for img in imgs:
        h, w = cv2.imread(str(img)).shape[:2]
        for target in ("vessel", "optic_disc", "fovea", "fov"):
            m = cv2.imread(str(tmp_path / f"{img.stem}_{target}.png"), cv2.IMREAD_UNCHANGED)
            assert m.shape == (h, w) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255}
        vessel = cv2.imread(str(tmp_path / f"{img.stem}_vessel.png"), cv2.IMREAD_UNCHANGED)
        assert 0.01 < (vessel > 0).mean() < 0.3
    assert not list(tmp_path.glob("bad_tiny_*"))
    assert "too small" in capsys.readouterr().err


def test_segment_probability_maps_line_up_with_the_masks(demo_cohort, tmp_path, capsys):
    """--probabilities: the learned targets' maps at the photograph's size, zero outside the field of view, and cut
    at the model's threshold they give the mask (up to the finishing step); a segmenter without maps says so."""
    img = demo_cohort.input_dir / "retina_crop_tb.jpg"
    assert main(["segment", str(img), "--out", str(tmp_path / "learned"), "--probabilities"]) == 0
    h, w = cv2.imread(str(img)).shape[:2]
    fov = cv2.imread(str(tmp_path / "learned" / f"{img.stem}_fov.png"), cv2.IMREAD_UNCHANGED) > 0
    for target in ("vessel", "optic_disc"):
        prob = cv2.imread(str(tmp_path / "learned" / f"{img.stem}_{target}_prob.png"), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(tmp_path / "learned" / f"{img.stem}_{target}.png"), cv2.IMREAD_UNCHANGED) > 0
        assert prob.shape == (h, w) and prob.dtype == np.uint8 and prob[~fov].max() == 0
        assert len(np.unique(prob)) > 50  # a soft map, not a mask
        cut = prob >= 128
        assert 2 * (cut & mask).sum() / (cut.sum() + mask.sum()) > 0.95, target
    assert not list((tmp_path / "learned").glob("*_fovea_prob.png"))  # the hybrid's fovea is the classical one
    assert main(["segment", str(img), "--out", str(tmp_path / "classical"), "--segmenter", "classical",
                 "--canvas-size", "256", "--probabilities"]) == 0
    assert not list((tmp_path / "classical").glob("*_prob.png"))
    assert "has no probability maps" in capsys.readouterr().err


def test_segment_reads_a_dicom_like_its_jpeg(demo_cohort, tmp_path):
    """retina_op.dcm holds retina_q95.jpg's photograph: its masks come out at that size and nearly the same."""
    dicom, jpeg = demo_cohort.input_dir / "retina_op.dcm", demo_cohort.input_dir / "retina_q95.jpg"
    assert main(["segment", str(dicom), str(jpeg), "--out", str(tmp_path), "--canvas-size", "256",
                 "--segmenter", "classical"]) == 0
    a = cv2.imread(str(tmp_path / "retina_op_vessel.png"), cv2.IMREAD_UNCHANGED) > 0
    b = cv2.imread(str(tmp_path / "retina_q95_vessel.png"), cv2.IMREAD_UNCHANGED) > 0
    assert a.shape == b.shape == cv2.imread(str(jpeg)).shape[:2]
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.9  # JPEG quality 92 against 95: the same vessels


def test_demo_command_end_to_end(tmp_path, capsys, ray_local):
    rc = main(["demo", str(tmp_path / "demo"), "--side", "320", "--no-huge", "--canvas-size", "256",
               "--segmenter", "classical", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    results = tmp_path / "demo" / "results"
    assert str(results) in out and "pl.scan_parquet" in out and "read_parquet" in out and "processed" in out
    df = pl.read_parquet(f"{results}/images/**/*.parquet", hive_partitioning=True)
    assert df.height == len(list((tmp_path / "demo" / "input").glob("*.*"))) - 1  # all but manifest.csv
    assert set(df["status"]) == {"ok", "error", "ungradable"}
    # the report command the demo prints runs as printed
    check = re.search(r"Check it: retsam (report \S+)", out)
    assert check and main(check.group(1).split()) == 0 and (results / "report.html").stat().st_size > 10_000
    capsys.readouterr()
    assert main(["status", str(results)]) == 0
    status = capsys.readouterr().out
    assert "ungradable" in status and "latest runs" in status and "finished, processed" in status
    # rerun through the CLI: nothing left to do, summary as JSON
    assert main(["run", str(tmp_path / "demo" / "input" / "manifest.csv"), str(results), "--json", "--no-progress",
                 "--canvas-size", "256"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["processed"] == 0 and summary["skipped"] == df.height


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "input not found" in capsys.readouterr().err


def test_quantify_your_own_masks_json_and_cohort(demo_cohort, tmp_path, capsys, ray_local):
    masks = tmp_path / "masks"
    imgs = [demo_cohort.input_dir / n for n in ("retina_q75.jpg", "retina_rot12.jpg")]
    assert main(["segment", *map(str, imgs), "--out", str(masks), "--canvas-size", "256", "--segmenter", "classical"]) == 0
    one = tmp_path / "one"
    one.mkdir()
    for f in masks.glob("retina_q75_*.png"):
        (one / f.name).write_bytes(f.read_bytes())
    capsys.readouterr()
    assert main(["quantify", str(one), "--json", "--mm-per-px", "0.0365"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["image_id"] == "retina_q75" and res["values"]["scale_source"] == "manifest"
    assert 0.02 < res["values"]["vessel_density_all_retina"] < 0.4
    # a cohort: same Parquet layout, resumable
    out = tmp_path / "out"
    assert main(["quantify", str(masks), str(out)]) == 0
    df = pl.read_parquet(f"{out}/images/**/*.parquet", hive_partitioning=True)
    assert sorted(df["image_id"].to_list()) == ["retina_q75", "retina_rot12"] and set(df["status"]) == {"ok"}
    assert df["segmenter"].unique().to_list() == ["user-masks"]
    segs = pl.read_parquet(f"{out}/segments/**/*.parquet", hive_partitioning=True)
    assert segs.height == df["n_segment_rows"].sum() > 0
    assert main(["quantify", str(masks), str(out)]) == 0
    assert pl.read_parquet(f"{out}/images/**/*.parquet").height == 2
