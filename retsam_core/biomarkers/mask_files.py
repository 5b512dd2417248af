"""Bring your own masks: quantify masks made by any tool, stored as `<stem>_<target>.png` files in a folder.

Optional `<stem>_fov.png` gives the retina; otherwise it is detected from the image `<stem>.{jpg,png,tif,...}`;
otherwise the whole grid is taken as retina (and the result says so). A target without a file is unknown (null);
pass `provided` to declare targets whose missing file means "none found" (IDRiD convention).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from retsam_core.biomarkers.api import BiomarkerResult, Scale, compute_biomarkers
from retsam_core.biomarkers.scale import estimate_scale
from retsam_core.preprocess import DEFAULT_FIELD_ANGLE_DEG
from retsam_core.targets import TARGETS

IMAGE_EXTS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
# longest first so that "optic_cup" wins over a hypothetical "cup"
_BY_LENGTH = sorted(TARGETS + ("fov",), key=len, reverse=True)


@dataclass
class MaskSet:
    stem: str
    masks: dict[str, Path] = field(default_factory=dict)  # target -> PNG
    fov: Path | None = None
    image: Path | None = None


def parse_mask_name(name: str) -> tuple[str, str] | None:
    """('stem', 'target') for '<stem>_<target>.png', else None."""
    if not name.lower().endswith(".png"):
        return None
    base = name[:-4]
    for t in _BY_LENGTH:
        if base.endswith("_" + t) and len(base) > len(t) + 1:
            return base[: -len(t) - 1], t
    return None


def find_mask_sets(folder: str | Path) -> dict[str, MaskSet]:
    """All mask sets in `folder` (not recursive), keyed by stem; images are matched by stem."""
    folder = Path(folder)
    sets: dict[str, MaskSet] = {}
    files = sorted(p for p in folder.iterdir() if p.is_file())
    for p in files:
        parsed = parse_mask_name(p.name)
        if parsed is None:
            continue
        stem, target = parsed
        ms = sets.setdefault(stem, MaskSet(stem))
        if target == "fov":
            ms.fov = p
        else:
            ms.masks[target] = p
    for p in files:
        if p.suffix.lower() in IMAGE_EXTS and p.stem in sets and parse_mask_name(p.name) is None:
            sets[p.stem].image = p
    return sets


def _read_mask(path: Path) -> np.ndarray:
    arr = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if arr is None:
        raise ValueError(f"cannot read mask {path}")
    return arr > 127


def load_mask_set(ms: MaskSet) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None, list[str]]:
    """(masks, fov, rgb image or None, notes). Every mask must share one grid."""
    from retsam_core.preprocess import detect_fov

    masks = {t: _read_mask(p) for t, p in ms.masks.items()}
    shapes = {m.shape for m in masks.values()}
    if len(shapes) > 1:
        raise ValueError(f"{ms.stem}: masks have different sizes {sorted(shapes)}")
    image = None
    if ms.image is not None:
        bgr = cv2.imread(str(ms.image), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read image {ms.image}")
        image = bgr[..., ::-1].copy()
    shape = next(iter(shapes)) if shapes else (image.shape[:2] if image is not None else None)
    if shape is None:
        raise ValueError(f"{ms.stem}: no masks and no image")
    notes: list[str] = []
    if image is not None and image.shape[:2] != shape:
        image = cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
        notes.append("image resized to the mask grid")
    if ms.fov is not None:
        fov = _read_mask(ms.fov)
        if fov.shape != shape:
            raise ValueError(f"{ms.stem}: fov size {fov.shape} differs from the masks {shape}")
        notes.append("fov from file")
    elif image is not None:
        fov = detect_fov(image)
        notes.append("fov detected from the image")
    else:
        fov = np.ones(shape, bool)
        notes.append("no fov file and no image: the whole grid is taken as retina")
    return masks, fov, image, notes


def quantify_mask_set(
    ms: MaskSet,
    scale: Scale | None = None,
    manifest_mm_per_px: float | None = None,
    field_angle_deg: float = DEFAULT_FIELD_ANGLE_DEG,
    provided: Collection[str] | None = None,
) -> BiomarkerResult:
    """Biomarkers for one mask set. `provided`: targets the tool segments (missing file = none found)."""
    masks, fov, image, notes = load_mask_set(ms)
    if provided is not None:
        for t in provided:
            masks.setdefault(t, np.zeros(fov.shape, bool))
    if scale is None:
        scale = estimate_scale(fov if ms.fov is not None or image is not None else None, masks,
                               manifest_mm_per_px, field_angle_deg)
    res = compute_biomarkers(masks, fov, scale, image=image, provided=provided)
    res.reasons["_inputs"] = "; ".join(notes)
    return res
