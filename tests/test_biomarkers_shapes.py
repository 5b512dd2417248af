"""Biomarkers on analytic shapes with known answers (no data needed)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy.integrate import quad

from retsam_core.biomarkers import Scale, compute_biomarkers
from retsam_core.biomarkers.calibre import knudtson_pair, parr_hubbard_pair, recursive_pairing
from retsam_core.biomarkers.fractal import box_counting, multifractal
from retsam_core.biomarkers.synthetic import draw_polyline
from retsam_core.biomarkers.tortuosity import tortuosity_density

N = 1024
MM = 0.012
SCALE = Scale(MM, "manifest")
FOV = np.ones((N, N), bool)


def _line_mask(pts: np.ndarray, width: int, n: int = N) -> np.ndarray:
    m = np.zeros((n, n), np.uint8)
    draw_polyline(m, pts, width)
    return m.astype(bool)


def _vessel(mask: np.ndarray, scale: Scale = SCALE) -> dict:
    return compute_biomarkers({"vessel": mask}, FOV[: mask.shape[0], : mask.shape[1]], scale).values


# ---------------------------------------------------------------- tortuosity


@pytest.mark.parametrize("angle", [0.0, 22.5, 37.0, 45.0])
def test_straight_vessel_is_not_tortuous(angle):
    a = math.radians(angle)
    p0 = np.array([150.0, 200.0])
    pts = np.stack([p0, p0 + 700 * np.array([math.cos(a), math.sin(a)])])
    v = _vessel(_line_mask(pts, 5))
    assert v["n_segments_all_retina"] == 1
    assert v["tortuosity_distance_all_retina"] == pytest.approx(1.0, abs=0.005)
    assert v["tortuosity_density_per_mm_all_retina"] == pytest.approx(0.0, abs=1e-3)
    assert v["tortuosity_curvature_per_px2_all_retina"] < 1e-4
    # length: the skeleton stops about half a width short at each end
    assert v["vessel_length_px_all_retina"] == pytest.approx(700, abs=8)
    assert v["vessel_length_mm_all_retina"] == pytest.approx(700 * MM, abs=8 * MM)


def _sine_truth(a: float, lam: float, x0: float, x1: float) -> tuple[float, float]:
    """(arc/chord, integral k^2 ds / L) of y = a sin(2 pi x / lam) on [x0, x1]."""
    k = 2 * math.pi / lam

    def ds(x):
        return math.sqrt(1 + (a * k * math.cos(k * x)) ** 2)

    def k2ds(x):
        yp, ypp = a * k * math.cos(k * x), -a * k * k * math.sin(k * x)
        return ypp**2 / (1 + yp**2) ** 2.5

    arc = quad(ds, x0, x1, limit=200)[0]
    return arc / (x1 - x0), quad(k2ds, x0, x1, limit=200)[0] / arc


def test_sinusoidal_vessel_matches_analytic_tortuosity():
    a, lam = 40.0, 200.0
    xs = np.arange(100.0, 900.5, 0.5)
    pts = np.stack([xs, 512 + a * np.sin(2 * np.pi * xs / lam)], 1)
    v = _vessel(_line_mask(pts, 3))
    t_dist, t_curv = _sine_truth(a, lam, 100.0, 900.0)
    assert v["tortuosity_distance_all_retina"] == pytest.approx(t_dist, rel=0.02)
    assert v["tortuosity_curvature_per_px2_all_retina"] == pytest.approx(t_curv, rel=0.12)
    assert v["tortuosity_curvature_per_mm2_all_retina"] == pytest.approx(t_curv / MM**2, rel=0.12)
    # Grisan: 8 half-waves between inflections; TD = (n-1)/n * sum(L_i/S_i - 1) / L = 7 (t-1) / (800 t)
    td_px = 7 * (t_dist - 1) / (800 * t_dist)
    assert v["tortuosity_density_per_mm_all_retina"] == pytest.approx(td_px / MM, rel=0.15)


def test_tortuosity_density_reference_function():
    # two arcs of a circle with opposite bending: n = 2 turns
    t = np.linspace(0, np.pi / 2, 200)
    r = 100.0
    arc1 = np.stack([r * np.sin(t), r - r * np.cos(t)], 1)
    arc2 = np.stack([2 * r - r * np.cos(t), r + r * np.sin(t)], 1)  # bends the other way
    p = np.concatenate([arc1, arc2[1:]])[:, ::-1]  # (row, col)
    from retsam_core.biomarkers.tortuosity import curvature_terms

    k, _ = curvature_terms(p)
    steps = np.hypot(*np.diff(p, axis=0).T)
    L = steps.sum()
    li = L / 2
    si = r * math.sqrt(2)
    expected = 0.5 * 2 * (li / si - 1) / L
    assert tortuosity_density(p, k, L, 1e-4) == pytest.approx(expected, rel=0.03)


# ---------------------------------------------------------------- fractal dimension


def test_fractal_dimension_of_disc_line_and_sierpinski():
    yy, xx = np.mgrid[:N, :N]
    disc = np.hypot(xx - 512, yy - 512) < 450
    # boxes up to a quarter of the ROI see the boundary: a filled disc reads slightly under 2
    assert box_counting(disc) == pytest.approx(2.0, abs=0.1)
    line = _line_mask(np.array([[50.0, 100.0], [980.0, 900.0]]), 1)
    assert box_counting(line) == pytest.approx(1.0, abs=0.07)  # a digital diagonal reads ~0.94
    i, j = np.mgrid[:512, :512]
    sierpinski = (i & j) == 0
    d = math.log(3) / math.log(2)
    assert box_counting(sierpinski) == pytest.approx(d, abs=0.02)
    mf = multifractal(sierpinski)
    for q in ("d0", "d1", "d2"):
        assert mf[q] == pytest.approx(d, abs=0.03)
    mfd = multifractal(disc)
    assert mfd["d0"] == pytest.approx(2.0, abs=0.1) and mfd["d2"] == pytest.approx(2.0, abs=0.1)


# ---------------------------------------------------------------- branching


def test_synthetic_bifurcation_angle_and_widths():
    half = math.radians(35.0)
    j = np.array([512.0, 600.0])
    m = np.zeros((N, N), np.uint8)
    draw_polyline(m, np.stack([[512.0, 950.0], j]), 9)
    for s in (-1, 1):
        end = j + 300 * np.array([s * math.sin(half), -math.cos(half)])
        draw_polyline(m, np.stack([j, end]), 7)
    v = _vessel(m.astype(bool))
    assert v["n_bifurcations_all_retina"] == 1
    assert v["n_endpoints_all_retina"] == 3
    assert v["n_crossings_all_retina"] == 0
    assert v["n_segments_all_retina"] == 3
    assert v["branching_angle_mean_deg_all_retina"] == pytest.approx(70.0, abs=6.0)
    assert v["branching_coefficient_median_all_retina"] == pytest.approx((49 + 49) / 81, abs=0.3)
    assert v["junction_exponent_median_all_retina"] == pytest.approx(math.log(2) / math.log(9 / 7), abs=1.2)


def test_crossing_is_counted():
    m = _line_mask(np.array([[100.0, 512.0], [900.0, 512.0]]), 7) | _line_mask(
        np.array([[512.0, 100.0], [512.0, 900.0]]), 7
    )
    v = _vessel(m)
    assert v["n_crossings_all_retina"] == 1
    assert v["n_bifurcations_all_retina"] == 0
    assert v["n_endpoints_all_retina"] == 4


# ---------------------------------------------------------------- calibre


def test_knudtson_by_hand():
    w = [10, 20, 30, 40, 50, 60]
    a = 0.88
    s1 = [a * math.hypot(60, 10), a * math.hypot(50, 20), a * math.hypot(40, 30)]  # 53.53, 47.39, 44.00
    s2 = [a * math.hypot(s1[0], s1[2]), s1[1]]  # widest with narrowest, carry the middle
    expected = a * math.hypot(*s2)
    assert recursive_pairing(w, knudtson_pair("artery")) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(67.96, abs=0.01)
    v = [0.95 * math.hypot(60, 10), 0.95 * math.hypot(50, 20), 0.95 * math.hypot(40, 30)]
    ev = 0.95 * math.hypot(0.95 * math.hypot(max(v), min(v)), sorted(v)[1])
    assert recursive_pairing(w, knudtson_pair("vein")) == pytest.approx(ev, rel=1e-12)


def test_parr_hubbard_by_hand():
    assert parr_hubbard_pair("artery")(120.0, 100.0) == pytest.approx(
        math.sqrt(0.87 * 100**2 + 1.01 * 120**2 - 0.22 * 100 * 120 - 10.76), rel=1e-12
    )
    assert parr_hubbard_pair("vein")(100.0, 150.0) == pytest.approx(
        math.sqrt(0.72 * 100**2 + 0.91 * 150**2 + 450.05), rel=1e-12
    )
    # three vessels: pair widest with narrowest, carry the middle, pair again
    ws = [80.0, 100.0, 120.0]
    f = parr_hubbard_pair("artery")
    first = f(80.0, 120.0)
    assert recursive_pairing(ws, f) == pytest.approx(f(100.0, first), rel=1e-12)


def _star(widths_a, widths_v, r_disc=40.0):
    """Radial vessels from a disc; also returns each vessel's true mean width (area / length in zone B)."""
    yy, xx = np.mgrid[:N, :N]
    c = np.array([512.0, 512.0])
    dist = np.hypot(xx - 512, yy - 512)
    ring = (dist >= 2 * r_disc) & (dist < 3 * r_disc)
    art = np.zeros((N, N), bool)
    vein = np.zeros((N, N), bool)
    ws = [(w, art) for w in widths_a] + [(w, vein) for w in widths_v]
    true = {"artery": [], "vein": []}
    for k, (w, m) in enumerate(ws):
        t = 2 * np.pi * k / len(ws) + 0.1
        d = np.array([math.cos(t), math.sin(t)])
        one = _line_mask(np.stack([c + 1.2 * r_disc * d, c + 7 * r_disc * d]), w)
        m |= one
        true["artery" if m is art else "vein"].append((one & ring).sum() / r_disc)
    disc = dist < r_disc
    return {"artery": art, "vein": vein, "optic_disc": disc}, true


