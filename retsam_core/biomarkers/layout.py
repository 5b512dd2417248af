"""Where things are: field of view, disc and fovea centres, disc-fovea geometry, laterality and field type.

Laterality convention (standard fundus photograph, not mirrored): the disc is nasal to the fovea, so in a right eye
the disc appears to the right of the fovea.
"""

from __future__ import annotations

import cv2
import numpy as np

from retsam_core.biomarkers.context import Context, Disc, Output


def largest_component(mask: np.ndarray) -> np.ndarray | None:
    """The largest 8-connected component (None when empty)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1  # label only the bounding box
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask[r0:r1, c0:c1].astype(np.uint8), connectivity=8)
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    out = np.zeros(mask.shape, bool)
    out[r0:r1, c0:c1] = lab == k
    return out


def drop_specks(mask: np.ndarray, min_px: int) -> np.ndarray:
    """Remove 8-connected components smaller than min_px (isolated pixels would become fake segments/endpoints)."""
    if min_px <= 1 or not mask.any():
        return mask
    n, lab, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(mask.astype(np.uint8), 8, cv2.CV_32S,
                                                                       cv2.CCL_BBDT)
    small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < min_px)
    small = small[small > 0]
    if len(small) == 0:
        return mask
    keep = np.ones(n, bool)
    keep[small] = False
    keep[0] = False
    return keep[lab]


def centroid(mask: np.ndarray) -> tuple[float, float]:
    m = cv2.moments(mask.astype(np.uint8), binaryImage=True)
    return float(m["m10"] / m["m00"]), float(m["m01"] / m["m00"])


def locate(ctx: Context, laterality: str | None = None) -> None:
    """Fill ctx.fov_centre/radius, ctx.disc, ctx.fovea, ctx.laterality from the masks (a given laterality wins)."""
    if ctx.fov.any():
        ctx.fov_centre = centroid(ctx.fov)
        ctx.fov_radius = float(np.sqrt(ctx.fov.sum() / np.pi))
    if ctx.known("optic_disc"):
        d = largest_component(ctx.masks["optic_disc"])
        if d is not None:
            cx, cy = centroid(d)
            ctx.disc = Disc(cx, cy, float(np.sqrt(d.sum() / np.pi)))
            ctx._cache["disc_component"] = d
    if ctx.known("fovea"):
        f = largest_component(ctx.masks["fovea"])
        if f is not None:
            ctx.fovea = centroid(f)
    if laterality is not None:
        ctx.laterality, ctx._cache["laterality_source"] = laterality, "given"
    else:
        ctx.laterality, ctx._cache["laterality_source"] = _laterality(ctx)


def _laterality(ctx: Context) -> tuple[str | None, str | None]:
    if ctx.disc is None:
        return None, None
    if ctx.fovea is not None and abs(ctx.disc.cx - ctx.fovea[0]) > 1e-6:
        return ("right" if ctx.disc.cx > ctx.fovea[0] else "left"), "disc_fovea"
    off = ctx.disc.cx - ctx.fov_centre[0]
    if ctx.fov_radius > 0 and abs(off) > 0.2 * ctx.fov_radius:
        return ("right" if off > 0 else "left"), "disc_position"
    return None, None


def compute_layout(ctx: Context, out: Output) -> None:
    mm = ctx.mm
    out.set("fov_area_px", int(ctx.fov.sum()))
    out.mm("fov_area_mm2", float(ctx.fov.sum()), mm, power=2)
    if ctx.fov.any():
        out.set("fov_centre_x_px", ctx.fov_centre[0])
        out.set("fov_centre_y_px", ctx.fov_centre[1])
        out.set("fov_radius_px", ctx.fov_radius)
    else:
        out.null(["fov_centre_x_px", "fov_centre_y_px", "fov_radius_px"], "empty field of view")
    disc_cols = ["disc_centre_x_px", "disc_centre_y_px", "disc_radius_px"]
    if ctx.disc is None:
        why = "no optic_disc mask" if not ctx.known("optic_disc") else "the optic_disc mask is empty"
        out.null(disc_cols, why)
    else:
        for c, v in zip(disc_cols, (ctx.disc.cx, ctx.disc.cy, ctx.disc.r)):
            out.set(c, v)
    fov_cols = ["fovea_centre_x_px", "fovea_centre_y_px"]
    if ctx.fovea is None:
        out.null(fov_cols, "no fovea mask" if not ctx.known("fovea") else "the fovea mask is empty")
    else:
        out.set(fov_cols[0], ctx.fovea[0])
        out.set(fov_cols[1], ctx.fovea[1])
    df_cols = ["disc_fovea_distance_px", "disc_fovea_distance_mm", "disc_fovea_distance_dd", "disc_fovea_angle_deg"]
    if ctx.disc is None or ctx.fovea is None:
        out.null(df_cols, "needs both the optic disc and the fovea")
    else:
        dx, dy = ctx.fovea[0] - ctx.disc.cx, ctx.fovea[1] - ctx.disc.cy
        dist = float(np.hypot(dx, dy))
        out.set("disc_fovea_distance_px", dist)
        out.mm("disc_fovea_distance_mm", dist, mm)
        out.set("disc_fovea_distance_dd", dist / (2.0 * ctx.disc.r))
        out.set("disc_fovea_angle_deg", np.degrees(np.arctan2(-dy, abs(dx))))
    if ctx.laterality is None:
        why = "needs an optic disc" if ctx.disc is None else "no fovea and the disc is near the field centre"
        out.null(["laterality", "laterality_source"], why)
    else:
        out.set("laterality", ctx.laterality)
        out.set("laterality_source", ctx._cache["laterality_source"])
    out_field = field_type(ctx)
    out.set("field_type", out_field, None if out_field else "needs an optic disc or a fovea")


def field_type(ctx: Context) -> str | None:
    c = np.array(ctx.fov_centre)
    dd = np.hypot(*(np.array([ctx.disc.cx, ctx.disc.cy]) - c)) if ctx.disc is not None else None
    df = np.hypot(*(np.array(ctx.fovea) - c)) if ctx.fovea is not None else None
    if dd is not None and df is not None:
        return "disc_centred" if dd < df else "macula_centred"
    if dd is not None and ctx.fov_radius > 0:
        return "disc_centred" if dd < 0.3 * ctx.fov_radius else "macula_centred"
    if df is not None and ctx.fov_radius > 0:
        return "macula_centred" if df < 0.3 * ctx.fov_radius else "disc_centred"
    return None
