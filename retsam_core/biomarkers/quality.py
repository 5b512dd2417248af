"""Cheap, explainable image-quality signals and a rule-based grade (good / usable / reject).

Not a trained classifier: each signal is mapped to [0, 1] between a 'bad' and a 'good' anchor and the grade is a
documented rule, so a reader can see why an image was flagged. Computed on a 512 px working grid so the numbers do
not depend on the input resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from retsam_core.biomarkers.context import Context, Output

WORK_SIDE = 512


@dataclass(frozen=True)
class QualityConfig:
    # (bad, good) anchors of each signal; score = clip((v - bad) / (good - bad), 0, 1)
    fov_fraction: tuple[float, float] = (0.15, 0.45)
    brightness: tuple[float, float] = (0.04, 0.15)
    illumination_uniformity: tuple[float, float] = (0.3, 0.75)
    contrast: tuple[float, float] = (0.01, 0.04)
    sharpness: tuple[float, float] = (0.5, 5.0)
    vessel_visibility: tuple[float, float] = (0.02, 0.10)
    reject_below: float = 0.15  # any single sub-score below this rejects the image
    good_above: float = 0.6  # mean score at or above this (and no sub-score below usable_min) is good
    usable_min: float = 0.4


def _score(v: float | None, anchors: tuple[float, float]) -> float | None:
    if v is None:
        return None
    bad, good = anchors
    return float(np.clip((v - bad) / (good - bad), 0.0, 1.0))


def measure(image: np.ndarray, fov: np.ndarray, vessel: np.ndarray | None) -> dict[str, float | None]:
    h, w = fov.shape
    s = min(1.0, WORK_SIDE / max(h, w))
    size = (max(1, round(w * s)), max(1, round(h * s)))
    img = image if image.shape[:2] == (h, w) else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    g = cv2.resize(img[..., 1], size, interpolation=cv2.INTER_AREA).astype(np.float32)
    m = cv2.resize(fov.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    vals: dict[str, float | None] = {"fov_fraction": float(fov.mean())}
    if m.sum() < 100:
        vals.update(brightness=None, illumination_uniformity=None, contrast=None, sharpness=None, vessel_visibility=None)
        return vals
    mean = float(g[m].mean())
    vals["brightness"] = mean / 255.0
    sig = 0.05 * max(size)
    mf = m.astype(np.float32)
    bg = cv2.GaussianBlur(g * mf, (0, 0), sig) / np.maximum(cv2.GaussianBlur(mf, (0, 0), sig), 1e-3)
    er = cv2.erode(m.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    er = er if er.sum() > 100 else m
    b = bg[er]
    vals["illumination_uniformity"] = float(max(0.0, 1.0 - b.std() / max(b.mean(), 1e-3)))
    vals["contrast"] = float(np.sqrt(np.mean((g[er] - bg[er]) ** 2)) / max(b.mean(), 1e-3))
    lap = cv2.Laplacian(g * (100.0 / max(mean, 1e-3)), cv2.CV_32F)
    vals["sharpness"] = float(lap[er].var())
    if vessel is None or not vessel.any():
        vals["vessel_visibility"] = None
    else:
        # on the working grid: vessels (area fraction >= 0.5) against a 3 px ring around them
        v = (cv2.resize((vessel & fov).astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.5) & m
        ring = (cv2.dilate(v.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0) & ~v & m
        vals["vessel_visibility"] = (float(1.0 - g[v].mean() / max(g[ring].mean(), 1e-3))
                                     if ring.any() and v.any() else None)
    return vals


def compute_quality(ctx: Context, out: Output, cfg: QualityConfig = QualityConfig()) -> None:
    cols = ["quality_fov_fraction", "quality_brightness", "quality_illumination_uniformity", "quality_contrast",
            "quality_sharpness", "quality_vessel_visibility", "quality_score", "quality_grade", "gradable"]
    if ctx.image is None:
        out.null(cols, "no image given (quality needs the RGB image)")
        return
    vessel = ctx.masks.get("vessel")
    if vessel is None and "artery" in ctx.masks and "vein" in ctx.masks:
        vessel = ctx.masks["artery"] | ctx.masks["vein"]
    vals = measure(ctx.image, ctx.fov, vessel)
    for k, v in vals.items():
        out.set(f"quality_{k}", v, "no vessel mask" if k == "vessel_visibility" else "field of view too small")
    graded = score_and_grade(vals, cfg)
    if graded is None:
        out.null(cols[-3:], "no quality signal could be measured")
        return
    mean, grade = graded
    out.set("quality_score", mean)
    out.set("quality_grade", grade)
    out.set("gradable", grade != "reject")


def score_and_grade(vals: dict[str, float | None], cfg: QualityConfig = QualityConfig()) -> tuple[float, str] | None:
    """(quality_score, quality_grade) from the measured signals; None when none could be measured."""
    scores = {k: sc for k, v in vals.items() if (sc := _score(v, getattr(cfg, k))) is not None}
    if not scores:
        return None
    mean = float(np.mean(list(scores.values())))
    worst = min(scores.values())
    if worst < cfg.reject_below:
        return mean, "reject"
    if mean >= cfg.good_above and worst >= cfg.usable_min:
        return mean, "good"
    return mean, "usable"
