"""End-to-end pipeline tests on a real local Ray (session fixture `ray_local`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.runner import run_cohort
from pipeline.scan import scan
from tests.pipeline_fixtures import EXPECTED_BAD, EXPECTED_WARN, fast_config

QUIET = dict(progress=False, log=lambda m: None)


def _images(out) -> pl.DataFrame:
    return scan(str(out))["images"].collect()


def test_every_input_becomes_one_row_with_the_right_status(demo_run, demo_cohort):
    out, summary = demo_run
    df = _images(out)
    names = sorted(p.name for p in demo_cohort.input_dir.iterdir() if not p.name.endswith(".csv"))
    assert sorted(df["image_id"].to_list()) == sorted(names + ["does_not_exist.jpg"])  # exactly once each
    assert summary["processed"] == len(names) + 1 and summary["skipped"] == 0
    rows = {r["image_id"]: r for r in df.to_dicts()}
    for name, (status, words) in EXPECTED_BAD.items():
        assert rows[name]["status"] == status, (name, rows[name]["error"])
        assert words in rows[name]["error"], (name, rows[name]["error"])
    for name, (status, words) in EXPECTED_WARN.items():
        assert rows[name]["status"] == status, (name, rows[name]["error"])
        assert not words or any(words in w for w in rows[name]["warnings"]), rows[name]["warnings"]
    missing = rows["does_not_exist.jpg"]
    assert missing["status"] == "error" and "not found" in missing["error"] and missing["participant_id"] == "P999"
    good = [rows[n] for n in demo_cohort.good]
    assert all(r["status"] == "ok" for r in good), [(r["image_id"], r["error"]) for r in good if r["status"] != "ok"]
    assert all(r["vessel_density_all_retina"] and 0.02 < r["vessel_density_all_retina"] < 0.4 for r in good)
    huge = rows["odd_huge_8000x6000.jpg"]
    assert (huge["original_width"], huge["original_height"]) == (8000, 6000) and huge["decode_scale"] > 1
    # stored sideways with an EXIF tag: read upright, so it is the wide-frame photograph, disc where that one has it
    turned, wide = rows["odd_exif_rot90.jpg"], rows["retina_wide_frame.jpg"]
    assert (turned["original_width"], turned["original_height"]) == (wide["original_width"], wide["original_height"])
    assert turned["original_width"] > turned["original_height"]
    for axis in ("x", "y"):
        assert turned[f"disc_centre_{axis}_px"] == pytest.approx(wide[f"disc_centre_{axis}_px"], abs=8.0)  # canvas 256 px
    n_err = sum(1 for s, _ in EXPECTED_BAD.values() if s == "error") + 1
    assert summary["failed"] == n_err
    assert summary["ungradable"] == sum(1 for s, _ in EXPECTED_BAD.values() if s == "ungradable")
    assert summary["batches"] >= 2  # shard_size=12: several commit batches from one Dataset


def test_manifest_metadata_and_provenance_pass_through(demo_run):
    out, _ = demo_run
    df = _images(out)
    assert {"participant_id", "eye", "visit", "site", "device", "mm_per_px"} <= set(df.columns)
    assert df["participant_id"].null_count() == 0 and set(df["eye"].unique()) == {"OD", "OS"}
    q95 = df.filter(pl.col("image_id") == "retina_q95.jpg").row(0, named=True)
    assert q95["scale_source"] == "manifest" and q95["original_mm_per_px"] == pytest.approx(q95["mm_per_px"])
    other = df.filter(pl.col("image_id") == "retina_hflip.jpg").row(0, named=True)
    assert other["scale_source"] in ("fov_estimate", "disc_estimate") and other["mm_per_px"] is None
    ok = df.filter(pl.col("status") == "ok")
    assert ok["segmenter"].unique().to_list() == ["classical-1"] and ok["model_hash"].unique().to_list() == [""]
    assert df["run_id"].n_unique() == 1 and df["pipeline_version"].null_count() == 0
    # unit metadata from the biomarker catalogue travels in the Parquet schema
    f = next(Path(out, "images").rglob("*.parquet"))
    field = pq.read_schema(f).field("vessel_density_all_retina")
    assert field.metadata and b"unit" in field.metadata
    run_files = list(Path(out, "_runs").glob("*.json"))
    rec = json.loads(run_files[0].read_text())
    assert rec["status"] == "finished" and rec["resources"]["num_gpus"] == 0 and "ray" in rec["versions"]
    assert rec["counts"]["processed"] == df.height


def test_dicom_header_gives_the_pixel_size_and_the_eye(demo_run):
    """retina_op.dcm is retina_q95.jpg's photograph as a JPEG Baseline DICOM whose header states the pixel spacing
    the manifest states for retina_q95.jpg, and the eye (skimage's photograph is a left eye)."""
    rows = {r["image_id"]: r for r in _images(demo_run[0]).to_dicts()}
    op, q95 = rows["retina_op.dcm"], rows["retina_q95.jpg"]
    assert op["status"] == "ok" and op["format"].startswith("DICOM (JPEG Baseline"), op["error"]
    assert op["mm_per_px"] is None  # the manifest gives none for it
    assert op["scale_source"] == "dicom" and op["original_mm_per_px"] == pytest.approx(op["dicom_pixel_spacing_mm"])
    assert op["scale_mm_per_px"] == pytest.approx(q95["scale_mm_per_px"], rel=1e-4)
    assert op["vessel_density_all_retina"] == pytest.approx(q95["vessel_density_all_retina"], abs=0.01)
    assert op["dicom_laterality"] == "left" == op["laterality"]  # the header agrees with the disc's side
    assert op["dicom_field_of_view_deg"] == 45.0 and op["dicom_sop_instance_uid"].startswith("1.2.")
    assert all(rows[n]["dicom_sop_instance_uid"] is None for n in rows if not n.endswith(".dcm"))
    assert rows["bad_red_free.dcm"]["dicom_laterality"] is None  # refused before the header facts were kept
    # no pixel spacing, a 30 degree field in the header: the field of view is scaled under 30 degrees, not the
    # configured 45; the same pixels losslessly (retina_lossless.png) get the 45 degree estimate
    fov30, png = rows["retina_op_fov30.dcm"], rows["retina_lossless.png"]
    assert fov30["status"] == "ok" and "RLE" in fov30["format"] and fov30["dicom_pixel_spacing_mm"] is None
    assert fov30["scale_source"] == "dicom_fov_estimate" and png["scale_source"] == "fov_estimate"
    assert fov30["scale_mm_per_px"] / png["scale_mm_per_px"] == pytest.approx(30.0 / 45.0, rel=1e-9)


def test_parquet_layout_readable_by_polars_and_duckdb(demo_run):
    out, summary = demo_run
    n = pl.scan_parquet(f"{out}/images/**/*.parquet", hive_partitioning=True).select(pl.len()).collect().item()
    dd = duckdb.sql(f"SELECT count(*), count(DISTINCT batch) FROM read_parquet('{out}/images/**/*.parquet', "
                    "hive_partitioning=true)").fetchall()[0]
    assert dd == (n, summary["batches"])
    seg = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/segments/**/*.parquet', hive_partitioning=true)").fetchall()[0][0]
    assert seg == _images(out)["n_segment_rows"].sum() > 0
    frames = scan(str(out))
    masks = frames["masks"].collect()
    assert masks.height == _images(out).filter(pl.col("box_side").is_not_null()).height
    assert {"fov", "mask_vessel", "mask_optic_disc", "box_side", "canvas_size"} <= set(masks.columns)
    # bounded file counts: one images file per batch, few segments/masks files
    # bounded file counts: one images file per commit batch, at most one segments/masks file per batch here
    assert len(list(Path(out, "images").rglob("*.parquet"))) == summary["batches"]
    for table in ("segments", "masks"):
        assert 1 <= len(list(Path(out, table).rglob("*.parquet"))) <= summary["batches"]
    assert pq.ParquetFile(next(Path(out, "images").rglob("*.parquet"))).metadata.row_group(0).column(0).compression == "ZSTD"
    assert not any(Path(out).rglob("_staging/*"))


def test_rerun_skips_everything_before_reading(demo_run, demo_cohort, ray_local):
    out, first = demo_run
    s = run_cohort(str(demo_cohort.input_dir / "manifest_plus_missing.csv"), str(out), fast_config(), **QUIET)
    assert s["processed"] == 0 and s["skipped"] == first["processed"]
    assert _images(out).height == first["processed"]


def test_reprocess_from_masks_rewrites_biomarkers(demo_run, tmp_path, ray_local):
    from pipeline.reprocess import reprocess_output

    out = tmp_path / "copy"
    shutil.copytree(demo_run[0], out)
    before = _images(out).sort("image_id")
    segs_before = scan(str(out))["segments"].collect().height
    summary = reprocess_output(str(out), fast_config(), **QUIET)
    after = _images(out).sort("image_id")
    with_masks = before.filter(pl.col("box_side").is_not_null()).height
    assert summary["recomputed"] == with_masks and after.height == before.height
    assert after["quant_id"].n_unique() == 1 and after["quant_id"][0] not in set(before["quant_id"])
    ok_b, ok_a = (d.filter(pl.col("status") == "ok") for d in (before, after))
    assert ok_a["vessel_density_all_retina"].to_list() == pytest.approx(ok_b["vessel_density_all_retina"].to_list())
    assert after.filter(pl.col("image_id") == "bad_tiny.jpg")["status"].item() == "error"
    assert after["participant_id"].to_list() == before["participant_id"].to_list()  # metadata kept
    # an estimated pixel size stays an estimate (it used to come back labelled "manifest")
    assert ok_a["scale_source"].to_list() == ok_b["scale_source"].to_list()
    assert set(ok_b["scale_source"]) >= {"manifest", "fov_estimate"}
    assert ok_a["scale_mm_per_px"].to_list() == pytest.approx(ok_b["scale_mm_per_px"].to_list())
    segs = scan(str(out))["segments"].collect()
    assert segs.height == segs_before == after["n_segment_rows"].sum()
    assert set(segs["quant_id"].unique()) == {after["quant_id"][0]}
    files = list(Path(out, "segments").rglob("*.parquet"))  # old segments files removed
    assert files and all(f.name.startswith(after["quant_id"][0]) for f in files)


def test_reprocess_under_another_field_angle_rescales_only_the_estimates(demo_run, tmp_path, ray_local):
    """Why reprocess exists: a cohort run under the wrong camera field angle is re-scaled from its stored masks;
    a pixel size the manifest or a DICOM header gave is kept, and so is a DICOM header's field angle (30 degrees
    for retina_op_fov30.dcm); an estimate under the configured angle follows the new angle."""
    from pipeline.reprocess import reprocess_output

    out = tmp_path / "copy"
    shutil.copytree(demo_run[0], out)
    # one batch as pipeline 0.2.3 wrote it, without the dicom_* columns: the output mixes versions
    old_style = next(f for f in Path(out, "images").rglob("*.parquet")
                     if not any(i.endswith(".dcm") for i in pq.read_table(f, columns=["image_id"])["image_id"].to_pylist()))
    t = pq.read_table(old_style)
    pq.write_table(t.drop_columns([c for c in t.column_names if c.startswith("dicom_")]), old_style)
    ok = pl.col("status") == "ok"
    before = _images(out).filter(ok).sort("image_id")
    reprocess_output(str(out), fast_config(field_angle_deg=35.0), **QUIET)
    after = _images(out).filter(ok).sort("image_id")
    assert after["image_id"].to_list() == before["image_id"].to_list()
    ratio = (after["scale_mm_per_px"] / before["scale_mm_per_px"]).to_list()
    for src, r, crae_b, crae_a in zip(before["scale_source"], ratio, before["crae_knudtson_um_zone_b"],
                                      after["crae_knudtson_um_zone_b"]):
        expected = 35.0 / 45.0 if src == "fov_estimate" else 1.0  # given sizes and DICOM field angles stay
        assert r == pytest.approx(expected, rel=1e-9), src
        if crae_b is not None and crae_a is not None:
            assert crae_a / crae_b == pytest.approx(expected, rel=1e-6)
    assert (before["scale_source"] == "fov_estimate").sum() >= 5 and (before["scale_source"] == "manifest").sum() >= 3
    assert set(before["scale_source"]) >= {"dicom", "dicom_fov_estimate"}
    assert after["scale_source"].to_list() == before["scale_source"].to_list()


def test_force_and_model_hash_targeting_keep_each_image_once(demo_run, demo_cohort, tmp_path, ray_local):
    out = tmp_path / "copy"
    shutil.copytree(demo_run[0], out)
    manifest = str(demo_cohort.input_dir / "manifest_plus_missing.csv")
    before = _images(out)
    s = run_cohort(manifest, str(out), fast_config(), model_hash_not="", **QUIET)  # every row has hash ''
    assert s["processed"] == 0
    s = run_cohort(manifest, str(out), fast_config(), model_hash_not="abc123", limit=2, **QUIET)
    assert s["processed"] == 2
    s = run_cohort(manifest, str(out), fast_config(), force=True, limit=3, **QUIET)
    assert s["processed"] == 3
    after = _images(out)
    assert sorted(after["image_id"].to_list()) == sorted(before["image_id"].to_list())  # still exactly once
    # --force/--limit 3 took the first three ids again (two of them had just been redone): 3 rows of the last run
    assert after["run_id"].value_counts().sort("count")["count"].to_list() == [3, after.height - 3]
    frames = scan(str(out))
    assert frames["segments"].collect().height == after["n_segment_rows"].sum()
    # superseded rows were removed from the older batches' files, not only hidden by scan()
    raw = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/segments/**/*.parquet')").fetchall()[0][0]
    assert raw == after["n_segment_rows"].sum()
    raw_masks = duckdb.sql(f"SELECT count(*), count(DISTINCT image_id) FROM read_parquet('{out}/masks/**/*.parquet')").fetchall()[0]
    assert raw_masks[0] == raw_masks[1] == frames["masks"].collect().height


def test_listing_folder_glob_manifest(tmp_path):
    from pipeline.listing import list_inputs

    for sub in ("site1", "site2"):
        (tmp_path / "in" / sub).mkdir(parents=True)
        (tmp_path / "in" / sub / "a.jpg").write_bytes(b"x")
    (tmp_path / "in" / "site1" / "B.PNG").write_bytes(b"x")
    (tmp_path / "in" / "notes.txt").write_text("not an image extension")
    (tmp_path / "in" / "_staging").mkdir()
    (tmp_path / "in" / "_staging" / "x.jpg").write_bytes(b"x")
    lst = list_inputs(str(tmp_path / "in"))
    assert lst.table["image_id"].to_pylist() == ["site1/B.PNG", "site1/a.jpg", "site2/a.jpg"]
    assert lst.table["read_path"].to_pylist()[0] == str(tmp_path / "in" / "site1" / "B.PNG")
    g = list_inputs(str(tmp_path / "in" / "site*" / "a.jpg"))
    assert g.table["image_id"].to_pylist() == ["site1/a.jpg", "site2/a.jpg"]
    m = tmp_path / "in" / "m.csv"
    m.write_text("path,participant_id,eye,mm_per_px\nsite1/a.jpg,00123,OD,0.01\nsite1/a.jpg,00123,OD,0.01\n"
                 f"{tmp_path}/in/site2/a.jpg,7,OS,\n")
    ml = list_inputs(str(m))
    assert ml.table["image_id"].to_pylist() == ["site1/a.jpg", "site2/a.jpg"] and ml.duplicates_dropped == 1
    assert ml.table["participant_id"].to_pylist() == ["00123", "7"]  # identifiers stay strings
    assert ml.table["mm_per_px"].to_pylist() == [0.01, None]


def test_no_gpu_is_requested_on_a_cpu_cluster(ray_local):
    from pipeline.config import PipelineConfig
    from pipeline.resources import plan_resources

    assert PipelineConfig().num_gpus == 0
    msgs: list[str] = []
    plan = plan_resources(PipelineConfig(num_gpus=1), msgs.append)
    assert plan["num_gpus"] == 0 and any("GPU" in m for m in msgs)
    plan = plan_resources(PipelineConfig(), msgs.append)
    cpus = ray_local.cluster_resources()["CPU"]
    reserved = plan["segment_actors"] * plan["segment_num_cpus"] + plan["quantify_actors"] * plan["quantify_num_cpus"]
    assert plan["num_gpus"] == 0 and reserved < cpus  # room left for read tasks


def test_gpu_plan_on_a_gpu_cluster(monkeypatch):
    """Planning logic alone (no GPU here): one segmentation actor per GPU, the CPUs left go to quantification."""
    import ray

    from pipeline.config import PipelineConfig
    from pipeline.resources import plan_resources

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 64.0, "GPU": 4.0})
    plan = plan_resources(PipelineConfig(num_gpus=1, segment_num_cpus=8, address="auto"), lambda m: None)
    assert (plan["num_gpus"], plan["segment_actors"], plan["quantify_actors"]) == (1, 4, 31)
    plan = plan_resources(PipelineConfig(num_gpus=2, address="auto"), lambda m: None)
    assert plan["segment_actors"] == 2
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 64.0})
    plan = plan_resources(PipelineConfig(address="auto"), lambda m: None)
    assert plan["num_gpus"] == 0 and plan["segment_actors"] + plan["quantify_actors"] <= 63