def test_crae_crve_on_a_star_of_known_widths():
    wa, wv = [5, 7, 9, 11, 13, 15, 3], [9, 11, 13, 15, 17, 19]
    masks, true = _star(wa, wv)
    res = compute_biomarkers(masks, FOV, SCALE)
    v = res.values
    assert v["calibre_n_vessels_artery_zone_b"] == 7
    top_a, top_v = sorted(true["artery"])[-6:], sorted(true["vein"])[-6:]
    crae_px = recursive_pairing(top_a, knudtson_pair("artery"))
    crve_px = recursive_pairing(top_v, knudtson_pair("vein"))
    assert v["crae_knudtson_px_zone_b"] == pytest.approx(crae_px, rel=0.05)
    assert v["crve_knudtson_px_zone_b"] == pytest.approx(crve_px, rel=0.05)
    assert v["crae_knudtson_um_zone_b"] == pytest.approx(v["crae_knudtson_px_zone_b"] * MM * 1000, rel=1e-9)
    assert v["avr_knudtson_zone_b"] == pytest.approx(crae_px / crve_px, rel=0.05)
    # Parr-Hubbard works in micrometres (the constants are not scale-free)
    ph = recursive_pairing([w * MM * 1000 for w in top_a], parr_hubbard_pair("artery"))
    assert v["crae_parr_hubbard_um_zone_b"] == pytest.approx(ph, rel=0.05)
    # too few vessels: null with a reason, not a number
    few, _ = _star([7, 9, 11], [9, 11, 13])
    r2 = compute_biomarkers(few, FOV, SCALE)
    assert r2.values["crae_knudtson_um_zone_b"] is None
    assert "only 3" in r2.reasons["crae_knudtson_um_zone_b"]
    assert r2.values["avr_knudtson_zone_b"] is None


