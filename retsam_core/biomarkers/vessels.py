"""Vessel families for every layer (all / artery / vein) and region: density, length, fractal, tortuosity,
widths, topology, calibre, and the per-segment rows. One centreline graph per layer feeds them all."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from retsam_core.biomarkers.calibre import compute_calibre
from retsam_core.biomarkers.catalogue import LAYERS, REGIONS
from retsam_core.biomarkers.context import Context, Output
from retsam_core.biomarkers.fractal import box_counting, multifractal
from retsam_core.biomarkers.layout import drop_specks
from retsam_core.biomarkers.skeleton import VesselGraph, build_graph
from retsam_core.biomarkers.topology import bifurcations
from retsam_core.biomarkers.tortuosity import Segments, measure_segments, weighted_mean


def layer_mask(ctx: Context, layer: str) -> tuple[np.ndarray | None, str]:
    """The mask of a layer (restricted to the retina, specks removed), or None and why."""
    if layer == "all":
        if ctx.known("vessel"):
            m = ctx.masks["vessel"]
        elif ctx.known("artery") and ctx.known("vein"):
            m = ctx.masks["artery"] | ctx.masks["vein"]
        else:
            return None, "no vessel mask (and not both artery and vein)"
    elif ctx.known(layer):
        m = ctx.masks[layer]
    else:
        return None, f"no {layer} mask"
    return drop_specks(m & ctx.fov, ctx.config.min_component_px), ""


def _sigma(ctx: Context) -> float:
    c = ctx.config
    if ctx.mm is None:
        return c.smoothing_px
    return max(c.min_smoothing_px, c.smoothing_mm / ctx.mm)


def _arc(ctx: Context) -> float:
    c = ctx.config
    return c.branch_arc_px if ctx.mm is None else max(4.0, c.branch_arc_mm / ctx.mm)


def compute_vessels(ctx: Context, out: Output, timings: dict[str, float]) -> list[dict[str, Any]]:
    graphs: dict[str, VesselGraph | None] = {}
    segs: dict[str, Segments | None] = {}
    reasons: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    for layer in LAYERS:
        t0 = time.process_time()
        mask, why = layer_mask(ctx, layer)
        if mask is None:
            graphs[layer] = segs[layer] = None
            reasons[layer] = why
            continue
        graphs[layer] = build_graph(mask)
        t1 = time.process_time()
        segs[layer] = measure_segments(graphs[layer], _sigma(ctx))
        t2 = time.process_time()
        timings["skeleton"] = timings.get("skeleton", 0.0) + t1 - t0
        timings["segments"] = timings.get("segments", 0.0) + t2 - t1
        rows.extend(_segment_rows(ctx, layer, segs[layer]))

    for family, fn in (("density", _density), ("fractal", _fractal), ("tortuosity", _tortuosity),
                       ("width", _widths), ("topology", _topology)):
        t0 = time.process_time()
        fn(ctx, out, graphs, segs, reasons)
        timings[family] = time.process_time() - t0
    t0 = time.process_time()
    compute_calibre(ctx, out, segs, reasons, {k: g.mask for k, g in graphs.items() if g is not None})
    timings["calibre"] = time.process_time() - t0
    return rows


def _regions(ctx, out, layer, cols_by_region, reasons, regions=REGIONS):
    """Yield (region, region mask) after nulling columns that cannot be computed."""
    for region in regions:
        cols = cols_by_region(region)
        if layer in reasons:
            out.null(cols, reasons[layer])
            continue
        roi = ctx.region(region)
        if roi is None:
            out.null(cols, ctx.region_reason(region))
            continue
        yield region, roi


def _point_steps(ctx: Context, seg: Segments) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All smoothed centreline steps: midpoint x, y, length, and the segment each belongs to."""
    if not seg.points:
        e = np.zeros(0)
        return e, e, e, e.astype(np.int64)
    mids = [0.5 * (p[1:] + p[:-1]) for p in seg.points if len(p) > 1]
    ids = [np.full(len(p) - 1, i) for i, p in enumerate(seg.points) if len(p) > 1]
    if not mids:
        e = np.zeros(0)
        return e, e, e, e.astype(np.int64)
    m = np.concatenate(mids)
    return m[:, 1], m[:, 0], np.concatenate(seg.step), np.concatenate(ids)


