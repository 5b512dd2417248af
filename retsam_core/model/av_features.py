"""Artery or vein per centreline segment from more than the network's margin: a logistic model on colour, contrast
and calibre, each relative to the same image's other vessels.

Graders tell arteries from veins by a few cues the per-pixel network only partly uses: arteries are lighter and
redder and stand out less from the background than veins do, and they are narrower. In absolute terms those cues
change with camera and exposure. Relative to the other vessels of the same image they hold. So every colour, contrast
and width feature is z-scored over the image's own centreline pixels. The model is fitted for one weights file, on the
HRF-AV training images (`retsam_core.evaluation.av_classifier`), and travels in that file's card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

SEGMENT_FEATURES = ("margin", "p_artery", "p_vein", "red_z", "green_z", "blue_z", "width_z", "log_length",
                    "contrast_red_z", "contrast_green_z", "contrast_blue_z")
BACKGROUND_BOX_PX = 41  # box for the local background estimate, on a 1024 px canvas (scales with the side)


def _centre_and_spread(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.median(reference, 0), reference.std(0) + 1e-6


def local_contrast(image: np.ndarray, vessel: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """(H, W, 3) float: 1 - intensity / local background, the background being the mean of the FOV's non-vessel
    pixels (vessels dilated by 2 px) in a box around each pixel. Dimensionless, so exposure cancels."""
    img = image.astype(np.float32)
    kernel = np.ones((5, 5), np.uint8)
    background = (fov & ~cv2.dilate(vessel.astype(np.uint8), kernel).astype(bool)).astype(np.float32)
    side = max(3, int(round(BACKGROUND_BOX_PX * image.shape[0] / 1024)) | 1)
    box = (side, side)
    bg = cv2.blur(img * background[..., None], box) / np.maximum(cv2.blur(background, box), 1e-3)[..., None]
    return 1.0 - img / np.maximum(bg, 1.0)


def segment_features(image: np.ndarray, fov: np.ndarray, vessel: np.ndarray, p_artery: np.ndarray,
                     p_vein: np.ndarray, centrelines: list[np.ndarray], width: np.ndarray) -> np.ndarray:
    """(n_segments, len(SEGMENT_FEATURES)) for the integer (row, col) `centrelines` of one image; `width` is the
    vessel width map (`biomarkers.skeleton.width_map`)."""
    if not centrelines:
        return np.zeros((0, len(SEGMENT_FEATURES)))
    contrast = local_contrast(image, vessel, fov)
    every = np.concatenate(centrelines)
    starts = np.cumsum([0] + [len(r) for r in centrelines])
    per_pixel = {"colour": image[every[:, 0], every[:, 1]].astype(np.float32),
                 "contrast": contrast[every[:, 0], every[:, 1]], "width": width[every[:, 0], every[:, 1]][:, None]}
    means = {}
    for k, v in per_pixel.items():  # each segment's mean, z-scored over every centreline pixel of the image
        centre, spread = _centre_and_spread(v)
        sums = np.add.reduceat(v.astype(np.float64), starts[:-1], axis=0)
        means[k] = (sums / np.diff(starts)[:, None] - centre) / spread
    pa, pv = p_artery[every[:, 0], every[:, 1]].astype(np.float64), p_vein[every[:, 0], every[:, 1]].astype(np.float64)
    mean_of = lambda v: np.add.reduceat(v, starts[:-1]) / np.diff(starts)  # noqa: E731
    rows = np.column_stack([mean_of(pa - pv), mean_of(pa), mean_of(pv), means["colour"], means["width"],
                            np.log(np.diff(starts)), means["contrast"]])
    return rows.astype(np.float64)


def segment_labels(centrelines: list[np.ndarray], artery: np.ndarray, vein: np.ndarray) -> np.ndarray:
    """1 artery / 0 vein by the majority of expert-labelled pixels on each centreline; NaN where it has none."""
    out = np.full(len(centrelines), np.nan)
    for i, r in enumerate(centrelines):
        na, nv = artery[r[:, 0], r[:, 1]].sum(), vein[r[:, 0], r[:, 1]].sum()
        if na != nv:
            out[i] = float(na > nv)
    return out


@dataclass
class AVSegmentClassifier:
    """Logistic model on standardised `SEGMENT_FEATURES`; `vote_scale` turns its log-odds into a vote per
    centreline pixel, comparable to the network margin the junction coupling was tuned with."""

    mean: list[float]
    std: list[float]
    coef: list[float]
    intercept: float
    vote_scale: float = 0.3
    features: tuple[str, ...] = SEGMENT_FEATURES

    def log_odds(self, features: np.ndarray) -> np.ndarray:
        x = (features - np.asarray(self.mean)) / np.asarray(self.std)
        return x @ np.asarray(self.coef) + self.intercept

    def votes(self, features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return self.log_odds(features) * lengths * self.vote_scale

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AVSegmentClassifier":
        if tuple(d.get("features", SEGMENT_FEATURES)) != SEGMENT_FEATURES:
            raise ValueError(f"classifier features {d.get('features')} are not this version's {SEGMENT_FEATURES}")
        return cls(**{**d, "features": SEGMENT_FEATURES})


def fit_classifier(features: np.ndarray, labels: np.ndarray, weights: np.ndarray, l2: float = 1.0,
                   vote_scale: float = 0.3, iterations: int = 30) -> AVSegmentClassifier:
    """Weighted (by centreline length: pixels are what DSC counts), L2-regularised logistic regression by Newton's
    method. Segments without a label (NaN) are left out."""
    ok = ~np.isnan(labels)
    x, y, w = features[ok], labels[ok], weights[ok] / weights[ok].mean()
    mean, std = x.mean(0), x.std(0) + 1e-9
    X = np.c_[(x - mean) / std, np.ones(len(x))]
    beta = np.zeros(X.shape[1])
    penalty = np.r_[np.full(X.shape[1] - 1, l2), 0.0]  # the intercept is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-X @ beta))
        grad = X.T @ (w * (p - y)) + penalty * beta
        hess = (X * (w * p * (1 - p))[:, None]).T @ X + np.diag(penalty)
        beta -= np.linalg.solve(hess, grad)
    return AVSegmentClassifier(mean.tolist(), std.tolist(), beta[:-1].tolist(), float(beta[-1]), vote_scale)
