"""Catalogue contract (every column, schemas, docs, nulls with reasons), invariances, scale, mask files, quality."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest

from retsam_core.biomarkers import Scale, compute_biomarkers
from retsam_core.biomarkers.catalogue import CATALOGUE, image_schema, segment_schema
from retsam_core.biomarkers.docs import render
from retsam_core.biomarkers.mask_files import find_mask_sets, parse_mask_name, quantify_mask_set
from retsam_core.biomarkers.scale import estimate_scale
from retsam_core.biomarkers.synthetic import fundus_masks

REPO = Path(__file__).resolve().parents[1]
MM = 0.012


@pytest.fixture(scope="module")
def fundus():
    masks, fov = fundus_masks(768, seed=3)
    return masks, fov


@pytest.fixture(scope="module")
def full_result(fundus):
    masks, fov = fundus
    return compute_biomarkers(masks, fov, Scale(MM * 1024 / 768, "manifest"))


def test_every_catalogue_column_is_returned_and_fits_the_schema(full_result):
    names = [c.name for c in CATALOGUE]
    assert list(full_result.values) == names
    for k, v in full_result.values.items():
        if v is None:
            assert full_result.reasons.get(k), f"{k} is null without a reason"
    # the rows build Arrow tables with the declared schemas
    pa.Table.from_pylist([full_result.values], schema=image_schema())
    tbl = pa.Table.from_pylist(full_result.segments, schema=segment_schema())
    assert tbl.num_rows == len(full_result.segments) > 50
    assert set(full_result.segments[0]) == set(segment_schema().names)
    f = image_schema().field("crae_knudtson_um_zone_b")
    assert f.metadata[b"unit"] == b"um" and b"Knudtson" in f.metadata[b"reference"]
    # with a full synthetic set nothing but the image-quality columns should be missing
    missing = {k for k, v in full_result.values.items() if v is None and not k.startswith(("quality_", "gradable"))}
    assert missing <= {k for k in missing if "tessellation" in k or "atrophy" in k or k.startswith("ppa_")}


def test_docs_are_generated_from_the_catalogue():
    doc = (REPO / "docs" / "biomarkers.md").read_text(encoding="utf-8")
    assert doc == render(), "docs/biomarkers.md is stale: run python -m retsam_core.biomarkers.docs"
    for c in CATALOGUE:
        assert f"`{c.name}`" in doc


def test_unknown_vs_empty_and_no_disc(fundus):
    masks, fov = fundus
    only_vessels = {k: masks[k] for k in ("vessel", "artery", "vein")}
    res = compute_biomarkers(only_vessels, fov, Scale(None, "none"))
    v, r = res.values, res.reasons
    # no disc: zone metrics and disc-relative values are never invented
    assert v["crae_knudtson_um_zone_b"] is None and "disc" in r["crae_knudtson_um_zone_b"]
    assert v["vessel_density_all_zone_b"] is None and v["cdr_vertical"] is None and v["laterality"] is None
    assert all(s["zone"] is None for s in res.segments)
    # no scale: physical units null, pixel twins present
    assert v["vessel_length_mm_all_retina"] is None and v["vessel_length_px_all_retina"] > 0
    assert "scale" in r["vessel_length_mm_all_retina"]
    assert v["hemorrhage_count"] is None  # not given: unknown
    # 'provided' wins: a mask passed but not provided is unknown
    res2 = compute_biomarkers(masks, fov, Scale(MM, "manifest"), provided={"vessel"})
    assert res2.values["crae_knudtson_um_zone_b"] is None and "artery" in res2.reasons["crae_knudtson_um_zone_b"]
    assert res2.values["vessel_density_all_retina"] is not None
    # a laterality from the manifest wins over inference and unlocks ISNT without a fovea
    res4 = compute_biomarkers({k: masks[k] for k in ("optic_disc", "optic_cup")}, fov, Scale(MM, "manifest"),
                              laterality="left")
    assert res4.values["laterality"] == "left" and res4.values["laterality_source"] == "given"
    assert res4.values["rim_width_nasal_mm"] is not None
    # an empty field of view does not crash and yields reasons
    res3 = compute_biomarkers(only_vessels, np.zeros_like(fov), Scale(MM, "manifest"))
    assert res3.values["vessel_density_all_retina"] is None


def test_density_is_over_the_retina_not_the_canvas():
    n = 400
    yy, xx = np.mgrid[:n, :n]
    fov = np.hypot(xx - 200, yy - 200) < 150
    vessel = np.zeros((n, n), bool)
    vessel[195:205, 60:340] = True
    v = compute_biomarkers({"vessel": vessel}, fov, Scale(MM, "manifest")).values
    assert v["vessel_density_all_retina"] == pytest.approx((vessel & fov).sum() / fov.sum())


KEYS = ["vessel_density_all_retina", "vessel_length_mm_all_retina", "tortuosity_distance_all_retina",
        "tortuosity_distance_artery_zone_c", "fd_box_mask_all_retina", "fd_box_skeleton_all_retina",
        "crae_knudtson_um_zone_b", "crve_knudtson_um_zone_b", "avr_knudtson_zone_b", "disc_area_mm2", "cdr_area",
        "disc_fovea_distance_mm", "hemorrhage_area_mm2", "length_density_all_zone_c", "width_median_um_vein_zone_b"]
TOL = {"vessel_density_all_retina": 0.0, "fd_box_mask_all_retina": 0.04, "fd_box_skeleton_all_retina": 0.04}


@pytest.mark.parametrize("op", ["rot90", "flip_lr", "flip_ud"])
def test_invariance_under_rotation_and_flips(fundus, full_result, op):
    masks, fov = fundus
    f = {"rot90": np.rot90, "flip_lr": np.fliplr, "flip_ud": np.flipud}[op]
    res = compute_biomarkers({k: np.ascontiguousarray(f(m)) for k, m in masks.items()},
                             np.ascontiguousarray(f(fov)), Scale(MM * 1024 / 768, "manifest"))
    for k in KEYS:
        a, b = full_result.values[k], res.values[k]
        assert a is not None and b is not None, k
        if k in TOL:
            assert b == pytest.approx(a, abs=TOL[k] + 1e-12), k
        else:
            assert b == pytest.approx(a, rel=0.03), k
    expect = {"rot90": None, "flip_lr": "left", "flip_ud": "right"}[op]
    if expect:
        assert res.values["laterality"] == expect


def test_rescaling_with_mm_per_px(fundus, full_result):
    masks, fov = fundus
    mm = MM * 1024 / 768
    up = {k: cv2.resize(m.astype(np.uint8), (1152, 1152), interpolation=cv2.INTER_NEAREST) > 0 for k, m in masks.items()}
    upf = cv2.resize(fov.astype(np.uint8), (1152, 1152), interpolation=cv2.INTER_NEAREST) > 0
    res = compute_biomarkers(up, upf, Scale(mm / 1.5, "manifest"))
    rel = {"vessel_density_all_retina": 0.01, "vessel_length_mm_all_retina": 0.06, "disc_area_mm2": 0.01,
           "cdr_area": 0.01, "disc_fovea_distance_mm": 0.01, "hemorrhage_area_mm2": 0.01,
           "crae_knudtson_um_zone_b": 0.06, "crve_knudtson_um_zone_b": 0.06, "avr_knudtson_zone_b": 0.06,
           "tortuosity_distance_all_retina": 0.03, "length_density_all_zone_c": 0.06}
    for k, tol in rel.items():
        assert res.values[k] == pytest.approx(full_result.values[k], rel=tol), k
    assert res.values["fd_box_mask_all_retina"] == pytest.approx(full_result.values["fd_box_mask_all_retina"], abs=0.08)


def test_estimate_scale_order():
    n = 1000
    yy, xx = np.mgrid[:n, :n]
    fov = np.hypot(xx - 500, yy - 500) < 450
    disc = np.hypot(xx - 700, yy - 500) < 75
    assert estimate_scale(fov, {}, manifest_mm_per_px=0.01) == Scale(0.01, "manifest")
    s = estimate_scale(fov, {"optic_disc": disc}, field_angle_deg=45.0)
    assert s.source == "fov_estimate" and s.mm_per_px == pytest.approx(45 * 0.29 / 899, rel=0.01)
    s = estimate_scale(np.ones((n, n), bool), {"optic_disc": disc})
    assert s.source == "disc_estimate" and s.mm_per_px == pytest.approx(1.8 / 150, rel=0.02)
    assert estimate_scale(None, {}) == Scale(None, "none")


def test_mask_files_round_trip(tmp_path, fundus):
    masks, fov = fundus
    assert parse_mask_name("a_b_optic_disc.png") == ("a_b", "optic_disc")
    assert parse_mask_name("img_hard_exudate.png") == ("img", "hard_exudate")
    assert parse_mask_name("img.png") is None
    for k in ("vessel", "artery", "vein", "optic_disc", "optic_cup", "fovea", "hemorrhage"):
        cv2.imwrite(str(tmp_path / f"eye1_{k}.png"), masks[k].astype(np.uint8) * 255)
    cv2.imwrite(str(tmp_path / "eye1_fov.png"), fov.astype(np.uint8) * 255)
    cv2.imwrite(str(tmp_path / "eye2_vessel.png"), masks["vessel"].astype(np.uint8) * 255)
    sets = find_mask_sets(tmp_path)
    assert set(sets) == {"eye1", "eye2"} and sets["eye1"].fov is not None
    res = quantify_mask_set(sets["eye1"], manifest_mm_per_px=MM, provided=None)
    ref = compute_biomarkers({k: masks[k] for k in sets["eye1"].masks}, fov, Scale(MM, "manifest"))
    assert res.values["scale_source"] == "manifest"
    for k in KEYS:
        assert res.values[k] == ref.values[k], k
    r2 = quantify_mask_set(sets["eye2"])
    assert "whole grid" in r2.reasons["_inputs"] and r2.values["scale_source"] == "none"
    # declared provided targets with no file are "none found"
    r3 = quantify_mask_set(sets["eye1"], manifest_mm_per_px=MM,
                           provided={"vessel", "artery", "vein", "optic_disc", "optic_cup", "fovea", "hemorrhage",
                                     "drusen"})
    assert r3.values["drusen_count"] == 0 and r2.values["drusen_count"] is None


def _fundus_image(masks, fov, blur=0, gain=1.0):
    img = np.zeros(fov.shape + (3,), np.float32)
    img[fov] = (170, 80, 40)
    yy, xx = np.mgrid[: fov.shape[0], : fov.shape[1]]
    img[..., 1] += 8 * np.sin(xx / 9.0) * np.cos(yy / 11.0) * fov  # choroidal texture
    img[masks["vessel"]] *= 0.6
    img[masks["optic_disc"]] = (250, 200, 150)
    if blur:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    return np.clip(img * gain, 0, 255).astype(np.uint8)


def test_quality_grades_sharp_blurred_and_dark(fundus):
    masks, fov = fundus
    scale = Scale(MM, "manifest")
    good = compute_biomarkers(masks, fov, scale, image=_fundus_image(masks, fov)).values
    blurred = compute_biomarkers(masks, fov, scale, image=_fundus_image(masks, fov, blur=6)).values
    dark = compute_biomarkers(masks, fov, scale, image=_fundus_image(masks, fov, gain=0.05)).values
    assert good["quality_grade"] in ("good", "usable") and good["gradable"] is True
    assert blurred["quality_sharpness"] < good["quality_sharpness"] / 5
    assert blurred["quality_score"] < good["quality_score"]
    assert dark["quality_grade"] == "reject" and dark["gradable"] is False
    assert good["quality_vessel_visibility"] > 0.2
    none = compute_biomarkers(masks, fov, scale).values
    assert none["quality_grade"] is None


def test_docs_module_runs(tmp_path):
    out = tmp_path / "b.md"
    subprocess.run([sys.executable, "-m", "retsam_core.biomarkers.docs", str(out)], check=True, cwd=REPO,
                   capture_output=True)
    assert out.read_text(encoding="utf-8") == render()
