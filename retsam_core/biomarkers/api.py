"""Entry point: every biomarker family for one image, from masks on one pixel grid.

TEMPORARY minimal implementation so the pipeline can integrate; the biomarker work (issue 3) replaces it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Scale:
    mm_per_px: float | None  # on the grid of the masks handed to compute_biomarkers
    source: str  # "manifest", "fov_estimate", "disc_estimate", "none"


@dataclass
class BiomarkerResult:
    values: dict[str, Any]  # every catalogue column -> value or None
    reasons: dict[str, str] = field(default_factory=dict)  # column or family -> why it is null
    segments: list[dict[str, Any]] = field(default_factory=list)  # per vessel segment rows


def compute_biomarkers(
    masks: Mapping[str, np.ndarray],
    fov: np.ndarray,
    scale: Scale,
    image: np.ndarray | None = None,
    provided: Collection[str] | None = None,
) -> BiomarkerResult:
    retina = fov.astype(bool)
    values: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    vessel = masks.get("vessel")
    if vessel is None:
        values["vessel_density"] = None
        reasons["vessel_density"] = "no vessel mask"
    else:
        values["vessel_density"] = float((vessel & retina).sum() / max(1, retina.sum()))
    return BiomarkerResult(values, reasons, [])