def _density(ctx, out, graphs, segs, reasons):
    mm = ctx.mm
    for layer in LAYERS:
        names = lambda r: [f"{m}_{layer}_{r}" for m in ("vessel_density", "vessel_length_px", "vessel_length_mm",
                                                          "length_density")]
        steps = None
        for region, roi in _regions(ctx, out, layer, names, reasons):
            sfx = f"{layer}_{region}"
            area = int(roi.sum())
            if area == 0:
                out.null(names(region), f"{region} has no retina pixels")
                continue
            out.set(f"vessel_density_{sfx}", np.count_nonzero(graphs[layer].mask & roi) / area)
            if steps is None:
                steps = _point_steps(ctx, segs[layer])
            x, y, ln, _ = steps
            sel = ctx.in_region(region, x, y)
            length = float(ln[sel].sum())
            out.set(f"vessel_length_px_{sfx}", length)
            out.mm(f"vessel_length_mm_{sfx}", length, mm)
            if mm is None:
                out.null(f"length_density_{sfx}", "no pixel size (scale unknown)")
            else:
                out.set(f"length_density_{sfx}", length * mm / (area * mm * mm))


def _fractal(ctx, out, graphs, segs, reasons):
    for layer in LAYERS:
        names = lambda r: [f"fd_box_skeleton_{layer}_{r}", f"fd_box_mask_{layer}_{r}"]
        for region, roi in _regions(ctx, out, layer, names, reasons, ("retina", "zone_c")):
            g = graphs[layer]
            for col, img in ((f"fd_box_skeleton_{layer}_{region}", g.skeleton), (f"fd_box_mask_{layer}_{region}", g.mask)):
                v = box_counting(img, roi)
                out.set(col, v, None if v is not None else "too few vessel pixels or region too small for box counting")
        mcols = [f"fd_multifractal_{q}_{layer}_retina" for q in ("d0", "d1", "d2")]
        if layer in reasons:
            out.null(mcols, reasons[layer])
            continue
        mf = multifractal(graphs[layer].mask, ctx.fov)
        for q, col in zip(("d0", "d1", "d2"), mcols):
            out.set(col, mf[q], None if mf[q] is not None else "too few vessel pixels for multifractal analysis")


def _tortuosity(ctx, out, graphs, segs, reasons):
    mm = ctx.mm
    for layer in LAYERS:
        base = ("tortuosity_distance", "tortuosity_distance_median", "tortuosity_curvature_per_mm2",
                "tortuosity_curvature_per_px2", "tortuosity_density_per_mm")
        names = lambda r: [f"{b}_{layer}_{r}" for b in base]
        for region, _ in _regions(ctx, out, layer, names, reasons, ("retina", "zone_c")):
            s = segs[layer]
            sel = ctx.in_region(region, s.mid[:, 1], s.mid[:, 0]) & (s.length >= ctx.config.min_segment_px)
            sfx = f"{layer}_{region}"
            if not sel.any():
                out.null(names(region), f"no {layer} segment of at least {ctx.config.min_segment_px} px in {region}")
                continue
            L = s.length[sel]
            out.set(f"tortuosity_distance_{sfx}", weighted_mean(s.t_distance[sel], L))
            out.set(f"tortuosity_distance_median_{sfx}", np.nanmedian(s.t_distance[sel]))
            tc = weighted_mean(s.t_curvature[sel], L)
            out.set(f"tortuosity_curvature_per_px2_{sfx}", tc)
            out.mm(f"tortuosity_curvature_per_mm2_{sfx}", tc, mm, power=-2)
            out.mm(f"tortuosity_density_per_mm_{sfx}", weighted_mean(s.t_density[sel], L), mm, power=-1)


def _widths(ctx, out, graphs, segs, reasons):
    mm = ctx.mm
    locals_cache: dict[str, dict[str, np.ndarray]] = {}
    for layer in LAYERS:
        names = lambda r: [f"width_{s}_{u}_{layer}_{r}" for s in ("mean", "median") for u in ("px", "um")]
        for region, _ in _regions(ctx, out, layer, names, reasons):
            s = segs[layer]
            if not s.points:
                out.null(names(region), f"no {layer} centreline")
                continue
            if "pts" not in locals_cache.setdefault(layer, {}):
                locals_cache[layer]["pts"] = np.concatenate(graphs[layer].paths)
                locals_cache[layer]["w"] = np.concatenate(s.point_width)
            pts, w = locals_cache[layer]["pts"], locals_cache[layer]["w"]
            sel = ctx.in_region(region, pts[:, 1], pts[:, 0])
            sfx = f"{layer}_{region}"
            if not sel.any():
                out.null(names(region), f"no {layer} centreline in {region}")
                continue
            for stat, f in (("mean", np.mean), ("median", np.median)):
                v = float(f(w[sel]))
                out.set(f"width_{stat}_px_{sfx}", v)
                out.mm(f"width_{stat}_um_{sfx}", v * 1000.0, mm)


