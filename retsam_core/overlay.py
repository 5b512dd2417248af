"""QC overlays: draw stored masks and key numbers on the fundus canvas (pure rendering, no Ray, no I/O).

The overlay is drawn on the model canvas (the square crop the masks live on, `canvas_size` px), so every mask
pixel lands exactly where it was predicted. The output image is the canvas (left, same pixel coordinates as the
masks) plus a legend panel on the right with the colour key and the key numbers.

What is drawn (only the targets present in `masks`):
- vessels: artery red, vein blue; vessel pixels that are neither artery nor vein (or all vessels when the
  segmenter gives no A/V) green;
- optic disc contour white, optic cup contour teal;
- fovea: magenta cross and circle at the centre of the fovea mask;
- zone rings around the disc centre, r = equivalent disc radius (sqrt(area / pi) of the largest disc component):
  gold circles at 2r and 3r (zone B = 2r..3r, and 2r is also the inner edge of zone C), lavender circle at 5r
  (outer edge of zone C);
- lesions by class, filled and outlined: microaneurysm pink, hemorrhage orange, hard exudate yellow, soft
  exudate pale cyan, drusen lime;
- phenotype areas (tessellation, atrophy) as thin tan contours.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from retsam_core.biomarkers.context import ZONE_BOUNDS, Disc
from retsam_core.biomarkers.layout import centroid, largest_component

# RGB colours. Tests key on these; change them only together with the legend/doc.
COLORS: dict[str, tuple[int, int, int]] = {
    "artery": (235, 30, 30),
    "vein": (40, 100, 255),
    "vessel": (0, 220, 70),
    "optic_disc": (255, 255, 255),
    "optic_cup": (0, 230, 230),
    "fovea": (255, 0, 255),
    "zone_b": (255, 200, 0),
    "zone_c": (170, 120, 255),
    "microaneurysm": (255, 120, 200),
    "hemorrhage": (255, 130, 0),
    "hard_exudate": (255, 255, 60),
    "soft_exudate": (200, 255, 255),
    "drusen": (190, 255, 0),
    "phenotype": (210, 170, 120),
}
LABELS: dict[str, str] = {
    "artery": "artery",
    "vein": "vein",
    "vessel": "vessel (no A/V label)",
    "optic_disc": "optic disc",
    "optic_cup": "optic cup",
    "fovea": "fovea",
    "zone_b": "zone B ring (2r, 3r)",
    "zone_c": "zone C outer ring (5r)",
    "microaneurysm": "microaneurysm",
    "hemorrhage": "hemorrhage",
    "hard_exudate": "hard exudate",
    "soft_exudate": "soft exudate",
    "drusen": "drusen",
    "phenotype": "tessellation / atrophy",
}
LESIONS: tuple[str, ...] = ("microaneurysm", "hemorrhage", "hard_exudate", "soft_exudate", "drusen")
PHENOTYPES: tuple[str, ...] = ("tessellation", "peripapillary_atrophy", "diffuse_atrophy", "patchy_atrophy")
VESSEL_ALPHA = 0.65
LESION_ALPHA = 0.55
LEGEND_WIDTH = 400


def disc_geometry(disc: np.ndarray | None) -> Disc | None:
    """Centre and equivalent radius (sqrt(area/pi)) of the largest optic-disc component, or None: the very disc the
    zone biomarkers are measured from (`biomarkers.layout`), so the drawn rings are the measured zones."""
    if disc is None:
        return None
    d = largest_component(np.asarray(disc, bool))
    if d is None:
        return None
    cx, cy = centroid(d)
    return Disc(cx, cy, math.sqrt(float(d.sum()) / math.pi))


def mask_centre(mask: np.ndarray | None) -> tuple[float, float] | None:
    """Centroid (x, y) of the largest component of `mask`, or None."""
    if mask is None:
        return None
    m = largest_component(np.asarray(mask, bool))
    return None if m is None else centroid(m)


def _blend(img: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], alpha: float) -> None:
    if mask is None or not np.any(mask):
        return
    m = mask.astype(bool)
    img[m] = (img[m].astype(np.float32) * (1.0 - alpha) + np.asarray(color, np.float32) * alpha).round().astype(np.uint8)


def _contours(img: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], thickness: int) -> None:
    if mask is None or not np.any(mask):
        return
    cs, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(img, cs, -1, color, thickness, lineType=cv2.LINE_AA)


def format_number(v: Any) -> str:
    """Compact human formatting for the legend (3 significant digits, ints as is, None as n/a)."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isnan(f):
            return "n/a"
        if f != 0 and (abs(f) >= 1e5 or abs(f) < 1e-3):
            return f"{f:.3g}"
        return f"{f:.4g}" if abs(f) >= 100 else f"{f:.3g}"
    s = str(v)
    return s if len(s) <= 28 else s[:25] + "..."