def test_crve_survives_a_gap_at_the_zone_mid_circle():
    """A break in every vein at 2.5 r (where a one-circle reading looks) must not drop the veins, and a disc radius
    2 % off must not swing CRVE: the equivalents are read on five circles across zone B."""
    wa, wv = [3, 4, 5, 6, 7, 8], [4, 5, 6, 7, 8, 9]  # real calibres at this disc size (r 40 px)
    masks, _ = _star(wa, wv)
    whole = compute_biomarkers(masks, FOV, SCALE).values
    dist = np.hypot(*(np.mgrid[:N, :N] - 512.0))
    broken = dict(masks, vein=masks["vein"] & ~((dist > 2.48 * 40) & (dist < 2.52 * 40)))
    gap = compute_biomarkers(broken, FOV, SCALE).values
    assert gap["calibre_n_vessels_vein_zone_b"] == whole["calibre_n_vessels_vein_zone_b"] == 6
    assert gap["crve_knudtson_px_zone_b"] == pytest.approx(whole["crve_knudtson_px_zone_b"], rel=0.03)
    larger_disc = dict(masks, optic_disc=dist < 40.8)
    moved = compute_biomarkers(larger_disc, FOV, SCALE).values
    assert moved["crve_knudtson_px_zone_b"] == pytest.approx(whole["crve_knudtson_px_zone_b"], rel=0.03)
    # the catalogue's definition (a literal: context imports the catalogue) names the circles actually used
    from retsam_core.biomarkers.calibre import zone_circle_radii
    from retsam_core.biomarkers.catalogue import COLUMNS
    from retsam_core.biomarkers.context import Config

    n = Config().calibre_circles
    lo, hi = zone_circle_radii("zone_b", 1.0, n)[[0, -1]]
    defn = COLUMNS["crve_knudtson_um_zone_b"].definition
    assert f"each of {n} circles" in defn and f"{lo:.1f}r-{hi:.1f}r for zone B" in defn