def _topology(ctx, out, graphs, segs, reasons):
    for layer in LAYERS:
        base = ("n_segments", "n_bifurcations", "n_crossings", "n_endpoints", "branching_angle_mean_deg",
                "branching_angle_median_deg", "branching_coefficient_median", "junction_exponent_median",
                "junction_exponent_deviation")
        names = lambda r: [f"{b}_{layer}_{r}" for b in base]
        bif = None
        for region, _ in _regions(ctx, out, layer, names, reasons, ("retina", "zone_c")):
            g, s = graphs[layer], segs[layer]
            sfx = f"{layer}_{region}"
            out.set(f"n_segments_{sfx}", int(ctx.in_region(region, s.mid[:, 1], s.mid[:, 0]).sum()) if len(s.mid) else 0)
            nin = ctx.in_region(region, g.node_rc[:, 1], g.node_rc[:, 0]) if len(g.node_rc) else np.zeros(0, bool)
            deg = g.node_degree
            out.set(f"n_bifurcations_{sfx}", int(np.sum(nin & (deg == 3))))
            out.set(f"n_crossings_{sfx}", int(np.sum(nin & (deg >= 4))))
            out.set(f"n_endpoints_{sfx}", int(np.sum(nin & (deg == 1))))
            if bif is None:
                bif = bifurcations(g, s, _arc(ctx))
            bsel = ctx.in_region(region, bif.rc[:, 1], bif.rc[:, 0]) if len(bif.rc) else np.zeros(0, bool)
            bcols = names(region)[4:]
            if not bsel.any():
                out.null(bcols, f"no measurable {layer} bifurcation in {region}")
                continue
            out.set(f"branching_angle_mean_deg_{sfx}", np.mean(bif.angle_deg[bsel]))
            out.set(f"branching_angle_median_deg_{sfx}", np.median(bif.angle_deg[bsel]))
            out.set(f"branching_coefficient_median_{sfx}", np.median(bif.coefficient[bsel]))
            x = bif.exponent[bsel]
            x = x[np.isfinite(x)]
            if len(x):
                out.set(f"junction_exponent_median_{sfx}", np.median(x))
                out.set(f"junction_exponent_deviation_{sfx}", np.median(x) - 3.0)
            else:
                out.null(bcols[-2:], "no bifurcation with both daughters thinner than the parent")


def _segment_rows(ctx: Context, layer: str, s: Segments) -> list[dict[str, Any]]:
    mm = ctx.mm
    n = len(s.length)
    if n == 0:
        return []
    if ctx.disc is not None:
        d = np.hypot(s.mid[:, 1] - ctx.disc.cx, s.mid[:, 0] - ctx.disc.cy)
        dr = d / ctx.disc.r
        zone = np.select([dr < 1, dr < 2, dr < 3, dr < 5], ["disc", "A", "B", "C"], "outer")
    nan = np.full(n, np.nan)
    cols: dict[str, Any] = {
        "length_px": s.length,
        "length_mm": s.length * mm if mm else nan,
        "chord_px": s.chord,
        "tortuosity_distance": s.t_distance,
        "tortuosity_curvature_per_px2": s.t_curvature,
        "tortuosity_curvature_per_mm2": s.t_curvature / mm**2 if mm else nan,
        "tortuosity_density_per_mm": s.t_density / mm if mm else nan,
        "width_median_px": s.width,
        "width_median_um": s.width * mm * 1000.0 if mm else nan,
        "mid_x_px": s.mid[:, 1],
        "mid_y_px": s.mid[:, 0],
        "distance_from_disc_px": d if ctx.disc is not None else nan,
        "distance_from_disc_r": dr if ctx.disc is not None else nan,
    }
    lists = {k: [x if x == x and abs(x) != float("inf") else None for x in np.asarray(v, float).tolist()]
             for k, v in cols.items()}
    lists["zone"] = zone.tolist() if ctx.disc is not None else [None] * n
    names = list(lists)
    rows = [dict(layer=layer, segment_id=i, **dict(zip(names, vals))) for i, vals in enumerate(zip(*lists.values()))]
    return rows
