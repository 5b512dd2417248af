"""Optic disc and cup: areas, diameters, cup-to-disc ratios, ISNT rim widths, orientation and ovality.

Rim widths are measured along rays from the disc centre (disc radius minus cup radius per ray) and summarised by
the median over each 90-degree sector; nasal/temporal need laterality (nasal = away from the fovea).
"""

from __future__ import annotations

import numpy as np

from retsam_core.biomarkers.catalogue import ISNT_SECTORS
from retsam_core.biomarkers.context import Context, Output


def extents(mask: np.ndarray) -> tuple[float, float]:
    """(vertical, horizontal) extent in pixels: rows and columns spanned."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return float(ys[-1] - ys[0] + 1), float(xs[-1] - xs[0] + 1)


def ellipse(mask: np.ndarray) -> tuple[float, float, float]:
    """(orientation deg in [0,180) counter-clockwise as seen, major, minor) of the moment ellipse."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    ys, xs = np.nonzero(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])  # crop: 2-D nonzero is slow
    x, y = xs - xs.mean(), ys - ys.mean()
    cxx, cyy, cxy = np.mean(x * x), np.mean(y * y), np.mean(x * y)
    cov = np.array([[cxx, cxy], [cxy, cyy]])
    evals, evecs = np.linalg.eigh(cov)
    major_vec = evecs[:, 1]
    # image y points down: negate to get the as-seen counter-clockwise angle
    ang = np.degrees(np.arctan2(-major_vec[1], major_vec[0])) % 180.0
    return float(ang), 4.0 * float(np.sqrt(max(evals[1], 0))), 4.0 * float(np.sqrt(max(evals[0], 0)))


def ray_radii(mask: np.ndarray, cx: float, cy: float, angles: np.ndarray, r_max: float, step: float = 0.5) -> np.ndarray:
    """Distance from (cx, cy) to the first pixel outside `mask` along each ray (image angle, y down)."""
    r = np.arange(0.0, r_max + step, step)
    xs = np.rint(cx + np.cos(angles)[:, None] * r[None, :]).astype(np.int64)
    ys = np.rint(cy + np.sin(angles)[:, None] * r[None, :]).astype(np.int64)
    h, w = mask.shape
    valid = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    inside = np.zeros(xs.shape, bool)
    inside[valid] = mask[ys[valid], xs[valid]]
    outside = ~inside
    first_out = np.where(outside.any(axis=1), outside.argmax(axis=1), len(r))
    return first_out * step


def compute_disc(ctx: Context, out: Output) -> None:
    mm = ctx.mm
    disc_cols = [c for c in _cols() if c.startswith("disc_")]
    cup_cols = [c for c in _cols() if c.startswith(("cup_", "cdr_", "rim_", "isnt"))]
    if ctx.disc is None:
        why = "no optic_disc mask" if not ctx.known("optic_disc") else "the optic_disc mask is empty"
        out.null(disc_cols + cup_cols, why)
        return
    disc = ctx._cache["disc_component"]
    area = float(disc.sum())
    out.set("disc_area_px", area)
    out.mm("disc_area_mm2", area, mm, 2)
    dv, dh = extents(disc)
    for name, v in (("vertical", dv), ("horizontal", dh)):
        out.set(f"disc_{name}_diameter_px", v)
        out.mm(f"disc_{name}_diameter_mm", v, mm)
    ang, major, minor = ellipse(disc)
    out.set("disc_orientation_deg", ang)
    out.set("disc_ovality", minor / major if major > 0 else None, "degenerate disc")
    if not ctx.known("optic_cup"):
        out.null(cup_cols, "no optic_cup mask")
        return
    cup = ctx.masks["optic_cup"] & disc
    carea = float(cup.sum())
    out.set("cup_area_px", carea)
    out.mm("cup_area_mm2", carea, mm, 2)
    out.set("rim_area_px", area - carea)
    out.mm("rim_area_mm2", area - carea, mm, 2)
    out.set("cdr_area", carea / area)
    if carea > 0:
        cv, ch = extents(cup)
    else:
        cv = ch = 0.0
    for name, v, d in (("vertical", cv, dv), ("horizontal", ch, dh)):
        out.set(f"cup_{name}_diameter_px", v)
        out.mm(f"cup_{name}_diameter_mm", v, mm)
        out.set(f"cdr_{name}", v / d)
    _isnt(ctx, out, disc, cup)


def _isnt(ctx: Context, out: Output, disc: np.ndarray, cup: np.ndarray) -> None:
    cols = [f"rim_width_{s}_{u}" for s in ISNT_SECTORS for u in ("px", "mm")] + ["isnt_rule"]
    if ctx.laterality is None:
        out.null(cols, "ISNT needs laterality (nasal = away from the fovea): no fovea and disc near the centre")
        return
    d = ctx.disc
    angles = np.radians(np.arange(0.0, 360.0, 1.0))
    r_max = 3.0 * d.r + 5
    rd = ray_radii(disc, d.cx, d.cy, angles, r_max)
    rc = ray_radii(cup, d.cx, d.cy, angles, r_max) if cup.any() else np.zeros_like(rd)
    if cup.any() and not cup[int(round(d.cy)), int(round(d.cx))]:
        rc = np.zeros_like(rd)  # cup away from the disc centre: rays cannot see it; treat as rim everywhere
    rim = np.maximum(rd - rc, 0.0)
    # image angles (y down): 90 = inferior, 270 = superior; nasal = +x for a right eye
    centres = {"inferior": 90.0, "superior": 270.0, "nasal": 0.0 if ctx.laterality == "right" else 180.0}
    centres["temporal"] = (centres["nasal"] + 180.0) % 360.0
    deg = np.degrees(angles)
    widths = {}
    for s in ISNT_SECTORS:
        diff = np.abs((deg - centres[s] + 180.0) % 360.0 - 180.0)
        widths[s] = float(np.median(rim[diff <= 45.0]))
        out.set(f"rim_width_{s}_px", widths[s])
        out.mm(f"rim_width_{s}_mm", widths[s], ctx.mm)
    w = widths
    out.set("isnt_rule", w["inferior"] >= w["superior"] >= w["nasal"] >= w["temporal"])


def _cols() -> list[str]:
    from retsam_core.biomarkers.catalogue import CATALOGUE

    return [c.name for c in CATALOGUE if c.family == "disc"]