def test_gpu_actors_get_the_decode_threads_that_keep_pace(monkeypatch):
    """A GPU segmentation actor's CPUs (its decode threads) are planned from the measured CPU-seconds per image of
    the two pools (`pipeline.resources`: 0.125 decoding, 0.58 quantifying): one decode CPU per 4.6 quantify CPUs.
    Until session 15 it got one CPU, one decode thread: ~4 images/s for a GPU that runs the network at hundreds."""
    import ray

    from pipeline.config import PipelineConfig
    from pipeline.resources import QUANTIFY_CPU_S_PER_IMAGE, SEGMENT_CPU_S_PER_IMAGE, plan_resources

    gpu_node = {"Alive": True, "Resources": {"CPU": 16.0, "GPU": 1.0}}
    monkeypatch.setattr(ray, "nodes", lambda: [gpu_node])
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 1.0})
    # a 16-core GPU workstation (or a GPU node alone): a balanced split of its CPUs
    plan = plan_resources(PipelineConfig(num_gpus=1, address="auto"), lambda m: None)
    assert (plan["segment_actors"], plan["segment_num_cpus"], plan["quantify_actors"]) == (1, 3.0, 12)
    # cluster.yaml at submission: one GPU node up, the CPU workers not yet; explicit actor counts are kept for the
    # autoscaler (not squeezed onto the CPUs up now), and the decode threads feed 150 quantify actors (capped by
    # the GPU node's 16 CPUs less one)
    msgs: list[str] = []
    plan = plan_resources(PipelineConfig(num_gpus=1, address="auto", segment_actors=2, quantify_actors=150), msgs.append)
    assert (plan["segment_actors"], plan["quantify_actors"], plan["quantify_num_cpus"]) == (2, 150, 1.0)
    assert plan["segment_num_cpus"] == 15.0 and any("autoscaler" in m for m in msgs)
    # a bigger cluster up now: 2 GPU nodes and 4 CPU workers -> 96 CPUs, in the measured ratio (to whole CPUs)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 96.0, "GPU": 2.0})
    plan = plan_resources(PipelineConfig(num_gpus=1, address="auto"), lambda m: None)
    decode, quantify = plan["segment_actors"] * plan["segment_num_cpus"], plan["quantify_actors"] * plan["quantify_num_cpus"]
    ratio = QUANTIFY_CPU_S_PER_IMAGE / SEGMENT_CPU_S_PER_IMAGE
    assert plan["segment_actors"] == 2 and abs(quantify / decode - ratio) <= 0.15 * ratio
    assert decode + quantify <= 96
    # an explicit reservation is kept as given; on the local Ray a plan never exceeds the CPUs it has
    assert plan_resources(PipelineConfig(num_gpus=1, address="auto", segment_num_cpus=8), lambda m: None)[
        "segment_num_cpus"] == 8
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0, "GPU": 1.0})
    msgs.clear()
    plan = plan_resources(PipelineConfig(num_gpus=1, quantify_actors=40), msgs.append)
    assert plan["quantify_num_cpus"] < 1 and any("lowering" in m for m in msgs)


