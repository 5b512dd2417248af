"""Shared per-image state for the biomarker families: inputs, geometry, and the output collector.

Families read a `Context` (masks already resolved to known/unknown, disc and fovea geometry, distance maps) and
write into an `Output`, which only accepts catalogue columns and insists on a reason for every null.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retsam_core.biomarkers.catalogue import COLUMNS


@dataclass(frozen=True)
class Config:
    """Tunable constants, in physical units where possible so results survive a change of grid."""

    smoothing_mm: float = 0.05  # centreline Gaussian sigma (~one vessel width); smoothing_px without a scale
    smoothing_px: float = 4.0
    min_smoothing_px: float = 1.5
    min_segment_px: float = 10.0  # shorter segments are listed but left out of tortuosity aggregates
    branch_arc_mm: float = 0.08  # arc distance along daughters for branching angles
    branch_arc_px: float = 8.0
    n_widest: int = 6  # Knudtson "big six"
    calibre_circles: int = 5  # CRAE/CRVE: median over this many circles across the zone (1 = the mid circle only)
    min_component_px: int = 8  # vessel specks smaller than this are segmentation noise, not vessels


@dataclass
class Disc:
    cx: float
    cy: float
    r: float  # equivalent radius sqrt(area / pi), px


@dataclass
class Context:
    shape: tuple[int, int]
    fov: np.ndarray  # bool, the retina
    masks: dict[str, np.ndarray]  # known masks only (bool); absent key = unknown target
    mm: float | None  # mm per px
    image: np.ndarray | None
    config: Config
    disc: Disc | None = None
    fovea: tuple[float, float] | None = None  # (x, y)
    laterality: str | None = None
    fov_centre: tuple[float, float] = (0.0, 0.0)
    fov_radius: float = 0.0
    _cache: dict[str, Any] = field(default_factory=dict)

    def known(self, target: str) -> bool:
        return target in self.masks

    def disc_distance(self) -> np.ndarray:
        """Distance of every pixel from the disc centre (cached; float32)."""
        if "dist" not in self._cache:
            yy, xx = np.ogrid[: self.shape[0], : self.shape[1]]
            self._cache["dist"] = np.hypot((xx - self.disc.cx).astype(np.float32), (yy - self.disc.cy).astype(np.float32))
        return self._cache["dist"]

    def region(self, name: str) -> np.ndarray | None:
        """Retina ∩ region mask; None when the region needs a disc that is missing."""
        if name == "retina":
            return self.fov
        if self.disc is None:
            return None
        key = f"region_{name}"
        if key not in self._cache:
            lo, hi = ZONE_BOUNDS[name]
            d = self.disc_distance()
            self._cache[key] = self.fov & (d >= lo * self.disc.r) & (d < hi * self.disc.r)
        return self._cache[key]

    def in_region(self, name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
        """Which points (x, y) lie in the region (by position, retina membership included)."""
        h, w = self.shape
        xi = np.clip(np.rint(x).astype(np.int64), 0, w - 1)
        yi = np.clip(np.rint(y).astype(np.int64), 0, h - 1)
        inside = self.fov[yi, xi]
        if name == "retina":
            return inside
        if self.disc is None:
            return None
        lo, hi = ZONE_BOUNDS[name]
        d = np.hypot(x - self.disc.cx, y - self.disc.cy)
        return inside & (d >= lo * self.disc.r) & (d < hi * self.disc.r)

    def region_reason(self, name: str) -> str:
        return f"{name} needs the optic disc: " + (
            "no optic_disc mask" if "optic_disc" not in self.masks else "the optic_disc mask is empty"
        )


# Zones in disc radii from the disc centre (BIOMARKERS.md): A r..2r, B 2r..3r, C 2r..5r.
ZONE_BOUNDS: dict[str, tuple[float, float]] = {"zone_a": (1.0, 2.0), "zone_b": (2.0, 3.0), "zone_c": (2.0, 5.0)}


class Output:
    """Collects values; every column ends up with a value or a reason."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.reasons: dict[str, str] = {}

    def set(self, name: str, value: Any, reason: str | None = None) -> None:
        if name not in COLUMNS:
            raise KeyError(f"{name!r} is not a catalogue column")
        value = _plain(value, COLUMNS[name].dtype)
        self.values[name] = value
        if value is None:
            self.reasons[name] = reason or "not computable for this image"
        else:
            self.reasons.pop(name, None)

    def null(self, names, reason: str) -> None:
        for n in [names] if isinstance(names, str) else names:
            self.set(n, None, reason)

    def mm(self, name_mm: str, px_value: float | None, mm_per_px: float | None, power: int = 1) -> None:
        """Physical twin of a pixel quantity (power 2 for areas, -1/-2 for inverse lengths)."""
        if px_value is None:
            self.set(name_mm, None, self.reasons.get(name_mm) or "pixel value unavailable")
        elif mm_per_px is None:
            self.set(name_mm, None, "no pixel size (scale unknown)")
        else:
            self.set(name_mm, px_value * mm_per_px**power)


def _plain(value: Any, dtype: str) -> Any:
    """Python scalars only; NaN/inf become None."""
    if value is None:
        return None
    if dtype == "float64":
        v = float(value)
        return v if np.isfinite(v) else None
    if dtype == "int64":
        return int(value)
    if dtype == "bool":
        return bool(value)
    return str(value)
