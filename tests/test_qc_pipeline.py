"""End to end on a real pipeline run (the demo cohort through `run_cohort`): overlays, report and query through
the real `retsam` command line."""

from __future__ import annotations

import re
import shutil

import cv2
import numpy as np
import polars as pl
import pytest
from test_qc_overlay import _ring_hits
from test_report import console_messages, run_chromium

from pipeline.demo import DUPLICATE_FILE, MISLABELLED_EYE
from pipeline_fixtures import CANVAS
from pipeline.qc.overlays import overlay_uri
from pipeline.scan import scan
from retsam_core.mask_codec import decode_mask
from retsam_core.overlay import COLORS, disc_geometry


@pytest.fixture(scope="module")
def run_copy(demo_run, tmp_path_factory):
    """A private copy of the shared demo output (these tests write qc/ and report.html into it)."""
    out, summary = demo_run
    dst = tmp_path_factory.mktemp("qc_e2e") / "results"
    shutil.copytree(out, dst)
    return dst, summary


def retsam(*args: str) -> int:
    from pipeline.cli import main

    return main(list(args))


def test_overlays_from_real_run(run_copy, capsys):
    out, summary = run_copy
    assert retsam("overlay", str(out), "--all") == 0
    masks = scan(str(out))["masks"].collect()
    assert masks.height == summary["ok"] > 0
    checked = 0
    for row in masks.iter_rows(named=True):
        path = overlay_uri(str(out), row["image_id"])
        img = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        s = row["canvas_size"]
        ov = img[:s, :s].astype(np.int32)
        vessel = decode_mask(row["mask_vessel"])
        if row.get("mask_artery") is None:  # classical segmenter: no A/V, vessels in the plain colour
            frac = np.mean(ov[vessel][:, 1] - np.maximum(ov[vessel][:, 0], ov[vessel][:, 2]) > 20)
        else:
            a = decode_mask(row["mask_artery"])
            frac = np.mean(ov[a][:, 0] - np.maximum(ov[a][:, 1], ov[a][:, 2]) > 40)
        assert frac > 0.9, (row["image_id"], frac)
        if row.get("mask_optic_disc") is not None:
            d = disc_geometry(decode_mask(row["mask_optic_disc"]))
            if d is not None and d.r > 4:
                inside = [k for k in (2, 3) if d.cx - k * d.r > 2 and d.cx + k * d.r < s - 2 and d.cy - k * d.r > 2 and d.cy + k * d.r < s - 2]
                for k in inside:
                    assert _ring_hits(img, d.cx, d.cy, k * d.r, COLORS["zone_b"], tol=70) > 0.5, (row["image_id"], k)
        checked += 1
    assert checked == summary["ok"]
    bad = scan(str(out))["images"].filter(pl.col("status") == "error").select("image_id").collect()["image_id"][0]
    assert retsam("overlay", str(out), bad, "--out", str(out / "x.png")) == 1


def test_report_from_real_run(run_copy):
    out, summary = run_copy
    assert retsam("report", str(out)) == 0
    html = (out / "report.html").read_text()
    for s in ("summary", "status", "quality", "laterality", "biomarkers", "groups", "outliers", "runs", "timings"):
        assert f'<section id="{s}">' in html
    # the DICOMs' header eye agrees with the eye their photograph shows
    lat = html[html.index('<section id="laterality">'):html.index('<section id="biomarkers">')]
    assert re.search(r"<td>DICOM header</td><td class=\"num\">2</td>", lat), lat  # both demo DICOMs agree
    listed = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td>", lat[lat.index("<h3>Disagreements</h3>"):])
    assert listed == [("manifest eye", MISLABELLED_EYE)], listed  # the one eye the demo manifest names wrongly
    # the demo's one file sent twice, under two participants: one group, a linkage conflict
    dup = html[html.index('<section id="duplicates">'):html.index('<section id="biomarkers">')]
    copy, original = (re.escape(name) for name in DUPLICATE_FILE)
    assert "1 file stored more than once: 2 ok images" in dup and "<b>1</b> of these" in dup, dup
    assert re.search(rf"<td>{original}, {copy}</td><td>P\d+, P\d+</td><td>left</td><td>yes</td>", dup), dup
    assert f"{summary['ok']} / {summary['error']} / {summary['ungradable']}" in html
    assert summary["run_id"] in html and "truncated" in html and "site" in html
    shot = out / "shot.png"
    r = run_chromium(["--window-size=1280,1600", f"--screenshot={shot}", "--enable-logging=stderr", "--v=0", (out / "report.html").as_uri()])
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1600, 1280) and img.std() > 20
    assert not console_messages(r.stderr)


def test_file_hashes_are_the_bytes_read(run_copy, demo_cohort):
    """Every row read from a file records the sha256 of its bytes (the duplicate check rests on it); the missing
    file has none."""
    import hashlib

    out, _ = run_copy
    rows = scan(str(out))["images"].select("image_id", "path", "file_sha256").collect()
    checked = 0
    for r in rows.iter_rows(named=True):
        f = demo_cohort.input_dir / r["path"]
        if not f.exists():
            assert r["file_sha256"] is None
            continue
        data = f.read_bytes()
        assert r["file_sha256"] == (hashlib.sha256(data).hexdigest() if data else None), r["image_id"]
        checked += 1
    assert checked == rows.height - 1


