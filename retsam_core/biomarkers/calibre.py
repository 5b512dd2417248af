"""Central retinal artery / vein equivalents (Knudtson 2003, Parr-Hubbard) and the vessels they are built from.

The vessels of a zone are read on `Config.calibre_circles` concentric circles evenly spaced across it. On each
circle a vessel is a centreline segment crossing it (each vessel crosses a circle once, so a trunk split by small
side branches is not counted twice); its width is the median, over the segment's points inside the zone, of the
edge-to-edge width along the centreline normal. The equivalent is computed per circle and the median over the
circles is reported. Why: on the mid circle alone, a gap or junction at that one radius dropped a vessel, and a
disc radius 2 % different swung an image's CRVE by up to 20 % (`benchmarks/bench_calibre_stability.py`).
Parr-Hubbard constants assume micrometres, so widths are converted before the formula.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from scipy.ndimage import map_coordinates

from retsam_core.biomarkers.context import ZONE_BOUNDS, Context, Output
from retsam_core.biomarkers.tortuosity import Segments


def knudtson_pair(kind: str) -> Callable[[float, float], float]:
    k = {"artery": 0.88, "vein": 0.95}[kind]
    return lambda w1, w2: k * float(np.sqrt(w1 * w1 + w2 * w2))


def parr_hubbard_pair(kind: str) -> Callable[[float, float], float]:
    """Pair formula in micrometres; w1 is the smaller width."""

    def artery(a: float, b: float) -> float:
        w1, w2 = min(a, b), max(a, b)
        return float(np.sqrt(max(0.87 * w1 * w1 + 1.01 * w2 * w2 - 0.22 * w1 * w2 - 10.76, 0.0)))

    def vein(a: float, b: float) -> float:
        w1, w2 = min(a, b), max(a, b)
        return float(np.sqrt(0.72 * w1 * w1 + 0.91 * w2 * w2 + 450.05))

    return {"artery": artery, "vein": vein}[kind]


def recursive_pairing(widths: Sequence[float], pair: Callable[[float, float], float]) -> float:
    """Sort, pair i with n-1-i (widest with narrowest), carry the middle when n is odd, repeat to one value."""
    vals = sorted(float(w) for w in widths)
    if not vals:
        raise ValueError("no widths")
    while len(vals) > 1:
        n = len(vals)
        nxt = [pair(vals[i], vals[n - 1 - i]) for i in range(n // 2)]
        if n % 2:
            nxt.append(vals[n // 2])
        vals = sorted(nxt)
    return vals[0]


def profile_widths(mask: np.ndarray, p: np.ndarray, guess: np.ndarray, step: float = 0.25) -> np.ndarray:
    """Edge-to-edge width (px) across the vessel at each smoothed centreline point (row, col) of one ordered curve.

    Samples the bilinearly interpolated mask along the normal and counts the run through the centre whose
    value is >= 0.5: sub-pixel, and unbiased for oblique vessels where 2*DT - 1 reads up to ~1 px narrow.
    """
    if len(p) < 3:
        return np.full(len(p), np.nan)
    t = np.gradient(p, axis=0)
    return widths_along_normals(mask, p, t, float(np.nanmax(guess)) + 3.0, step)


def widths_along_normals(mask: np.ndarray, p: np.ndarray, tangent: np.ndarray, half: float,
                         step: float = 0.25) -> np.ndarray:
    """Normal-profile widths at points p (row, col) with tangents (any length); nan where p is off the vessel."""
    if len(p) == 0:
        return np.zeros(0)
    t = tangent / np.maximum(np.hypot(tangent[:, 0], tangent[:, 1]), 1e-9)[:, None]
    nrm = np.stack([-t[:, 1], t[:, 0]], 1)
    offs = np.arange(-half, half + step / 2, step)
    rr = p[:, None, 0] + offs[None, :] * nrm[:, None, 0]
    cc = p[:, None, 1] + offs[None, :] * nrm[:, None, 1]
    values = mask if mask.dtype == np.float32 else mask.astype(np.float32)  # callers looping over segments pass it
    vals = map_coordinates(values, [rr.ravel(), cc.ravel()], order=1, mode="constant")
    inside = vals.reshape(rr.shape) >= 0.5
    c = len(offs) // 2
    right = np.cumprod(inside[:, c:], axis=1).sum(1)
    left = np.cumprod(inside[:, c::-1], axis=1).sum(1)
    w = (left + right - 1).astype(np.float64) * step
    w[~inside[:, c]] = np.nan
    return w


def zone_circle_radii(zone: str, r_disc: float, n: int) -> np.ndarray:
    """Radii (px) of `n` circles at the centres of equal rings across the zone (n = 1: the mid circle)."""
    lo, hi = ZONE_BOUNDS[zone]
    return (lo + (hi - lo) * (np.arange(n) + 0.5) / n) * r_disc


def zone_vessel_widths(ctx: Context, seg: Segments, zone: str, mask: np.ndarray | None = None) -> list[np.ndarray]:
    """Per circle of the zone, the widths (px) of the segments crossing it, each measured inside the zone (median over
    its points of the normal-profile width; of 2*DT - 1 when no mask is given)."""
    n = ctx.config.calibre_circles
    if ctx.disc is None or not len(seg.points):
        return [np.zeros(0) for _ in range(n)]
    lo, hi = ZONE_BOUNDS[zone]
    r = ctx.disc.r
    radii = zone_circle_radii(zone, r, n)
    if mask is not None:
        mask = mask.astype(np.float32)  # once, not per segment (profile_widths interpolates it)
    widths, near, far = [], [], []
    for p, pw in zip(seg.points, seg.point_width):
        d = np.hypot(p[:, 1] - ctx.disc.cx, p[:, 0] - ctx.disc.cy)
        if not (d.min() < radii[-1] and radii[0] <= d.max()):
            continue
        inside = (d >= lo * r) & (d < hi * r)
        # drop the ends near junctions (widths are inflated there)
        trim = int(np.ceil(np.median(pw))) if len(pw) else 0
        core = np.zeros(len(pw), bool)
        core[trim : len(pw) - trim] = True
        sel = inside & core if (inside & core).sum() >= 3 else inside
        if sel.sum() < 3:
            continue
        w = profile_widths(mask, p[sel], pw[sel]) if mask is not None else pw[sel]
        w = w[np.isfinite(w)]
        if len(w) >= 3:
            widths.append(float(np.median(w)))
            near.append(float(d.min()))
            far.append(float(d.max()))
    widths_a, near_a, far_a = map(np.asarray, (widths, near, far))
    return [widths_a[(near_a < rc) & (rc <= far_a)] for rc in radii]


def equivalent_over_circles(per_circle: list[np.ndarray], n_need: int, pair: Callable[[float, float], float],
                            to_unit: float = 1.0) -> float | None:
    """Median over the circles with at least `n_need` vessels of the recursive pairing of their `n_need` widest
    (widths multiplied by `to_unit` first); None when no circle has enough."""
    vals = [recursive_pairing(np.sort(w)[-n_need:] * to_unit, pair) for w in per_circle if len(w) >= n_need]
    return float(np.median(vals)) if vals else None


def compute_calibre(
    ctx: Context, out: Output, segs: dict[str, Segments | None], reasons: dict[str, str], masks: dict[str, np.ndarray]
) -> None:
    mm = ctx.mm
    for zone in ("zone_b", "zone_c"):
        names = {
            m: {k: f"{k}_{m}_um_{zone}" for k in ("crae", "crve")} for m in ("knudtson", "parr_hubbard")
        }
        widths: dict[str, list[np.ndarray] | None] = {}
        for layer in ("artery", "vein"):
            n_col = f"calibre_n_vessels_{layer}_{zone}"
            if segs.get(layer) is None:
                widths[layer] = None
                out.null(n_col, reasons.get(layer, f"no {layer} mask"))
            elif ctx.disc is None:
                widths[layer] = None
                out.null(n_col, ctx.region_reason(zone))
            else:
                widths[layer] = zone_vessel_widths(ctx, segs[layer], zone, masks.get(layer))
                out.set(n_col, int(np.median([len(w) for w in widths[layer]])))
        for kind, layer in (("crae", "artery"), ("crve", "vein")):
            per_circle = widths[layer]
            px_col = f"{kind}_knudtson_px_{zone}"
            cols = [px_col, names["knudtson"][kind], names["parr_hubbard"][kind]]
            if per_circle is None:
                why = reasons.get(layer, f"no {layer} mask") if segs.get(layer) is None else ctx.region_reason(zone)
                out.null(cols, why)
                continue
            n_need = ctx.config.n_widest
            px = equivalent_over_circles(per_circle, n_need, knudtson_pair(layer))
            if px is None:
                most = max(len(w) for w in per_circle)
                out.null(cols, f"only {most} {layer} vessels cross {zone}; {n_need} needed")
                continue
            out.set(px_col, px)
            if mm is None:
                out.null(cols[1:], "no pixel size (scale unknown)")
            else:
                out.set(names["knudtson"][kind], px * mm * 1000.0)
                out.set(names["parr_hubbard"][kind],
                        equivalent_over_circles(per_circle, n_need, parr_hubbard_pair(layer), mm * 1000.0))
        for m in ("knudtson", "parr_hubbard"):
            src = {k: f"{k}_knudtson_px_{zone}" for k in ("crae", "crve")} if m == "knudtson" else names[m]
            a, v = out.values.get(src["crae"]), out.values.get(src["crve"])  # Knudtson is unit-free
            col = f"avr_{m}_{zone}"
            if a is None or v is None or v <= 0:
                out.null(col, f"needs both CRAE and CRVE ({m}, {zone})")
            else:
                out.set(col, a / v)
