"""A small but realistic RetSAM output (docs/CONTRACTS.md layout) for the QC/report/query tests.

Synthetic fundus JPEGs are drawn with known vessels/disc/cup/fovea/lesions; they are preprocessed with the real
`retsam_core.preprocess.preprocess`, and the masks are drawn on the same canvas, so overlays can be checked pixel by
pixel. The end-to-end tests on a real pipeline run live in test_qc_pipeline.py.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from retsam_core.mask_codec import encode_mask
from retsam_core.preprocess import preprocess

CANVAS = 1024
RUN_ID = "20261127T020000Z-test"
MASK_TARGETS = ("vessel", "artery", "vein", "optic_disc", "optic_cup", "fovea", "hemorrhage", "hard_exudate")


def _fundus(rng: np.random.Generator, w: int = 900, h: int = 760):
    """RGB fundus-like image + primitives in original pixel coordinates."""
    img = np.zeros((h, w, 3), np.uint8)
    cx, cy, R = w / 2, h / 2, min(w, h) * 0.46
    cv2.circle(img, (round(cx), round(cy)), round(R), (190, 90, 40), -1)
    disc = (cx + R * 0.45, cy - R * 0.05, R * 0.09)
    cup = (disc[0], disc[1], disc[2] * 0.5)
    fovea = (cx - R * 0.2, cy + R * 0.03, R * 0.03)
    cv2.circle(img, (round(disc[0]), round(disc[1])), round(disc[2]), (250, 210, 120), -1)
    arteries, veins = [], []
    for k in range(4):
        ang = math.pi * (0.6 + 0.25 * k) + rng.normal(0, 0.05)
        end = (disc[0] + math.cos(ang) * R * 0.9, disc[1] + math.sin(ang) * R * 0.9)
        (arteries if k % 2 == 0 else veins).append(((disc[0], disc[1]), end))
    for line in arteries:
        cv2.line(img, tuple(map(round, line[0])), tuple(map(round, line[1])), (150, 40, 25), 5)
    for line in veins:
        cv2.line(img, tuple(map(round, line[0])), tuple(map(round, line[1])), (110, 20, 20), 7)
    lesions = {"hemorrhage": [(cx - R * 0.5, cy + R * 0.4, R * 0.03)], "hard_exudate": [(cx + R * 0.1, cy + R * 0.45, R * 0.02)]}
    for x, y, r in lesions["hemorrhage"]:
        cv2.circle(img, (round(x), round(y)), round(r), (120, 15, 10), -1)
    for x, y, r in lesions["hard_exudate"]:
        cv2.circle(img, (round(x), round(y)), round(r), (240, 230, 90), -1)
    img = np.clip(img.astype(np.int16) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
    img[np.linalg.norm(np.stack(np.mgrid[0:h, 0:w][::-1], -1) - [cx, cy], axis=-1) > R] = 0
    return img, dict(disc=disc, cup=cup, fovea=fovea, arteries=arteries, veins=veins, lesions=lesions)


def _canvas_masks(prims: dict, geom, av: bool = True, lesions: bool = True) -> dict[str, np.ndarray]:
    k = geom.size / geom.box_side

    def p(x, y):
        return (round((x - geom.box_x0) * k), round((y - geom.box_y0) * k))

    def blank():
        return np.zeros((geom.size, geom.size), np.uint8)

    out = {}
    a, v = blank(), blank()
    for line in prims["arteries"]:
        cv2.line(a, p(*line[0]), p(*line[1]), 1, max(1, round(5 * k)))
    for line in prims["veins"]:
        cv2.line(v, p(*line[0]), p(*line[1]), 1, max(1, round(7 * k)))
    a[v > 0] = 0
    out["vessel"] = (a | v) > 0
    if av:
        out["artery"], out["vein"] = a > 0, v > 0
    for name in ("disc", "cup", "fovea"):
        m = blank()
        x, y, r = prims[name]
        cv2.circle(m, p(x, y), round(r * k), 1, -1)
        out[{"disc": "optic_disc", "cup": "optic_cup"}.get(name, name)] = m > 0
    if lesions:
        for cls, items in prims["lesions"].items():
            m = blank()
            for x, y, r in items:
                cv2.circle(m, p(x, y), max(2, round(r * k)), 1, -1)
            out[cls] = m > 0
    return out


def make_output(root: Path, n_ok: int = 6, n_error: int = 2, n_ungradable: int = 1, seed: int = 0) -> dict:
    """Write OUTPUT/{images,segments,masks}/batch=*/..., _runs/<id>.json and the source JPEGs; return facts."""
    rng = np.random.default_rng(seed)
    out = Path(root) / "out"
    src = Path(root) / "src"
    src.mkdir(parents=True, exist_ok=True)
    sites, devices, eyes = ["leeds", "oslo", "kyoto"], ["topcon", "canon"], ["left", "right"]
    images, masks, segments, truth = [], [], [], {}
    n = n_ok + n_error + n_ungradable
    for i in range(n):
        iid = f"subj{i:03d}/visit 1#{'L' if i % 2 else 'R'}"  # awkward chars on purpose (slash, space, hash)
        path = src / f"img_{i:03d}.jpg"
        status = "ok" if i < n_ok else ("error" if i < n_ok + n_error else "ungradable")
        base = dict(
            image_id=iid, path=str(path), participant_id=f"P{i // 2:03d}", null_reasons=None, site=sites[i % 3], device=devices[i % 2], eye=eyes[i % 2],
            age=float(40 + 3 * i), status=status, error=None, quality_grade=None, quality_score=None,
            crae_knudtson_um_zone_b=None, crve_knudtson_um_zone_b=None, avr_knudtson_zone_b=None, cdr_vertical=None,
            vessel_density_all_retina=None, fd_box_skeleton_all_retina=None, tortuosity_distance_all_retina=None,
            laterality=None, file_sha256=None,
            disc_radius_px=None, segmenter="classical-v1", model_hash="", run_id=RUN_ID, quant_id=f"q{i}",
            segment_seconds=float(0.2 + i / 100), quantify_seconds=float(0.1 + i / 200),
        )
        if status == "ok":
            img, prims = _fundus(rng)
            cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            base["file_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
            pre = preprocess(img, CANVAS)
            m = _canvas_masks(prims, pre.geometry, av=(i % 3 != 2), lesions=(i % 2 == 0))
            g = pre.geometry
            enc = {f"mask_{t}": None for t in MASK_TARGETS}
            enc.update({f"mask_{t}": encode_mask(v) for t, v in m.items()})
            gd = g.to_dict()
            gd["canvas_size"] = gd.pop("size")
            masks.append(dict(image_id=iid, **gd, segmenter="classical-v1", model_hash="",
                              fov=encode_mask(pre.fov), **enc))
            truth[iid] = dict(masks=m, geometry=g, canvas=pre.image)
            crae = float(rng.normal(150, 12)) if i != 1 else 320.0  # one clear outlier
            crve = float(rng.normal(225, 15))
            base.update(
                quality_grade=["good", "usable", "good"][i % 3], quality_score=float(0.5 + 0.08 * i),
                crae_knudtson_um_zone_b=crae, crve_knudtson_um_zone_b=crve, avr_knudtson_zone_b=crae / crve,
                cdr_vertical=float(rng.uniform(0.2, 0.6)), vessel_density_all_retina=float(m["vessel"].mean()),
                fd_box_skeleton_all_retina=float(rng.normal(1.45, 0.03)),
                tortuosity_distance_all_retina=float(1 + rng.gamma(2, 0.05)), disc_radius_px=45.0, null_reasons="{}",
                laterality=eyes[(i + (i == 4)) % 2],  # the photograph's eye; image 4 is labelled the wrong eye
            )
            if "artery" not in m:  # no A/V: calibre biomarkers are null, with the reason
                base.update(crae_knudtson_um_zone_b=None, crve_knudtson_um_zone_b=None, avr_knudtson_zone_b=None,
                            null_reasons='{"crae_knudtson_um_zone_b": "segmenter provides no artery/vein"}')
            for s in range(3):
                segments.append(dict(image_id=iid, quant_id=f"q{i}", layer=["artery", "vein", "all"][s], segment_id=s,
                                     length_px=float(rng.uniform(20, 200)), width_median_um=float(rng.normal(100, 20)),
                                     zone=["zone_b", "zone_c", "retina"][s]))
        elif status == "error":
            path.write_bytes(b"\xff\xd8\xff garbage")
            base["error"] = "corrupt or truncated JPEG file: image file is truncated" if i % 2 else "not an image: unrecognised format (5 bytes, starts b'hello')"
        else:
            base["error"] = "no field of view found: image is black or nearly black"
        images.append(base)
    isch, msch = pa.Table.from_pylist(images).schema, pa.Table.from_pylist(masks).schema
    half = (len(images) + 1) // 2
    batch_of = {}
    for b, rows in ((0, images[:half]), (1, images[half:])):
        bid = f"{RUN_ID}-{b:05d}"
        _write(out / "images" / f"batch={bid}" / "part-0.parquet", rows, isch)
        batch_of.update({r["image_id"]: bid for r in rows})
        _write(out / "masks" / f"batch={bid}" / "part-0.parquet", [m for m in masks if batch_of.get(m["image_id"]) == bid and m["image_id"] in {r["image_id"] for r in rows}], msch)
        _write(out / "segments" / f"batch={bid}" / "q0-part-0.parquet", [x for x in segments if x["image_id"] in {r["image_id"] for r in rows}])
    run = dict(  # the structure pipeline.runner writes
        run_id=RUN_ID, status="finished", started_at="2026-11-27T02:00:00+00:00", finished_at="2026-11-27T02:01:10+00:00",
        input=str(src), output=str(out), config=dict(canvas_size=CANVAS, segmenter="classical", shard_size=2000),
        pipeline_version="0.1.0", versions=dict(python="3.11", ray="2.60"),
        segmenter=dict(segmenter="classical-v1", model_hash="", provided_targets=["vessel", "optic_disc", "fovea"]),
        counts=dict(listed=n, processed=n, ok=n_ok, error=n_error, ungradable=n_ungradable, batches=2),
        timings=dict(recovery_s=0.1, listing_s=0.2, processing_s=65.0, total_s=70.0, segment_s=41.0, quantify_s=12.5, write_s=1.1),
        batches=[dict(batch_id=f"{RUN_ID}-{b:05d}", counts={}) for b in range(2)],
    )
    (out / "_runs").mkdir(parents=True, exist_ok=True)
    (out / "_runs" / f"{RUN_ID}.json").write_text(json.dumps(run, indent=1))
    return dict(output=out, truth=truth, images=images, run=run)


def _write(path: Path, rows: list[dict], schema: pa.Schema | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not rows:
        return
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def test_fixture_is_readable(tmp_path):
    facts = make_output(tmp_path)
    t = pq.read_table(facts["output"] / "images")
    assert t.num_rows == 9 and "batch" in t.column_names