def test_aggregate_from_real_run(run_copy, capsys):
    """`retsam aggregate` on the demo output: one row per participant and eye, the demo's file sent under two
    participants left out of both, every other usable ok image in exactly one row, means equal to the images'."""
    import pyarrow.parquet as pq

    out, summary = run_copy
    assert retsam("aggregate", str(out)) == 0
    target, note = capsys.readouterr()
    t = pq.read_table(target.strip())
    agg = pl.from_arrow(t)
    images = scan(str(out))["images"].filter(pl.col("status") == "ok").collect()
    used = sorted(i for ids in agg["image_ids"].to_list() for i in ids)
    copy, original = DUPLICATE_FILE
    assert copy not in used and original not in used and "same file under two groups: 2" in note
    assert used == sorted(set(images.filter(pl.col("gradable"))["image_id"]) - {copy, original})
    row = agg.filter(pl.col("n_images") > 1).row(0, named=True)
    mine = images.filter(pl.col("image_id").is_in(row["image_ids"]))
    assert row["vessel_density_all_retina"] == pytest.approx(mine["vessel_density_all_retina"].mean())
    assert t.schema.field("vessel_density_all_retina").metadata[b"unit"] == b"ratio"
    assert retsam("aggregate", str(out), "--by", "participant_id,visitt") == 2
    assert "cannot group by visitt" in capsys.readouterr().err


def test_exported_masks_are_the_masks_retsam_segment_writes(run_copy, demo_cohort, tmp_path, capsys):
    """`retsam export-masks` maps the stored masks back onto each photograph: for the same segmenter and canvas the
    files are byte-for-byte those `retsam segment` writes for that photograph, without segmenting again."""
    out, _ = run_copy
    names = ["retina_crop_tb.jpg", "odd_exif_rot90.jpg"]  # a padded canvas box; a photograph turned upright
    assert retsam("export-masks", str(out), str(tmp_path / "exported"), *names) == 0
    assert retsam("segment", *[str(demo_cohort.input_dir / n) for n in names], "--out", str(tmp_path / "segmented"),
                  "--segmenter", "classical", "--canvas-size", str(CANVAS)) == 0
    exported = sorted(p.name for p in (tmp_path / "exported").iterdir())
    assert exported and len(exported) == len(list((tmp_path / "segmented").iterdir()))
    for name in exported:
        stem = name.replace(".jpg_", "_")  # export names files by image id (the manifest's path), segment by stem
        assert (tmp_path / "exported" / name).read_bytes() == (tmp_path / "segmented" / stem).read_bytes(), name
    vessel = cv2.imread(str(tmp_path / "exported" / "retina_crop_tb.jpg_vessel.png"), cv2.IMREAD_UNCHANGED)
    assert vessel.shape == cv2.imread(str(demo_cohort.input_dir / "retina_crop_tb.jpg")).shape[:2]
    assert retsam("export-masks", str(out), str(tmp_path / "only"), names[0], "--targets", "vessel,optic_disc") == 0
    assert sorted(p.name for p in (tmp_path / "only").iterdir()) == [f"{names[0]}_optic_disc.png", f"{names[0]}_vessel.png"]
    assert retsam("export-masks", str(out), str(tmp_path / "none"), "bad_empty.jpg") == 1


def test_query_from_real_run(run_copy, capsys, tmp_path):
    out, summary = run_copy
    # docs/report.md's "counted once" answer drops exactly the demo's one copy
    from test_query_docs import blocks

    from pipeline.qc.query import query

    once = next(b for b in blocks("sql") if "file_sha256" in b)
    assert sum(r["images"] for r in query(str(out), once).to_pylist()) == summary["ok"] - 1

    got = {r["status"]: r["n"] for r in query(str(out), "SELECT status, count(*) n FROM images GROUP BY 1").to_pylist()}
    assert got == {k: summary[k] for k in ("ok", "error", "ungradable") if summary[k]}
    sql = "SELECT site, avg(vessel_density_all_retina) v FROM images WHERE status = 'ok' GROUP BY site ORDER BY site"
    duck = query(str(out), sql).to_pylist()
    pol = (scan(str(out))["images"].filter(pl.col("status") == "ok").group_by("site")
           .agg(pl.col("vessel_density_all_retina").mean().alias("v")).sort("site").collect().to_dicts())
    assert [r["site"] for r in duck] == [r["site"] for r in pol]
    assert all(abs(a["v"] - b["v"]) < 1e-12 for a, b in zip(duck, pol))
    n_seg = query(str(out), "SELECT count(*) n FROM segments").to_pylist()[0]["n"]
    assert n_seg == scan(str(out))["segments"].select(pl.len()).collect().item()
    assert retsam("query", str(out), sql, "--out", str(tmp_path / "v.csv")) == 0
    assert pl.read_csv(tmp_path / "v.csv").height == len(duck)
    assert retsam("query", str(out), "SELECT image_id, status FROM images ORDER BY 1") == 0
    assert "(%d rows)" % sum(got.values()) in capsys.readouterr().out
