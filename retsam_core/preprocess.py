"""Field-of-view detection, crop and resize to the model's resolution, with the geometry to map masks back.

Inference and training share this code bit for bit, so that the model sees the same pixels in both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from retsam_core.errors import UngradableImage


@dataclass(frozen=True)
class Geometry:
    """Where the model's square canvas sits in the original image (original pixel units).

    The canvas covers the square [box_x0, box_x0 + box_side) x [box_y0, box_y0 + box_side); it may extend past
    the image edges (padding), e.g. for a macula-centred photo whose field of view is cut at top and bottom.
    """

    original_height: int
    original_width: int
    box_x0: float
    box_y0: float
    box_side: float
    size: int  # model canvas side in pixels

    @property
    def original_px_per_canvas_px(self) -> float:
        return self.box_side / self.size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


@dataclass
class Preprocessed:
    image: np.ndarray  # (size, size, 3) uint8 RGB, black outside the field of view
    fov: np.ndarray  # (size, size) bool: visible retina
    geometry: Geometry


def detect_fov(rgb: np.ndarray, work_side: int = 512) -> np.ndarray:
    """Boolean mask of the visible retina at the resolution of `rgb`.

    Thresholds the red channel (the fundus is red, the surround black) relative to its bright level, keeps the
    largest component and fills holes. Raises UngradableImage when no plausible field of view is present.
    """
    h, w = rgb.shape[:2]
    scale = min(1.0, work_side / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    lum = np.maximum(small[..., 0], small[..., 1]).astype(np.float32)
    lum = cv2.GaussianBlur(lum, (0, 0), 1.5)
    bright = float(np.percentile(lum, 99))
    if bright < 25:
        raise UngradableImage("no field of view found: image is black or nearly black")
    thr = max(12.0, 0.12 * bright)
    fov = (lum > thr).astype(np.uint8)
    fov = cv2.morphologyEx(fov, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fov, connectivity=8)
    if n <= 1:
        raise UngradableImage("no field of view found")
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    fov = (labels == biggest).astype(np.uint8)
    fraction = fov.mean()
    if fraction < 0.05:
        raise UngradableImage(f"no field of view found: bright region covers only {fraction:.1%} of the image")
    fov = _fill_holes(fov)
    if scale < 1.0:
        fov = cv2.resize(fov, (w, h), interpolation=cv2.INTER_NEAREST)
    return fov.astype(bool)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled


def preprocess(rgb: np.ndarray, size: int, decode_scale: float = 1.0, original_shape: tuple[int, int] | None = None) -> Preprocessed:
    """Crop the field of view to a square canvas of `size` px.

    `rgb` may be a reduced decode of the original (`decode_scale` original px per decoded px); the geometry is
    always expressed in original pixels.
    """
    fov = detect_fov(rgb)
    ys, xs = np.nonzero(fov)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = int(max(y1 - y0, x1 - x0))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    bx0, by0 = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    canvas = _crop_padded(rgb, bx0, by0, side)
    fov_canvas = _crop_padded(fov.astype(np.uint8), bx0, by0, side)
    image = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)
    fov_small = cv2.resize(fov_canvas, (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    image[~fov_small] = 0
    oh, ow = original_shape if original_shape else (round(rgb.shape[0] * decode_scale), round(rgb.shape[1] * decode_scale))
    geom = Geometry(int(oh), int(ow), bx0 * decode_scale, by0 * decode_scale, side * decode_scale, int(size))
    return Preprocessed(image, fov_small, geom)


# The camera field angle assumed when neither the manifest nor the configuration gives one: it sets the mm/px estimate
# and an angular-scale model's canvas side, so every default of it in the project refers here.
DEFAULT_FIELD_ANGLE_DEG = 45.0


def to_multiple(length: float, multiple: int = 32) -> int:
    """The nearest positive multiple of `multiple` (the small encoder halves the canvas five times)."""
    return max(multiple, multiple * round(length / multiple))


def angular_canvas_side(px_per_degree: float | None, field_angle_deg: float | None, default: int = 1024) -> int:
    """Canvas side that puts `px_per_degree` canvas pixels on each degree of a camera's `field_angle_deg` field (the
    canvas spans the field of view): a vessel of a given angular size then covers the same pixels on every camera.
    `default` when either is unknown (a fixed-size model, or a camera of unknown field)."""
    if px_per_degree is None or not field_angle_deg:
        return default
    return to_multiple(px_per_degree * field_angle_deg)


def canvas_from_geometry(rgb: np.ndarray, geom: Geometry, size: int, decode_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The canvas of `geom`'s box cut again at another `size` from (a possibly reduced decode of) the original: the
    same retina, pixel for pixel aligned with the first canvas, at a finer or coarser sampling. -> (image, fov)."""
    x0, y0 = round(geom.box_x0 / decode_scale), round(geom.box_y0 / decode_scale)
    side = round(geom.box_side / decode_scale)
    canvas = _crop_padded(rgb, x0, y0, side)
    fov = _crop_padded(detect_fov(rgb).astype(np.uint8), x0, y0, side)
    image = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)
    fov = cv2.resize(fov, (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    image[~fov] = 0
    return image, fov


def _crop_padded(arr: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """Square crop that pads with zeros where the box leaves the array."""
    out = np.zeros((side, side) + arr.shape[2:], dtype=arr.dtype)
    h, w = arr.shape[:2]
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(w, x0 + side), min(h, y0 + side)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = arr[sy0:sy1, sx0:sx1]
    return out


def mask_to_original(mask: np.ndarray, geom: Geometry, smooth: bool = True) -> np.ndarray:
    """Map a canvas mask back onto the original image grid: the 0/1 mask resampled bilinearly and cut at 0.5, so
    edges follow the outline instead of the canvas pixel's staircase (on training images of every dataset it scored
    as well or better at native resolution: docs/model_eval/native_resolution/); `smooth=False`: nearest neighbour."""
    if smooth:
        return canvas_to_original(mask.astype(np.float32), geom, "linear") >= 0.5
    return canvas_to_original(mask.astype(bool), geom)


def canvas_to_original(canvas: np.ndarray, geom: Geometry, interpolation: str = "nearest") -> np.ndarray:
    """Any canvas map (a mask, a probability map) on the original image grid, zero where the canvas does not reach.
    "nearest" keeps the dtype; "linear" resamples a float map bilinearly. The canvas may have any side (an
    angular-scale model's): its box is `geom`'s."""
    oh, ow = geom.original_height, geom.original_width
    size = canvas.shape[0]
    scale = size / geom.box_side  # canvas px per original px
    if interpolation == "linear":  # canvas pixel centres sit at (u + 0.5) / scale in the box
        inverse = np.float32([[scale, 0, (0.5 - geom.box_x0) * scale - 0.5], [0, scale, (0.5 - geom.box_y0) * scale - 0.5]])
        return cv2.warpAffine(canvas.astype(np.float32), inverse, (ow, oh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if interpolation != "nearest":
        raise ValueError(f"interpolation must be 'nearest' or 'linear', not {interpolation!r}")
    # For each original pixel, the canvas pixel it falls into.
    xs = np.floor((np.arange(ow) + 0.5 - geom.box_x0) * scale).astype(np.int64)
    ys = np.floor((np.arange(oh) + 0.5 - geom.box_y0) * scale).astype(np.int64)
    vx = (xs >= 0) & (xs < size)
    vy = (ys >= 0) & (ys < size)
    out = canvas[np.clip(ys, 0, size - 1)][:, np.clip(xs, 0, size - 1)]
    out[~vy] = 0
    out[:, ~vx] = 0
    return out


def canvas_mm_per_px(original_mm_per_px: float | None, geom: Geometry) -> float | None:
    """Pixel size on the model canvas given the pixel size of the original photograph."""
    return None if original_mm_per_px is None else original_mm_per_px * geom.original_px_per_canvas_px
