"""Synthetic masks with known geometry, for tests and the benchmark (no data needed).

A fundus-like layout: circular field, disc, cup, fovea, an artery and a vein tree growing from the disc in both
arcades, and round lesions. Deterministic for a given seed.
"""

from __future__ import annotations

import cv2
import numpy as np


def draw_polyline(mask: np.ndarray, pts: np.ndarray, width: int) -> None:
    """Thick polyline (x, y points) burned into a uint8/bool mask in place."""
    tmp = mask.view(np.uint8) if mask.dtype == bool else mask
    cv2.polylines(tmp, [np.round(pts).astype(np.int32).reshape(-1, 1, 2)], False, 1, thickness=int(width),
                  lineType=cv2.LINE_8)


def _branch(mask, rng, x, y, angle, width, length, depth, wiggle):
    n = max(8, int(length / 4))
    t = np.linspace(0, 1, n)
    amp = wiggle * length * 0.04
    phase = rng.uniform(0, 2 * np.pi)
    bend = rng.normal(0, 0.25)
    ang = angle + bend * t
    ds = length / (n - 1)
    xs = x + np.concatenate([[0], np.cumsum(np.cos(ang[1:]) * ds)])
    ys = y + np.concatenate([[0], np.cumsum(np.sin(ang[1:]) * ds)])
    off = amp * np.sin(2 * np.pi * 2.0 * t + phase) * np.sin(np.pi * t)
    xs = xs - np.sin(ang) * off
    ys = ys + np.cos(ang) * off
    draw_polyline(mask, np.stack([xs, ys], 1), width)
    if depth <= 0 or width <= 1:
        return
    ex, ey, ea = xs[-1], ys[-1], ang[-1]
    split = np.radians(rng.uniform(30, 45))
    w1 = max(1, int(round(width * 0.8)))
    w2 = max(1, int(round(width * 0.7)))
    _branch(mask, rng, ex, ey, ea + split, w1, length * 0.75, depth - 1, wiggle)
    _branch(mask, rng, ex, ey, ea - split, w2, length * 0.7, depth - 1, wiggle)


def fundus_masks(size: int = 1024, seed: int = 0, lesions: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(masks, fov) for a right-eye, macula-centred synthetic fundus of `size` px."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    c = size / 2
    fov = np.hypot(xx - c, yy - c) < 0.47 * size
    dx, dy, dr = c + 0.28 * size, c - 0.02 * size, 0.055 * size
    disc = np.hypot(xx - dx, yy - dy) < dr
    cup = np.hypot((xx - dx) / 0.55, (yy - dy) / 0.6) < dr
    fx, fy = c - 0.02 * size, c + 0.03 * size
    fovea = np.hypot(xx - fx, yy - fy) < 0.02 * size
    artery = np.zeros((size, size), np.uint8)
    vein = np.zeros((size, size), np.uint8)
    s = size / 1024
    for k, base in enumerate((-2.3, 2.3, -1.0, 1.0, np.pi - 0.2, np.pi + 0.2)):
        for m, wd in ((artery, 7), (vein, 9)):
            a = base + (0.12 if m is vein else -0.12)
            _branch(m, rng, dx, dy, a, max(2, int(round(wd * s * (0.8 if k >= 2 else 1.0)))), 0.16 * size, 4, 1.0)
    artery = artery.astype(bool) & fov
    vein = vein.astype(bool) & fov
    masks = {"vessel": artery | vein, "artery": artery, "vein": vein, "optic_disc": disc, "optic_cup": cup,
             "fovea": fovea}
    if lesions:
        for name, n, rmax in (("microaneurysm", 30, 2), ("hemorrhage", 12, 8), ("hard_exudate", 25, 5),
                              ("soft_exudate", 4, 12), ("drusen", 10, 4)):
            m = np.zeros((size, size), np.uint8)
            for _ in range(n):
                r = rng.uniform(0.1, 0.3) * size
                t = rng.uniform(0, 2 * np.pi)
                cv2.circle(m, (int(fx + r * np.cos(t)), int(fy + r * np.sin(t))), int(rng.integers(1, rmax + 1) * s) + 1,
                           1, -1)
            masks[name] = m.astype(bool) & fov
    return masks, fov