def test_config_file_and_overrides(tmp_path):
    from pipeline.config import PipelineConfig

    f = tmp_path / "c.yaml"
    f.write_text("canvas_size: 512\nsegmenter: classical\nstorage_options: {key: AKIA, secret: s3cr3t}\n")
    cfg = PipelineConfig.load(f, shard_size="50", num_gpus=None)
    assert (cfg.canvas_size, cfg.segmenter, cfg.shard_size, cfg.num_gpus) == (512, "classical", 50, 0.0)
    assert "s3cr3t" not in json.dumps(cfg.redacted())
    with pytest.raises(ValueError):
        PipelineConfig.load(None, not_a_field=1)


def test_one_writer_per_output(tmp_path):
    import os
    import socket
    import time as _time

    from pipeline.output import Output, OutputLocked, WriterLock

    out = Output(str(tmp_path / "out"))
    live = {"run_id": "other", "host": socket.gethostname(), "pid": os.getppid(), "heartbeat": _time.time()}
    out.write_json(out.path("_lock.json"), live)
    with pytest.raises(OutputLocked, match="being written by run other"):
        run_cohort(str(tmp_path), str(tmp_path / "out"), fast_config(), **QUIET)
    with WriterLock(out, "mine", break_lock=True):  # explicit takeover
        assert json.loads((tmp_path / "out" / "_lock.json").read_text())["run_id"] == "mine"
    assert not (tmp_path / "out" / "_lock.json").exists()
    dead = {**live, "pid": 2**22 + 12345}  # a pid that does not exist on this host: stale at once
    out.write_json(out.path("_lock.json"), dead)
    with WriterLock(out, "mine"):
        pass
    old = {**live, "host": "elsewhere", "heartbeat": _time.time() - 3600}  # no heartbeat for an hour: stale
    out.write_json(out.path("_lock.json"), old)
    with WriterLock(out, "mine"):
        pass


