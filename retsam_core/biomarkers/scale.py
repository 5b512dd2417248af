"""Pixel size of the mask grid when the manifest does not give one.

Order of trust: the manifest (or the file's own header: DICOM PixelSpacing); the field-of-view diameter under an
assumed camera field angle (about 0.29 mm of retina per degree near the posterior pole, Bennett/Drasdo); the optic
disc diameter against the population mean of about 1.8 mm. The source is always recorded so a cohort can be stratified or re-scaled later.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from retsam_core.biomarkers.api import Scale
from retsam_core.preprocess import DEFAULT_FIELD_ANGLE_DEG

MM_PER_DEGREE = 0.29  # retinal mm per visual degree (emmetropic eye)
MEAN_DISC_DIAMETER_MM = 1.8
GIVEN_SCALE_SOURCES = ("manifest", "dicom")  # pixel sizes the input stated; every other source is an estimate


def fov_diameter_px(fov: np.ndarray) -> float | None:
    """Diameter of the field of view: the widest horizontal extent (robust to top/bottom cuts of the circle)."""
    if fov is None or not fov.any():
        return None
    cols = np.flatnonzero(fov.any(axis=0))
    rows = np.flatnonzero(fov.any(axis=1))
    return float(max(cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1))


def estimate_scale(
    fov: np.ndarray | None,
    masks: Mapping[str, np.ndarray] | None = None,
    manifest_mm_per_px: float | None = None,
    field_angle_deg: float = DEFAULT_FIELD_ANGLE_DEG,
    given_source: str = "manifest",
    fov_source: str = "fov_estimate",
) -> Scale:
    """Scale from the manifest (or another `given_source` of GIVEN_SCALE_SOURCES, e.g. a DICOM header's pixel
    spacing), else the FOV diameter and field angle (recorded as `fov_source`: where the angle came from), else the
    disc diameter, else unknown."""
    if manifest_mm_per_px is not None and np.isfinite(manifest_mm_per_px) and manifest_mm_per_px > 0:
        if given_source not in GIVEN_SCALE_SOURCES:
            raise ValueError(f"given_source must be one of {GIVEN_SCALE_SOURCES}, not {given_source!r}")
        return Scale(float(manifest_mm_per_px), given_source)
    d = fov_diameter_px(fov) if fov is not None else None
    # a usable circular field: not the whole canvas (an all-true fov carries no information)
    if d is not None and field_angle_deg and not fov.all():
        return Scale(field_angle_deg * MM_PER_DEGREE / d, fov_source)
    disc = (masks or {}).get("optic_disc")
    if disc is not None and disc.any():
        diam = 2.0 * float(np.sqrt(disc.sum() / np.pi))
        return Scale(MEAN_DISC_DIAMETER_MM / diam, "disc_estimate")
    return Scale(None, "none")