# ---------------------------------------------------------------- disc and cup


def _ellipse(cx, cy, ax, ay, angle=0.0):
    m = np.zeros((N, N), np.uint8)
    cv2.ellipse(m, (int(cx), int(cy)), (int(ax), int(ay)), angle, 0, 360, 1, -1)
    return m.astype(bool)


def test_disc_cup_ratios_from_ellipses():
    disc = _ellipse(600, 500, 90, 100)
    cup = _ellipse(600, 500, 40, 60)
    fovea = _ellipse(250, 520, 15, 15)
    v = compute_biomarkers({"optic_disc": disc, "optic_cup": cup, "fovea": fovea}, FOV, SCALE).values
    assert v["cdr_vertical"] == pytest.approx(121 / 201, abs=0.01)
    assert v["cdr_horizontal"] == pytest.approx(81 / 181, abs=0.01)
    assert v["cdr_area"] == pytest.approx(40 * 60 / (90 * 100), rel=0.03)
    assert v["disc_area_mm2"] == pytest.approx(math.pi * 90 * 100 * MM**2, rel=0.02)
    assert v["rim_area_px"] == pytest.approx(v["disc_area_px"] - v["cup_area_px"])
    assert v["laterality"] == "right" and v["laterality_source"] == "disc_fovea"
    assert v["disc_ovality"] == pytest.approx(0.9, abs=0.02)
    assert v["disc_fovea_distance_px"] == pytest.approx(math.hypot(350, 20), abs=1.0)
    assert v["disc_fovea_angle_deg"] == pytest.approx(-math.degrees(math.atan2(20, 350)), abs=0.5)


def test_disc_orientation_and_isnt():
    v = compute_biomarkers({"optic_disc": _ellipse(512, 512, 100, 70, angle=-30)}, FOV, SCALE).values
    assert v["disc_orientation_deg"] == pytest.approx(30.0, abs=2.0)
    assert v["disc_ovality"] == pytest.approx(0.7, abs=0.02)
    # right eye (fovea left of the disc): temporal = -x. Cup shifted temporally and up -> thin T, thinner S than I
    yy, xx = np.mgrid[:N, :N]
    disc = np.hypot(xx - 600, yy - 500) < 100
    cup = np.hypot(xx - 585, yy - 495) < 50
    fovea = _ellipse(250, 520, 15, 15)
    masks = {"optic_disc": disc, "optic_cup": cup, "fovea": fovea}
    v = compute_biomarkers(masks, FOV, SCALE).values
    w = {s: v[f"rim_width_{s}_px"] for s in ("inferior", "superior", "nasal", "temporal")}
    assert w["temporal"] < w["superior"] < w["inferior"] and w["temporal"] < w["nasal"]
    assert w["nasal"] == pytest.approx(50 + 15 * math.cos(math.radians(22.5)), abs=3)
    assert w["temporal"] == pytest.approx(50 - 15 * math.cos(math.radians(22.5)), abs=3)
    # mirror image = the other eye: same anatomical rim widths
    mv = compute_biomarkers({k: m[:, ::-1] for k, m in masks.items()}, FOV, SCALE).values
    assert mv["laterality"] == "left"
    for s in w:
        assert mv[f"rim_width_{s}_px"] == pytest.approx(w[s], abs=1.0)
    assert mv["isnt_rule"] == v["isnt_rule"]


# ---------------------------------------------------------------- lesions


