"""Fractal dimensions: box counting (skeleton or mask) and multifractal Renyi D0, D1, D2.

Boxes are powers of two from 2 px to a quarter of the region's bounding box; counts come from repeated 2x2
pooling of the padded region, so every box size costs one reshape.
"""

from __future__ import annotations

import numpy as np


def _pyramid(img: np.ndarray, roi: np.ndarray | None) -> tuple[list[np.ndarray], list[int]]:
    """Mass per box for box sizes 1, 2, 4, ... up to a quarter of the ROI's bounding box."""
    a = img.astype(bool) if roi is None else img.astype(bool) & roi
    box_src = roi if roi is not None else np.ones_like(a)
    rows, cols = np.flatnonzero(box_src.any(axis=1)), np.flatnonzero(box_src.any(axis=0))
    if len(rows) == 0:
        return [], []
    a = a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = max(a.shape)
    if side < 16:
        return [], []
    e_max = 2 ** int(np.floor(np.log2(side / 4)))  # largest box: a quarter of the ROI
    ph, pw = -(-a.shape[0] // e_max) * e_max, -(-a.shape[1] // e_max) * e_max  # pad to multiples of it only
    pad = np.zeros((ph, pw), np.float32)
    pad[: a.shape[0], : a.shape[1]] = a
    levels, sizes = [pad], [1]
    cur = pad
    while sizes[-1] < e_max:
        # exact 2x2 sums (integers well below 2^24 in float32); strided adds are ~10x faster than reshape-sum
        cur = cur[0::2, 0::2] + cur[1::2, 0::2] + cur[0::2, 1::2] + cur[1::2, 1::2]
        levels.append(cur)
        sizes.append(sizes[-1] * 2)
    return levels, sizes


def _slope(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3 or not np.all(np.isfinite(y)):
        return None
    return float(np.polyfit(x, y, 1)[0])


def box_counting(img: np.ndarray, roi: np.ndarray | None = None) -> float | None:
    """Slope of log N(e) vs log(1/e), e = 2 .. ROI/4 px. None with fewer than three box sizes or no pixels."""
    levels, sizes = _pyramid(img, roi)
    if len(sizes) < 4 or levels[0].sum() == 0:
        return None
    e = np.array(sizes[1:], float)
    n = np.array([np.count_nonzero(l) for l in levels[1:]], float)
    return _slope(np.log(1.0 / e), np.log(n))


def multifractal(img: np.ndarray, roi: np.ndarray | None = None) -> dict[str, float | None]:
    """Renyi dimensions from box probabilities p_i = mass_i / total (D0 capacity, D1 information, D2 correlation)."""
    levels, sizes = _pyramid(img, roi)
    if len(sizes) < 4 or levels[0].sum() == 0:
        return {"d0": None, "d1": None, "d2": None}
    total = float(levels[0].sum(dtype=np.float64))
    le = np.log(np.array(sizes[1:], float))
    s0, s1, s2 = [], [], []
    for lvl in levels[1:]:
        p = lvl[lvl > 0].astype(np.float64) / total
        s0.append(np.log(len(p)))
        s1.append(float(np.sum(p * np.log(p))))
        s2.append(np.log(float(np.sum(p * p))))
    # N ~ e^-D0 ; sum p log p ~ D1 log e ; log sum p^2 ~ D2 log e
    d0 = _slope(-le, np.array(s0))
    return {"d0": d0, "d1": _slope(le, np.array(s1)), "d2": _slope(le, np.array(s2))}
