"""QC overlays: colours where the masks are, zone rings at 2r/3r/5r, storage under OUTPUT/qc/ (local and S3)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.qc.cli import main as qc_main
from pipeline.qc.overlays import overlay_uri, render_overlays, render_row
from retsam_core.overlay import COLORS, LEGEND_WIDTH, disc_geometry, render_overlay
from test_qc_fixture import make_output


def _dist(img: np.ndarray, color) -> np.ndarray:
    return np.linalg.norm(img.astype(np.float32) - np.asarray(color, np.float32), axis=-1)


def _ring_hits(img: np.ndarray, cx: float, cy: float, radius: float, color, tol: float = 60.0, n: int = 36) -> float:
    """Fraction of angles where a pixel of `color` lies within +-2 px of `radius` from (cx, cy)."""
    hits = 0
    for k in range(n):
        a = 2 * math.pi * k / n
        found = False
        for dr in (-2, -1, 0, 1, 2):
            x, y = round(cx + (radius + dr) * math.cos(a)), round(cy + (radius + dr) * math.sin(a))
            if 0 <= x < img.shape[1] and 0 <= y < img.shape[0] and _dist(img[y : y + 1, x : x + 1], color)[0, 0] < tol:
                found = True
                break
        hits += found
    return hits / n


def _synthetic(size: int = 512):
    canvas = np.zeros((size, size, 3), np.uint8)
    cv2.circle(canvas, (size // 2, size // 2), size // 2 - 4, (180, 90, 40), -1)
    blank = lambda: np.zeros((size, size), np.uint8)  # noqa: E731
    artery, vein, extra = blank(), blank(), blank()
    cv2.line(artery, (60, 100), (300, 120), 1, 5)
    cv2.line(vein, (60, 400), (300, 380), 1, 7)
    cv2.line(extra, (420, 60), (430, 200), 1, 4)
    disc, cup, fovea, hem = blank(), blank(), blank(), blank()
    cv2.circle(disc, (330, 260), 20, 1, -1)
    cv2.circle(cup, (330, 260), 9, 1, -1)
    cv2.circle(fovea, (180, 270), 6, 1, -1)
    cv2.circle(hem, (120, 300), 8, 1, -1)
    masks = {
        "vessel": (artery | vein | extra) > 0, "artery": artery > 0, "vein": vein > 0, "optic_disc": disc > 0,
        "optic_cup": cup > 0, "fovea": fovea > 0, "hemorrhage": hem > 0,
    }
    return canvas, masks


def test_colours_where_the_masks_are():
    canvas, masks = _synthetic()
    out = render_overlay(canvas, masks, {"CRAE (um)": 151.234, "AVR": 0.71, "grade": "good"}, title="img-1")
    assert out.shape == (512, 512 + LEGEND_WIDTH, 3)
    img = out[:, :512].astype(np.int32)
    a, v = masks["artery"], masks["vein"]
    plain = masks["vessel"] & ~a & ~v
    assert np.mean(img[a][:, 0] - np.maximum(img[a][:, 1], img[a][:, 2]) > 60) > 0.95  # red on arteries
    assert np.mean(img[v][:, 2] - np.maximum(img[v][:, 0], img[v][:, 1]) > 30) > 0.95  # blue on veins
    assert np.mean(img[plain][:, 1] - np.maximum(img[plain][:, 0], img[plain][:, 2]) > 30) > 0.95  # green: no A/V
    hem = cv2.erode(masks["hemorrhage"].astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)  # interior
    assert np.mean(_dist(out[:, :512][hem], COLORS["hemorrhage"]) < 80) > 0.9
    # background untouched far from every drawing
    assert np.array_equal(out[470, 256], canvas[470, 256])
    # zone rings around the disc centre: 2r and 3r (zone B), 5r (outer edge of zone C)
    d = disc_geometry(masks["optic_disc"])
    assert abs(d.cx - 330) < 0.5 and abs(d.r - math.sqrt(masks["optic_disc"].sum() / math.pi)) < 1e-6
    for k, key in ((2, "zone_b"), (3, "zone_b"), (5, "zone_c")):
        assert _ring_hits(out, d.cx, d.cy, k * d.r, COLORS[key]) > 0.7, k
    assert _ring_hits(out, d.cx, d.cy, 4 * d.r, COLORS["zone_b"]) < 0.3  # and not at 4r
    assert _ring_hits(out, d.cx, d.cy, d.r, COLORS["optic_disc"], tol=40) > 0.8  # disc contour
    # fovea marker centred on the fovea mask
    assert _dist(out[270, 180 - 12 : 180 + 13], COLORS["fovea"]).min() < 40
    # legend panel has text and colour swatches
    legend = out[:, 512:]
    assert legend.std() > 10
    assert (_dist(legend, COLORS["artery"]) < 5).sum() > 100


def test_without_av_all_vessels_are_plain_colour():
    canvas, masks = _synthetic()
    masks = {k: v for k, v in masks.items() if k not in ("artery", "vein")}
    img = render_overlay(canvas, masks, legend=False).astype(np.int32)
    assert img.shape == canvas.shape
    v = masks["vessel"]
    assert np.mean(img[v][:, 1] - np.maximum(img[v][:, 0], img[v][:, 2]) > 30) > 0.95
    assert np.mean(img[v][:, 0] - img[v][:, 1] > 60) < 0.01  # no red


def test_empty_masks_render_canvas_and_legend():
    canvas = np.full((256, 256, 3), 90, np.uint8)
    out = render_overlay(canvas, {"vessel": None}, {}, title="x", notes=["no masks stored"])
    assert np.array_equal(out[:, :256], canvas)


@pytest.fixture()
def output(tmp_path):
    return make_output(tmp_path)


def _decode(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def test_render_overlays_from_output(output):
    out = output["output"]
    written = render_overlays(str(out), mode="all")
    assert len(written) == len(output["truth"]) == 6
    for iid, truth in output["truth"].items():
        path = Path(overlay_uri(str(out), iid))
        assert str(path) in written and path.parent == out / "qc"
        img = _decode(path)
        size = truth["geometry"].size
        assert img.shape == (size, size + LEGEND_WIDTH, 3)
        ov = img[:, :size].astype(np.int32)
        m = truth["masks"]
        if "artery" in m:
            a = m["artery"]
            assert np.mean(ov[a][:, 0] - np.maximum(ov[a][:, 1], ov[a][:, 2]) > 60) > 0.9, iid
            v = m["vein"]
            assert np.mean(ov[v][:, 2] > ov[v][:, 0]) > 0.9, iid
        else:
            v = m["vessel"]
            assert np.mean(ov[v][:, 1] - np.maximum(ov[v][:, 0], ov[v][:, 2]) > 30) > 0.9, iid
        d = disc_geometry(m["optic_disc"])
        for k, key in ((2, "zone_b"), (3, "zone_b"), (5, "zone_c")):
            assert _ring_hits(img, d.cx, d.cy, k * d.r, COLORS[key]) > 0.6, (iid, k)
        # aligned with the preprocessed source: away from all drawings the pixels are the canvas
        drawn = np.zeros((size, size), np.uint8)
        for mm in m.values():
            drawn |= mm.astype(np.uint8)
        yy, xx = np.mgrid[0:size, 0:size]
        rr = np.hypot(xx - d.cx, yy - d.cy)
        for k in (1, 2, 3, 5):
            drawn |= (np.abs(rr - k * d.r) < 6).astype(np.uint8)
        drawn = cv2.dilate(drawn, np.ones((15, 15), np.uint8)).astype(bool)
        fc = np.argwhere(m["fovea"]).mean(0)
        drawn |= np.hypot(xx - fc[1], yy - fc[0]) < 40
        diff = np.abs(ov[~drawn] - truth["canvas"][~drawn].astype(np.int32)).mean()
        assert diff < 4.0, (iid, diff)


def test_default_sample_and_error_rows_skipped(output):
    out = str(output["output"])
    written = render_overlays(out, n_sample=3)
    assert 3 <= len(written) <= 4  # 3 spread by hash + up to 1 lowest-quality
    error_ids = [r["image_id"] for r in output["images"] if r["status"] != "ok"]
    assert render_overlays(out, error_ids) == []
    assert render_overlays(out, mode="none") == []
    assert render_overlays(out, mode="all", run_id="another-run") == []  # the pipeline passes its own run id
    assert len(render_overlays(out, mode="all", run_id=output["run"]["run_id"])) == 6


def test_source_moved_still_renders_masks(output):
    out = output["output"]
    iid = next(iter(output["truth"]))
    shutil.rmtree(out.parent / "src")
    [path] = render_overlays(str(out), [iid])
    img = _decode(path)
    a = output["truth"][iid]["masks"]["artery"]
    assert np.mean(img[:, :1024][a][:, 0] > 150) > 0.9


def test_render_row_direct(output):
    """The per-row function the pipeline can call inside a Ray map (masks row + images row dicts)."""
    out = output["output"]
    iid = next(iter(output["truth"]))
    mrow = next(r for p in (out / "masks").rglob("*.parquet") for r in pq.read_table(p).to_pylist() if r["image_id"] == iid)
    irow = next(r for r in output["images"] if r["image_id"] == iid)
    png = render_row(mrow, irow)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_overlay_cli(output, tmp_path, capsys):
    out = str(output["output"])
    iid = next(iter(output["truth"]))
    dest = tmp_path / "one.png"
    assert qc_main(["overlay", out, iid, "--out", str(dest)]) == 0
    assert _decode(dest).shape[0] == 1024
    assert qc_main(["overlay", out, iid]) == 0
    assert Path(overlay_uri(out, iid)).exists()
    bad = next(r["image_id"] for r in output["images"] if r["status"] == "error")
    assert qc_main(["overlay", out, bad, "--out", str(tmp_path / "bad.png")]) == 1
    assert "no masks" in capsys.readouterr().err
    assert qc_main(["overlay", out, "--sample", "2"]) == 0


def test_overlays_on_s3(output, s3_bucket):
    """Output and source images on object storage; overlays written back to s3://.../qc/."""
    import fsspec
    import pyarrow as pa

    out = output["output"]
    root = f"s3://{s3_bucket}/cohort"
    for p in (out / "images").rglob("*.parquet"):  # point the source paths at the bucket
        t = pq.read_table(p)
        paths = [f"{root}/src/{Path(x).name}" for x in t["path"].to_pylist()]
        pq.write_table(t.set_column(t.schema.get_field_index("path"), "path", pa.array(paths)), p)
    fs = fsspec.filesystem("s3")
    fs.put(str(out), f"{s3_bucket}/cohort/out", recursive=True)
    fs.put(str(out.parent / "src"), f"{s3_bucket}/cohort/src", recursive=True)
    iid = next(iter(output["truth"]))
    [uri] = render_overlays(f"{root}/out", [iid])
    assert uri.startswith(f"s3://{s3_bucket}/cohort/out/qc/")
    with fs.open(uri, "rb") as f:
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    truth = output["truth"][iid]
    diff = np.abs(img[:, :1024].astype(np.int32) - truth["canvas"].astype(np.int32))[~cv2.dilate(truth["masks"]["vessel"].astype(np.uint8), np.ones((9, 9))).astype(bool)]
    assert np.median(diff) < 4  # the source was read from S3 (not the grey fallback)