def test_lesions_count_area_quadrants_and_etdrs():
    fx, fy = 400, 512
    disc = _ellipse(750, 500, 60, 60)  # right of the fovea: right eye, nasal = +x
    fovea = _ellipse(fx, fy, 10, 10)
    he = np.zeros((N, N), np.uint8)
    spots = [(-150, -100, 10), (-100, -200, 12), (150, -120, 9), (-120, 150, 8), (-200, 100, 15), (-60, 220, 10),
             (20, 0, 6)]  # 2 ST, 1 SN, 3 IT, 0 IN, 1 at the centre (ETDRS, nasal-inferior by centroid? no: y=0)
    for dx, dy, r in spots:
        cv2.circle(he, (fx + dx, fy + dy), r, 1, -1)
    he = he.astype(bool)
    masks = {"optic_disc": disc, "fovea": fovea, "hemorrhage": he, "drusen": np.zeros((N, N), bool)}
    provided = {"optic_disc", "fovea", "hemorrhage", "drusen"}
    res = compute_biomarkers(masks, FOV, SCALE, provided=provided)
    v = res.values
    assert v["hemorrhage_count"] == 7
    assert v["hemorrhage_area_px"] == he.sum()
    assert v["hemorrhage_area_mm2"] == pytest.approx(he.sum() * MM * MM)
    assert v["hemorrhage_coverage"] == pytest.approx(he.sum() / N / N)
    assert v["hemorrhage_count_superotemporal"] == 2
    assert v["hemorrhage_count_superonasal"] == 1
    assert v["hemorrhage_count_inferotemporal"] == 3
    assert v["hemorrhage_count_inferonasal"] == 1  # the central spot's centroid has y == fy: inferior half
    assert v["hemorrhage_etdrs_centre_count"] == 1 and v["hemorrhage_etdrs_centre_involved"] is True
    assert v["hemorrhage_circularity_mean"] == pytest.approx(1.0, abs=0.12)
    assert v["hemorrhage_aspect_ratio_mean"] == pytest.approx(1.0, abs=0.1)
    areas_mm2 = np.array([math.pi * r * r for *_, r in spots]) * MM * MM
    assert v["hemorrhage_count_small"] == int(np.sum(areas_mm2 < 0.01))
    assert v["hemorrhage_count_medium"] == int(np.sum((areas_mm2 >= 0.01) & (areas_mm2 < 0.1)))
    # provided but empty: legitimate zeros; not provided: null with a reason
    assert v["drusen_count"] == 0 and v["drusen_area_mm2"] == 0.0
    assert v["soft_exudate_count"] is None and "soft_exudate" in res.reasons["soft_exudate_count"]


# ---------------------------------------------------------------- tessellation and atrophy


def test_tessellation_and_atrophy_measures():
    yy, xx = np.mgrid[:N, :N]
    fov = np.hypot(xx - 512, yy - 512) < 500
    tess = (np.hypot(xx - 300, yy - 512) < 40) | (np.hypot(xx - 700, yy - 512) < 40)  # equal blobs 400 px apart
    disc = np.hypot(xx - 512, yy - 300) < 50
    ppa = (np.hypot(xx - 512, yy - 300) < 80) & ~disc & (xx < 512)  # temporal half-ring
    patchy = np.zeros((N, N), bool)
    patchy[600:620, 600:640] = True
    masks = {"tessellation": tess, "optic_disc": disc, "peripapillary_atrophy": ppa, "patchy_atrophy": patchy,
             "diffuse_atrophy": np.zeros((N, N), bool)}
    res = compute_biomarkers(masks, fov, SCALE)
    v = res.values
    assert v["tessellation_count"] == 2
    assert v["tessellation_coverage"] == pytest.approx(tess.sum() / fov.sum())
    assert v["tessellation_area_mm2"] == pytest.approx(tess.sum() * MM * MM)
    assert v["tessellation_circularity_mean"] == pytest.approx(1.0, abs=0.1)
    # two equal blobs at +-200 px from their mean: RMS distance 200 px
    assert v["tessellation_centroid_dispersion_mm"] == pytest.approx(200 * MM, rel=0.01)
    assert v["tessellation_centroid_dispersion"] == pytest.approx(200 / math.sqrt(fov.sum() / math.pi), rel=0.01)
    assert v["ppa_disc_area_ratio"] == pytest.approx(ppa.sum() / disc.sum())
    assert v["patchy_atrophy_count"] == 1 and v["patchy_atrophy_area_px"] == 800
    assert v["diffuse_atrophy_count"] == 0
    assert v["atrophy_total_coverage"] == pytest.approx((ppa | patchy).sum() / fov.sum())
    # without a disc the PPA ratio is not invented
    del masks["optic_disc"]
    r2 = compute_biomarkers(masks, fov, SCALE)
    assert r2.values["ppa_disc_area_ratio"] is None and "disc" in r2.reasons["ppa_disc_area_ratio"]
