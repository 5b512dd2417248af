"""Weights-free segmenter: the default until the learned model beats it, and the baseline it is measured against.

Vessels: multi-orientation morphological top-hats of the inverted green channel (Zana & Klein style), then
hysteresis thresholding inside the field of view. Optic disc: brightest large blob weighted by vessel
convergence. Fovea: darkest smooth region at the expected disc-fovea distance (about 2.5 disc diameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from skimage.filters import apply_hysteresis_threshold

from retsam_core.biomarkers.layout import drop_specks
from retsam_core.segmenter import SegmenterInfo

DISC_DIAMETER_FRACTION_OF_FOV = 0.125  # ~1.8 mm disc over a ~14 mm (45 degree) field
DISC_FOVEA_DISTANCE_DD = 2.5  # fovea lies ~2.5 disc diameters temporal to the disc centre


@dataclass(frozen=True)
class ClassicalConfig:
    line_lengths: tuple[float, ...] = (0.02, 0.035)  # top-hat line lengths, fraction of canvas side
    orientations: int = 12
    high_percentile: float = 94.0  # strong vessel response within the field of view
    low_percentile: float = 86.0  # weak response kept when connected to strong
    min_component_px_fraction: float = 3e-5  # drop specks smaller than this fraction of the canvas


class ClassicalSegmenter:
    """Vessel, optic disc and fovea from image processing alone."""

    def __init__(self, config: ClassicalConfig = ClassicalConfig(), resolution: int = 1024):
        self.config = config
        self.info = SegmenterInfo(
            name="classical",
            version="1",
            weights_hash="",
            resolution=resolution,
            provides=("vessel", "optic_disc", "fovea"),
        )

    def segment(self, images: np.ndarray, fovs: np.ndarray) -> list[dict[str, np.ndarray]]:
        return [self.segment_one(img, fov) for img, fov in zip(images, fovs)]

    def segment_one(self, image: np.ndarray, fov: np.ndarray) -> dict[str, np.ndarray]:
        fov = fov.astype(bool)
        response = vessel_response(image, fov, self.config)
        vessel = threshold_vessels(response, fov, self.config)
        disc_centre, disc_radius = locate_disc(image, fov, vessel)
        disc = disc_mask(image, fov, disc_centre, disc_radius)
        return {"vessel": vessel, "optic_disc": disc, "fovea": fovea_mask(image, fov, disc_centre, disc_radius)}


def fovea_mask(image: np.ndarray, fov: np.ndarray, disc_centre: tuple[int, int], disc_radius: float) -> np.ndarray:
    """A small disc around the fovea found from this disc (empty when the search band leaves the FOV)."""
    fovea = np.zeros(fov.shape, bool)
    centre = locate_fovea(image, fov, disc_centre, disc_radius)
    if centre is not None:
        cv2.circle(fovea.view(np.uint8), centre, max(2, int(disc_radius * 0.2)), 1, thickness=-1)
    return fovea


def classical_targets(image: np.ndarray, fov: np.ndarray, targets: tuple[str, ...],
                      disc: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """`targets` from the classical segmenter. The fovea alone, given another segmenter's non-empty `disc`, is
    searched from that disc's centre (the disc radius still the FOV-relative estimate the search band was set
    with): the classical vessel map and disc locator (most of the classical cost) are then not run, and the fovea
    agrees with the disc the biomarkers use (`benchmarks/bench_fovea_anchor.py`)."""
    fov = fov.astype(bool)
    if set(targets) == {"fovea"} and disc is not None and disc.any():
        ys, xs = np.nonzero(disc)
        centre = (int(round(float(xs.mean()))), int(round(float(ys.mean()))))
        return {"fovea": fovea_mask(image, fov, centre, disc_radius_estimate(fov))}
    masks = ClassicalSegmenter().segment_one(image, fov)
    return {t: masks[t] for t in targets if t in masks}


def disc_radius_estimate(fov: np.ndarray) -> float:
    """The disc radius a typical eye has in this field of view (canvas px)."""
    return DISC_DIAMETER_FRACTION_OF_FOV * _fov_diameter(fov) / 2.0


def _inverted_green(image: np.ndarray, fov: np.ndarray) -> np.ndarray:
    green = image[..., 1]
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    g = clahe.apply(green)
    inv = 255 - g
    # Fill outside the field of view with the mean so the border creates no artificial edge.
    mean = int(inv[fov].mean()) if fov.any() else 0
    inv = inv.copy()
    inv[~fov] = mean
    return inv


def _line_kernel(length: int, angle_deg: float) -> np.ndarray:
    k = np.zeros((length, length), np.uint8)
    c = (length - 1) / 2.0
    dx, dy = np.cos(np.deg2rad(angle_deg)) * c, np.sin(np.deg2rad(angle_deg)) * c
    cv2.line(k, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1, 1)
    return k


def vessel_response(image: np.ndarray, fov: np.ndarray, cfg: ClassicalConfig = ClassicalConfig()) -> np.ndarray:
    """Vesselness in [0, 1]: sup over orientations of openings minus a small-disc opening (a top-hat on lines).

    Vessels are dark elongated structures: in the inverted green channel they are bright lines, so an opening
    with a line element longer than the vessel width but aligned with it keeps them, while round bright blobs
    (lesions, noise) vanish in all orientations.
    """
    inv = _inverted_green(image, fov).astype(np.float32)
    side = image.shape[0]
    inv = cv2.GaussianBlur(inv, (0, 0), max(0.6, side / 1700.0))
    total = np.zeros_like(inv)
    for frac in cfg.line_lengths:
        length = max(5, int(round(frac * side)) | 1)
        sup = np.zeros_like(inv)
        for i in range(cfg.orientations):
            opened = cv2.morphologyEx(
                inv, cv2.MORPH_OPEN, _line_kernel(length, 180.0 * i / cfg.orientations), borderType=cv2.BORDER_REPLICATE
            )
            np.maximum(sup, opened, out=sup)
        disc_element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (length, length))
        background = cv2.morphologyEx(inv, cv2.MORPH_OPEN, disc_element, borderType=cv2.BORDER_REPLICATE)
        total += np.clip(sup - background, 0, None)
    total[~fov] = 0
    peak = np.percentile(total[fov], 99.5) if fov.any() else 1.0
    return np.clip(total / max(peak, 1e-6), 0, 1)


def threshold_vessels(response: np.ndarray, fov: np.ndarray, cfg: ClassicalConfig = ClassicalConfig()) -> np.ndarray:
    inner = cv2.erode(fov.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))).astype(bool)
    vals = response[inner]
    if vals.size == 0:
        return np.zeros_like(fov)
    high = np.percentile(vals, cfg.high_percentile)
    low = np.percentile(vals, cfg.low_percentile)
    mask = apply_hysteresis_threshold(np.where(inner, response, 0), low, high)
    min_px = max(4, int(cfg.min_component_px_fraction * response.size))
    return drop_specks(mask, min_px)


def _fov_diameter(fov: np.ndarray) -> float:
    return float(2.0 * np.sqrt(fov.sum() / np.pi))


def locate_disc(image: np.ndarray, fov: np.ndarray, vessel: np.ndarray) -> tuple[tuple[int, int], float]:
    """Disc centre (x, y) and radius in canvas px: bright region where many large vessels converge."""
    radius = disc_radius_estimate(fov)
    inner = cv2.erode(fov.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))).astype(bool)
    lum = (0.5 * image[..., 0].astype(np.float32) + 0.5 * image[..., 1].astype(np.float32))
    k = max(3.0, radius / 1.5)
    bright = cv2.GaussianBlur(lum, (0, 0), k)
    # Only wide vessels converge on the disc; thin false responses (e.g. between exudates) are removed first.
    wide = cv2.erode(vessel.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    vden = cv2.GaussianBlur(wide.astype(np.float32), (0, 0), k * 1.5)
    fov_w = cv2.GaussianBlur(fov.astype(np.float32), (0, 0), k)
    bright = bright / np.maximum(fov_w, 1e-3)
    vden = vden / np.maximum(fov_w, 1e-3)

    def norm(a: np.ndarray) -> np.ndarray:
        v = a[inner]
        lo, hi = np.percentile(v, 5), np.percentile(v, 99.9)
        return np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)

    score = norm(bright) + 0.6 * norm(vden)
    score[~inner] = -1
    y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    return (int(x), int(y)), float(radius)


def disc_mask(
    image: np.ndarray, fov: np.ndarray, centre: tuple[int, int], radius: float, rays: int = 48
) -> np.ndarray:
    """Disc outline from radial edges: along each ray the disc rim is the steepest brightness drop.

    Vessel pixels are bridged by heavy smoothing; per-ray radii are median-filtered around the circle so one
    vessel or a peripapillary crescent cannot pull the outline away.
    """
    h, w = fov.shape
    lum = 0.6 * image[..., 0].astype(np.float32) + 0.4 * image[..., 1].astype(np.float32)
    lum = cv2.GaussianBlur(lum, (0, 0), max(1.5, radius / 12.0))
    radii = np.linspace(0.45 * radius, 1.8 * radius, 64)
    angles = np.linspace(0, 2 * np.pi, rays, endpoint=False)
    xs = centre[0] + np.cos(angles)[:, None] * radii[None, :]
    ys = centre[1] + np.sin(angles)[:, None] * radii[None, :]
    prof = cv2.remap(lum, xs.astype(np.float32), ys.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    drop = prof[:, :-2] - prof[:, 2:]  # positive where brightness falls going outwards
    edge = radii[1:-1][np.argmax(drop, axis=1)]
    padded = np.concatenate([edge[-3:], edge, edge[:3]])
    smooth = np.array([np.median(padded[i : i + 7]) for i in range(rays)])
    poly = np.column_stack([centre[0] + np.cos(angles) * smooth, centre[1] + np.sin(angles) * smooth])
    out = np.zeros((h, w), np.uint8)
    cv2.fillPoly(out, [np.round(poly).astype(np.int32)], 1)
    return out.astype(bool) & fov


def smooth_field(values: np.ndarray, sigma: float) -> np.ndarray:
    """`cv2.GaussianBlur(values, (0, 0), sigma)` for a large `sigma`, computed on a grid up to sigma/8 times coarser
    and brought back by linear interpolation: the blurred field varies on the scale of sigma, so 8 samples per sigma
    keep it within a fraction of a grey level (0.13 at most inside the FOV of scikit-image's fundus, sigma 57), while
    a full-resolution kernel 8 sigma wide costs ~0.15 s per 1024 px canvas on one CPU thread (~25x more). The image
    is first mirrored outwards by 4 sigma as GaussianBlur mirrors it, so the coarse grid's edge does not shift the
    mirror."""
    factor = int(sigma // 8)
    if factor < 2:
        return cv2.GaussianBlur(values, (0, 0), sigma)
    h, w = values.shape[:2]
    pad = int(np.ceil(4 * sigma / factor)) * factor
    big = cv2.copyMakeBorder(values, pad, pad + (-h) % factor, pad, pad + (-w) % factor, cv2.BORDER_REFLECT_101)
    small = cv2.resize(big, (big.shape[1] // factor, big.shape[0] // factor), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor)
    return cv2.resize(small, (big.shape[1], big.shape[0]), interpolation=cv2.INTER_LINEAR)[pad:pad + h, pad:pad + w]


def locate_fovea(image: np.ndarray, fov: np.ndarray, disc_centre: tuple[int, int], disc_radius: float) -> tuple[int, int] | None:
    """Darkest smooth spot in a band ~2-3 disc diameters from the disc, roughly level with it."""
    h, w = fov.shape
    dd = 2.0 * disc_radius
    inner = cv2.erode(fov.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (31, 31))).astype(bool)
    lum = smooth_field(image[..., 1].astype(np.float32), max(2.0, dd / 3))
    yy, xx = np.ogrid[0:h, 0:w]  # broadcast: the same distances as full grids, without building them
    dx, dy = xx - disc_centre[0], yy - disc_centre[1]
    dist = np.hypot(dx, dy)
    band = (dist >= 1.8 * dd) & (dist <= 3.2 * dd) & (np.abs(dy) <= 1.0 * dd) & inner
    if band.sum() < 10:
        return None
    candidate = np.where(band, lum, np.inf)
    y, x = np.unravel_index(int(np.argmin(candidate)), candidate.shape)
    return int(x), int(y)
