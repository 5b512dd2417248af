"""Lesion load and phenotypes per class: counts, areas, coverage, size bins, shape, macula-centred location;
tessellation and myopic atrophy.

An empty provided mask is a real "none found" (zero counts); an unknown target is null with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from retsam_core.biomarkers.catalogue import ATROPHY_TARGETS, LESION_QUADRANTS, SIZE_BINS_MM2
from retsam_core.biomarkers.context import Context, Output
from retsam_core.targets import LESION_TARGETS

ETDRS_CENTRE_MM = 0.5


@dataclass
class Components:
    labels: np.ndarray
    area: np.ndarray  # px
    cx: np.ndarray
    cy: np.ndarray
    circularity: np.ndarray
    aspect: np.ndarray


_SQ2 = float(np.sqrt(2.0))
# skimage.measure.perimeter (4-neighbourhood) weights, indexed by the border-pixel pattern code
_PERIM_W = np.zeros(50)
_PERIM_W[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIM_W[[21, 33]] = _SQ2
_PERIM_W[[13, 23]] = (1.0 + _SQ2) / 2.0


def components(mask: np.ndarray) -> Components:
    """8-connected components with area, centroid, circularity 4 pi A / P^2 (capped at 1) and aspect ratio
    (moment-ellipse major / minor), all vectorised over components.

    The perimeter is skimage's weighted 4-neighbourhood estimate (within ~10 % of 2 pi r for digital discs, where
    raw chain codes overshoot), evaluated only at border pixels and summed per label.
    """
    m = mask.astype(np.uint8)
    # BBDT labelling is ~3x faster than OpenCV's default on sparse lesion masks
    n, lab, stats, cents = cv2.connectedComponentsWithStatsWithAlgorithm(m, 8, cv2.CV_32S, cv2.CCL_BBDT)
    k = n - 1
    area = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    if k == 0:
        e = np.zeros(0)
        return Components(lab, area, e, e, e, e)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    border = m & ~cv2.erode(m, cross, borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    by, bx = np.divmod(np.flatnonzero(border), m.shape[1])  # 1-D flatnonzero is ~5x faster than 2-D nonzero
    b = np.pad(border.astype(np.int32), 1)
    y, x = by + 1, bx + 1
    code = (b[y, x] + 2 * (b[y - 1, x] + b[y + 1, x] + b[y, x - 1] + b[y, x + 1])
            + 10 * (b[y - 1, x - 1] + b[y - 1, x + 1] + b[y + 1, x - 1] + b[y + 1, x + 1]))
    per = np.bincount(lab[by, bx], _PERIM_W[code], minlength=n)[1:]
    circ = np.minimum(1.0, 4.0 * np.pi * area / np.maximum(per, 1.0) ** 2)
    ys, xs = np.divmod(np.flatnonzero(m), m.shape[1])
    li = lab[ys, xs]
    cx, cy = cents[1:, 0], cents[1:, 1]
    dx, dy = xs - cx[li - 1], ys - cy[li - 1]
    sxx = np.bincount(li, dx * dx, minlength=n)[1:] / area + 1.0 / 12.0  # + pixel extent
    syy = np.bincount(li, dy * dy, minlength=n)[1:] / area + 1.0 / 12.0
    sxy = np.bincount(li, dx * dy, minlength=n)[1:] / area
    tr, det = sxx + syy, sxx * syy - sxy * sxy
    disc = np.sqrt(np.maximum(tr * tr / 4.0 - det, 0.0))
    l1, l2 = tr / 2.0 + disc, np.maximum(tr / 2.0 - disc, 1e-12)
    asp = np.sqrt(l1 / l2)
    return Components(lab, area, cx, cy, circ, asp)


def _quadrant_names(ctx: Context, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    fx, fy = ctx.fovea
    nasal_is_right = ctx.laterality == "right"
    sup = cy < fy
    nasal = (cx > fx) if nasal_is_right else (cx < fx)
    return np.select(
        [sup & ~nasal, sup & nasal, ~sup & ~nasal], ["superotemporal", "superonasal", "inferotemporal"], "inferonasal"
    )


def compute_lesions(ctx: Context, out: Output) -> None:
    mm, fov = ctx.mm, ctx.fov
    retina = float(fov.sum())
    for c in LESION_TARGETS:
        cols = [col for col in _family_cols("lesions") if col.startswith(c + "_")]
        if not ctx.known(c):
            out.null(cols, f"{c} not provided by the segmenter / no {c} mask")
            continue
        m = ctx.masks[c] & fov
        comp = components(m)
        n = len(comp.area)
        out.set(f"{c}_count", n)
        total = float(comp.area.sum())
        out.set(f"{c}_area_px", total)
        out.mm(f"{c}_area_mm2", total, mm, 2)
        out.set(f"{c}_coverage", total / retina if retina else None, "empty field of view")
        for b, lo, hi in SIZE_BINS_MM2:
            if mm is None:
                out.null(f"{c}_count_{b}", "size bins are in mm^2: no pixel size")
            else:
                a = comp.area * mm * mm
                out.set(f"{c}_count_{b}", int(np.sum((a >= lo) & (a < hi))))
        why = f"no {c} component"
        out.set(f"{c}_circularity_mean", np.mean(comp.circularity) if n else None, why)
        out.set(f"{c}_aspect_ratio_mean", np.mean(comp.aspect) if n else None, why)
        qcols = [f"{c}_count_{q}" for q in LESION_QUADRANTS]
        if ctx.fovea is None or ctx.laterality is None:
            out.null(qcols, "quadrants need the fovea and laterality (nasal/temporal)")
        else:
            qn = _quadrant_names(ctx, comp.cx, comp.cy)
            for q, col in zip(LESION_QUADRANTS, qcols):
                out.set(col, int(np.sum(qn == q)))
        ecols = [f"{c}_etdrs_centre_count", f"{c}_etdrs_centre_involved"]
        if ctx.fovea is None or mm is None:
            out.null(ecols, "the ETDRS centre needs the fovea and a pixel size")
        else:
            ids = _labels_in_disc(comp.labels, ctx.fovea, ETDRS_CENTRE_MM / mm)
            out.set(ecols[0], len(ids))
            out.set(ecols[1], len(ids) > 0)


def _labels_in_disc(labels: np.ndarray, centre: tuple[float, float], radius: float) -> np.ndarray:
    h, w = labels.shape
    x0, x1 = max(0, int(centre[0] - radius) - 1), min(w, int(centre[0] + radius) + 2)
    y0, y1 = max(0, int(centre[1] - radius) - 1), min(h, int(centre[1] + radius) + 2)
    if x1 <= x0 or y1 <= y0:
        return np.zeros(0, np.int64)
    sub = labels[y0:y1, x0:x1]
    yy, xx = np.mgrid[y0:y1, x0:x1]
    inside = np.hypot(xx - centre[0], yy - centre[1]) <= radius
    ids = np.unique(sub[inside])
    return ids[ids > 0]


def compute_phenotypes(ctx: Context, out: Output) -> None:
    mm, fov = ctx.mm, ctx.fov
    retina = float(fov.sum())
    tcols = [col for col in _family_cols("phenotype") if col.startswith("tessellation_")]
    if not ctx.known("tessellation"):
        out.null(tcols, "tessellation not provided / no tessellation mask")
    else:
        comp = components(ctx.masks["tessellation"] & fov)
        n = len(comp.area)
        out.set("tessellation_count", n)
        out.mm("tessellation_area_mm2", float(comp.area.sum()), mm, 2)
        out.set("tessellation_coverage", comp.area.sum() / retina if retina else None, "empty field of view")
        why = "no tessellation component"
        out.set("tessellation_circularity_mean", np.mean(comp.circularity) if n else None, why)
        out.set("tessellation_aspect_ratio_mean", np.mean(comp.aspect) if n else None, why)
        if n:
            wts = comp.area / comp.area.sum()
            mx, my = np.sum(wts * comp.cx), np.sum(wts * comp.cy)
            disp = float(np.sqrt(np.sum(wts * ((comp.cx - mx) ** 2 + (comp.cy - my) ** 2))))
            out.set("tessellation_centroid_dispersion", disp / ctx.fov_radius if ctx.fov_radius else None,
                    "empty field of view")
            out.mm("tessellation_centroid_dispersion_mm", disp, mm)
        else:
            out.null(["tessellation_centroid_dispersion", "tessellation_centroid_dispersion_mm"], why)
    union = np.zeros(ctx.shape, bool)
    all_known = True
    for c in ATROPHY_TARGETS:
        cols = [f"{c}_count", f"{c}_area_px", f"{c}_area_mm2", f"{c}_coverage"]
        if not ctx.known(c):
            out.null(cols, f"{c} not provided / no {c} mask")
            all_known = False
            continue
        m = ctx.masks[c] & fov
        union |= m
        n, _ = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        area = float(m.sum())
        out.set(f"{c}_count", n - 1)
        out.set(f"{c}_area_px", area)
        out.mm(f"{c}_area_mm2", area, mm, 2)
        out.set(f"{c}_coverage", area / retina if retina else None, "empty field of view")
    if all_known and retina:
        out.set("atrophy_total_coverage", union.sum() / retina)
    else:
        out.null("atrophy_total_coverage", "needs all three atrophy masks")
    if not ctx.known("peripapillary_atrophy"):
        out.null("ppa_disc_area_ratio", "no peripapillary_atrophy mask")
    elif ctx.disc is None:
        out.null("ppa_disc_area_ratio", "no optic disc (never invented)")
    else:
        out.set("ppa_disc_area_ratio", float((ctx.masks["peripapillary_atrophy"] & fov).sum())
                / float(ctx._cache["disc_component"].sum()))


def _family_cols(family: str) -> list[str]:
    from retsam_core.biomarkers.catalogue import CATALOGUE

    return [c.name for c in CATALOGUE if c.family == family]