def test_run_renders_a_sample_of_qc_overlays(demo_run):
    """`qc_overlays="sample"` (the default mode) leaves overlay PNGs of this run's ok images under OUTPUT/qc/."""
    out, summary = demo_run
    pngs = sorted((out / "qc").glob("*.png"))
    assert summary["qc_overlays"] == len(pngs) == min(3, summary["ok"])
    ok_ids = set(_images(out).filter(pl.col("status") == "ok")["image_id"].to_list())
    from pipeline.qc.overlays import overlay_uri

    expected = {Path(overlay_uri(str(out), i)).name for i in ok_ids}
    assert {p.name for p in pngs} <= expected
    import cv2

    assert all(cv2.imread(str(p)).std() > 10 for p in pngs)


def test_qc_overlay_mode_is_validated():
    with pytest.raises(ValueError, match="qc_overlays"):
        fast_config(qc_overlays="some")


def test_angular_scale_model_sets_the_canvas_from_the_field_angle(demo_cohort, tmp_path):
    """A model trained at a fixed number of pixels per degree gets canvases of that many pixels per degree of the
    configured camera: the segmentation stage cuts them at px/deg x field angle and records the side it used."""
    import fsspec
    import pyarrow as pa
    import torch

    from pipeline.stages import SegmentStage
    from retsam_core.mask_codec import decode_mask
    from retsam_core.model.loading import save_weights
    from retsam_core.model.network import ModelConfig, RetSAMNet

    torch.manual_seed(0)
    cfg = ModelConfig(resolution=64, px_per_degree=64 / 30, enc_channels=(8, 8, 16, 16, 24), enc_blocks=(1, 1, 1, 1, 1),
                      dec_channels=(16, 16, 8, 8))
    weights = tmp_path / "angular.safetensors"
    save_weights(RetSAMNet(cfg).eval(), weights, {"name": "angular-test", "version": "t", "untrained": []})
    path = demo_cohort.input_dir / "retina_crop_tb.jpg"
    batch = pa.table({"path": [str(path)], "bytes": [path.read_bytes()]})
    for angle, side in ((30.0, 64), (45.0, 96)):
        conf = fast_config(segmenter=str(weights), field_angle_deg=angle).to_dict()
        stage = SegmentStage(conf, None, fsspec.filesystem("file"), str(demo_cohort.input_dir), "file")
        row = stage(batch).to_pylist()[0]
        assert row["status"] == "ok" and row["canvas_size"] == side, row
        assert decode_mask(row["mask_vessel"]).shape == (side, side)
    # a fixed-size segmenter keeps the configured canvas whatever the field angle
    stage = SegmentStage(fast_config(field_angle_deg=45.0).to_dict(), None, fsspec.filesystem("file"), str(demo_cohort.input_dir), "file")
    assert stage(batch).to_pylist()[0]["canvas_size"] == 256
