"""Topology (segments, bifurcations, crossings, endpoints) and bifurcation geometry (angle, coefficient, exponent).

At a degree-3 node the daughters are the two branches with the smallest angle between them and the parent is the
third (widths at pixel scale tie too often to pick the parent by width); each branch's direction is the unit
vector along it from one parent width out to a fixed arc distance further; branch calibres for the coefficient and
the junction exponent are normal-profile widths over that same stretch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from retsam_core.biomarkers.calibre import widths_along_normals
from retsam_core.biomarkers.skeleton import VesselGraph
from retsam_core.biomarkers.tortuosity import Segments


@dataclass
class Bifurcations:
    rc: np.ndarray  # (n, 2) node positions
    angle_deg: np.ndarray  # angle between daughters
    coefficient: np.ndarray  # (d1^2 + d2^2) / d0^2
    exponent: np.ndarray  # x with d0^x = d1^x + d2^x (nan when undefined)


def junction_exponent(d0: np.ndarray, d1: np.ndarray, d2: np.ndarray, iters: int = 60) -> np.ndarray:
    """Solve (d1/d0)^x + (d2/d0)^x = 1 by bisection on [0, 20]; nan unless both daughters are thinner."""
    a, b = d1 / d0, d2 / d0
    ok = (a > 0) & (b > 0) & (a < 1) & (b < 1)
    lo, hi = np.zeros_like(a), np.full_like(a, 20.0)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        f = np.where(ok, a**mid + b**mid - 1.0, 0.0)
        lo = np.where(f > 0, mid, lo)
        hi = np.where(f > 0, hi, mid)
    x = 0.5 * (lo + hi)
    x[~ok | (x >= 19.999)] = np.nan
    return x


def _directions(
    seg: Segments, sid: np.ndarray, at_start: np.ndarray, offset: np.ndarray, arc: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors along branches leaving a node, for many (segment, end) pairs at once: from `offset` (one parent
    width, to skip the junction blob where thick skeletons bend) to `offset + arc`; from the node itself when the
    branch is too short. Rows of nan where undefined. Also returns the two point indices used."""
    P, G = seg.all_points, seg.all_arc
    s0, s1 = seg.starts[sid], seg.lasts[sid]
    L = G[s1] - G[s0]
    short = (L - offset) < 0.5 * arc
    off = np.where(short, 0.0, offset)
    # from the start: first point at arc >= off; from the end: last point with arc-from-end >= off
    f0 = np.searchsorted(G, G[s0] + off, side="left")
    f1 = np.searchsorted(G, G[np.clip(f0, s0, s1)] + arc, side="left")
    b0 = np.searchsorted(G, G[s1] - off, side="right") - 1
    b1 = np.searchsorted(G, G[np.clip(b0, s0, s1)] - arc, side="right") - 1
    j0 = np.clip(np.where(at_start, f0, b0), s0, s1)
    j1 = np.clip(np.where(at_start, f1, b1), s0, s1)
    v = P[j1] - P[j0]
    n = np.hypot(v[:, 0], v[:, 1])
    out = np.full(v.shape, np.nan)
    ok = n > 1e-9
    out[ok] = v[ok] / n[ok, None]
    return out, j0, j1


def bifurcations(graph: VesselGraph, seg: Segments, arc: float) -> Bifurcations:
    """Geometry at every degree-3 node (loops and nodes with an undefined branch direction are skipped)."""
    e = np.zeros(0)
    empty = Bifurcations(np.zeros((0, 2)), e, e, e)
    if len(graph.ends) == 0 or seg.all_points is None:
        return empty
    deg3 = graph.node_degree == 3
    ends = graph.ends
    # one row per (segment end at a degree-3 node)
    sid = np.concatenate([np.arange(len(ends)), np.arange(len(ends))])
    node = np.concatenate([ends[:, 0], ends[:, 1]])
    at_start = np.concatenate([np.ones(len(ends), bool), np.zeros(len(ends), bool)])
    keep = deg3[node]
    sid, node, at_start = sid[keep], node[keep], at_start[keep]
    order = np.argsort(node, kind="stable")
    sid, node, at_start = sid[order], node[order], at_start[order]
    uniq, first, counts = np.unique(node, return_index=True, return_counts=True)
    good = counts == 3
    idx = first[good][:, None] + np.arange(3)[None, :]  # (m, 3) rows of each node's branches
    if len(idx) == 0:
        return empty
    s3 = sid[idx]
    loops = (s3[:, 0] == s3[:, 1]) | (s3[:, 0] == s3[:, 2]) | (s3[:, 1] == s3[:, 2])
    w = seg.width[s3]
    ok = ~loops & np.all(np.isfinite(w) & (w > 0), axis=1)
    idx, s3, w, nodes = idx[ok], s3[ok], w[ok], uniq[good][ok]
    if len(idx) == 0:
        return empty
    off = np.repeat(w.max(axis=1), 3)
    d, j0, j1 = _directions(seg, s3.ravel(), at_start[idx].ravel(), off, arc)
    d = d.reshape(-1, 3, 2)
    # branch calibres from normal profiles at 5 points over the same stretch (2*DT - 1 medians tie at pixel scale)
    k = np.linspace(0.0, 1.0, 5)
    pidx = np.rint(j0[:, None] + k[None, :] * (j1 - j0)[:, None]).astype(np.int64).ravel()
    tang = np.repeat(seg.all_points[j1] - seg.all_points[j0], 5, axis=0)
    pw = widths_along_normals(graph.mask, seg.all_points[pidx], tang, float(np.nanmax(w)) + 3.0)
    pw = pw.reshape(-1, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan rows: fall back to the DT width below
        prof = np.nanmedian(pw, axis=1) if pw.size else np.zeros(0)
    w = np.where(np.isfinite(prof), prof, w.ravel()).reshape(-1, 3)
    defined = np.all(np.isfinite(d[..., 0]), axis=1)
    d, w, nodes = d[defined], w[defined], nodes[defined]
    # daughters = the pair with the smallest angle between them (robust where pixel widths tie); parent = the third
    pairs = np.array([(0, 1, 2), (0, 2, 1), (1, 2, 0)])
    cos = np.stack([np.sum(d[:, a] * d[:, b], axis=1) for a, b, _ in pairs], 1).clip(-1.0, 1.0)
    best = pairs[np.argmax(cos, axis=1)]
    rows = np.arange(len(d))
    ang = np.degrees(np.arccos(cos.max(axis=1)))
    wa, wb, d0 = w[rows, best[:, 0]], w[rows, best[:, 1]], w[rows, best[:, 2]]
    d1, d2 = np.maximum(wa, wb), np.minimum(wa, wb)
    coef = (d1 * d1 + d2 * d2) / (d0 * d0)
    return Bifurcations(graph.node_rc[nodes], ang, coef, junction_exponent(d0, d1, d2))