def _ascii(s: str) -> str:
    # Hershey fonts are ASCII only.
    return s.replace("µ", "u").replace("μ", "u").encode("ascii", "replace").decode("ascii")


def render_overlay(
    canvas: np.ndarray,
    masks: Mapping[str, np.ndarray | None],
    numbers: Mapping[str, Any] | None = None,
    title: str | None = None,
    notes: list[str] | None = None,
    legend: bool = True,
) -> np.ndarray:
    """Draw `masks` and `numbers` on an RGB `canvas` (S, S, 3) uint8; return RGB (H, S + legend, 3) uint8.

    H = S unless the legend needs more room (small canvases): then the canvas is padded below.

    `masks`: {target: (S, S) bool}; missing/None targets are simply not drawn. `numbers`: ordered
    {label: value} printed in the legend. `notes`: extra lines (e.g. "source image unavailable").
    The left S x S block keeps the canvas pixel coordinates of the masks.
    """
    if canvas.ndim != 3 or canvas.shape[2] != 3:
        raise ValueError(f"canvas must be (S, S, 3) RGB, got {canvas.shape}")
    s_h, s_w = canvas.shape[:2]
    img = np.ascontiguousarray(canvas.astype(np.uint8, copy=True))
    masks = {k: (None if v is None else np.asarray(v).astype(bool)) for k, v in masks.items()}
    for k, v in masks.items():
        if v is not None and v.shape != (s_h, s_w):
            raise ValueError(f"mask {k!r} has shape {v.shape}, canvas is {(s_h, s_w)}")
    drawn: list[str] = []
    thick = max(1, round(s_w / 512))

    # Phenotype areas first (background), as thin contours.
    for name in PHENOTYPES:
        if masks.get(name) is not None and masks[name].any():
            _contours(img, masks[name], COLORS["phenotype"], thick)
            if "phenotype" not in drawn:
                drawn.append("phenotype")

    # Vessels.
    artery, vein, vessel = masks.get("artery"), masks.get("vein"), masks.get("vessel")
    av = None
    if artery is not None or vein is not None:
        av = np.zeros((s_h, s_w), bool)
        for m in (artery, vein):
            if m is not None:
                av |= m
    if vessel is not None:
        plain = vessel & ~av if av is not None else vessel
        if plain.any():
            _blend(img, plain, COLORS["vessel"], VESSEL_ALPHA)
            drawn.append("vessel")
    for name, m in (("artery", artery), ("vein", vein)):
        if m is not None and m.any():
            _blend(img, m, COLORS[name], VESSEL_ALPHA)
            drawn.append(name)

    # Lesions: filled + outlined.
    for name in LESIONS:
        m = masks.get(name)
        if m is not None and m.any():
            _blend(img, m, COLORS[name], LESION_ALPHA)
            _contours(img, m, COLORS[name], 1)
            drawn.append(name)

    # Disc, cup, zone rings.
    disc = disc_geometry(masks.get("optic_disc"))
    if masks.get("optic_disc") is not None and masks["optic_disc"].any():
        _contours(img, masks["optic_disc"], COLORS["optic_disc"], thick + 1)
        drawn.append("optic_disc")
    if masks.get("optic_cup") is not None and masks["optic_cup"].any():
        _contours(img, masks["optic_cup"], COLORS["optic_cup"], thick + 1)
        drawn.append("optic_cup")
    if disc is not None:
        centre = (round(disc.cx), round(disc.cy))
        for k in ZONE_BOUNDS["zone_b"]:
            cv2.circle(img, centre, round(k * disc.r), COLORS["zone_b"], thick, lineType=cv2.LINE_AA)
        cv2.circle(img, centre, round(ZONE_BOUNDS["zone_c"][1] * disc.r), COLORS["zone_c"], thick, lineType=cv2.LINE_AA)
        drawn += ["zone_b", "zone_c"]

    # Fovea marker.
    fc = mask_centre(masks.get("fovea"))
    if fc is not None:
        x, y = round(fc[0]), round(fc[1])
        arm = max(8, s_w // 50)
        cv2.line(img, (x - arm, y), (x + arm, y), COLORS["fovea"], thick + 1, cv2.LINE_AA)
        cv2.line(img, (x, y - arm), (x, y + arm), COLORS["fovea"], thick + 1, cv2.LINE_AA)
        cv2.circle(img, (x, y), arm, COLORS["fovea"], thick, cv2.LINE_AA)
        drawn.append("fovea")

    if not legend:
        return img
    numbers = numbers or {}
    notes = notes or []
    need = 40 + 24 * (len(drawn) + 2 + len(numbers)) + 22 * len(notes) + 30 * bool(title)
    panel = _legend_panel(max(s_h, need), drawn, numbers, title, notes, disc)
    if panel.shape[0] > s_h:  # small canvas: pad below it, so canvas coordinates are unchanged
        img = np.concatenate([img, np.full((panel.shape[0] - s_h, s_w, 3), 24, np.uint8)], axis=0)
    return np.concatenate([img, panel], axis=1)


def _legend_panel(
    height: int,
    drawn: list[str],
    numbers: Mapping[str, Any],
    title: str | None,
    notes: list[str],
    disc: Disc | None,
) -> np.ndarray:
    w = LEGEND_WIDTH
    panel = np.full((height, w, 3), 24, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    y = 28
    lh = 24

    def text(s: str, x: int, color=(235, 235, 235), scale=0.5, bold=1) -> None:
        cv2.putText(panel, _ascii(s), (x, y), font, scale, color, bold, cv2.LINE_AA)

    if title:
        t = _ascii(title)
        while t and cv2.getTextSize(t, font, 0.6, 2)[0][0] > w - 20:
            t = t[:-4] + "..." if len(t) > 4 else ""
        text(t, 10, (255, 255, 255), 0.6, 2)
        y += lh + 6
    for key in drawn:
        if y > height - lh:
            break
        cv2.rectangle(panel, (12, y - 13), (30, y + 3), COLORS[key], -1)
        text(LABELS[key], 40)
        y += lh
    if disc is not None and y < height - lh:
        text(f"disc r = {disc.r:.1f} px (canvas)", 12, (190, 190, 190), 0.45)
        y += lh
    y += 8
    if numbers and y < height - lh:
        text("key numbers", 10, (255, 255, 255), 0.55, 2)
        y += lh
        for k, v in numbers.items():
            if y > height - lh:
                break
            label = _ascii(str(k))
            val = format_number(v)
            text(label if len(label) <= 26 else label[:23] + "...", 12, (210, 210, 210), 0.48)
            (tw, _), _ = cv2.getTextSize(_ascii(val), font, 0.48, 1)
            text(val, w - 12 - tw, (255, 255, 255), 0.48)
            y += lh - 2
    for n in notes:
        y += 6
        if y > height - 10:
            break
        text(n, 10, (255, 170, 120), 0.45)
        y += lh - 4
    return panel


def encode_png(rgb: np.ndarray, compression: int = 3) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def render_overlay_png(
    canvas: np.ndarray,
    masks: Mapping[str, np.ndarray | None],
    numbers: Mapping[str, Any] | None = None,
    title: str | None = None,
    notes: list[str] | None = None,
) -> bytes:
    """`render_overlay` encoded as PNG bytes."""
    return encode_png(render_overlay(canvas, masks, numbers, title, notes))
