"""Where a row's pixel size comes from: the manifest, a DICOM header, the image rows (reprocess), or an estimate
(the field of view under the DICOM header's field angle, else the config's).

Why one place: the source decides whether a reprocess may reuse the size or must estimate it again, and it is
written to every row (`scale_source`), so the run, reprocess and quantify paths must agree on it.
"""

from __future__ import annotations

import io
from typing import Any

from retsam_core.biomarkers.scale import GIVEN_SCALE_SOURCES
from retsam_core.preprocess import DEFAULT_FIELD_ANGLE_DEG

PLAUSIBLE_FIELD_DEG = (10.0, 200.0)  # fundus cameras 20-60 degrees, ultra-widefield up to 200; outside: a bad header


def load_lookup(lookup_path: str | None, fs) -> dict[str, tuple[str, float | None]]:
    """read_path -> (image_id, original mm/px) for one commit batch (written by the driver)."""
    if not lookup_path:
        return {}
    t = _read_table(lookup_path, fs)
    mm = t["mm_per_px"].to_pylist() if "mm_per_px" in t.column_names else [None] * t.num_rows
    return {rp: (iid, m) for rp, iid, m in zip(t["read_path"].to_pylist(), t["image_id"].to_pylist(), mm)}


def load_scale_inputs(path: str | None, fs) -> dict[str, tuple[float | None, str | None, float | None]] | None:
    """image_id -> (stored original mm/px, its scale_source, DICOM field of view in degrees), for reprocess: the
    stored masks do not say which pixel sizes were given, the image rows do. None when there is no table."""
    if not path:
        return None
    t = _read_table(path, fs)
    return {i: (m, src, a) for i, m, src, a in zip(t["image_id"].to_pylist(), t["original_mm_per_px"].to_pylist(),
                                                   t["scale_source"].to_pylist(),
                                                   t["dicom_field_of_view_deg"].to_pylist())}


def _read_table(path: str, fs):
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as f:
        return pq.read_table(io.BytesIO(f.read()))


def given_pixel_size(row: dict[str, Any], read_path: str | None, lookup: dict,
                     scale_inputs: dict | None) -> tuple[float | None, str]:
    """(original mm/px, scale_source) the input states: the manifest's, else the DICOM header's; (None, ...) when
    only an estimate is possible. A reprocess takes them from the image rows (`scale_inputs`)."""
    if scale_inputs is not None:
        entry = scale_inputs.get(row.get("image_id"))
        if entry is None or entry[1] not in GIVEN_SCALE_SOURCES + (None,):  # estimated: estimate again
            return None, "manifest"
        return entry[0], entry[1] or "manifest"  # a row without scale_source: its stored size, as before 0.2.4
    hit = lookup.get(read_path) if read_path is not None else None
    if hit is not None and hit[1] is not None:
        return hit[1], "manifest"
    if row.get("dicom_pixel_spacing_mm") is not None:
        return row["dicom_pixel_spacing_mm"], "dicom"
    return row.get("original_mm_per_px"), "manifest"  # rows that carry a size of their own (a run's rows do not)


def field_angle(row: dict[str, Any], config_angle: float, scale_inputs: dict | None) -> tuple[float, str]:
    """(camera field angle for a field-of-view estimate, the scale_source that estimate gets): the DICOM header's
    HorizontalFieldOfView when it has a plausible one, else the config's (a cohort-wide assumption)."""
    if scale_inputs is not None:
        header = scale_inputs.get(row.get("image_id"), (None, None, None))[2]
    else:
        header = row.get("dicom_field_of_view_deg")
    if header is not None and PLAUSIBLE_FIELD_DEG[0] <= float(header) <= PLAUSIBLE_FIELD_DEG[1]:
        return float(header), "dicom_fov_estimate"
    return float(config_angle), "fov_estimate"


def make_scale(original_mm_per_px, geom, masks, fov, field_angle_deg: float = DEFAULT_FIELD_ANGLE_DEG,
               given_source: str = "manifest", fov_source: str = "fov_estimate"):
    """Scale of the canvas grid: from the manifest (or DICOM header) when given, else estimated by retsam_core
    (FOV under `field_angle_deg`, then disc)."""
    from retsam_core.biomarkers.scale import estimate_scale
    from retsam_core.preprocess import canvas_mm_per_px

    manifest = None
    if original_mm_per_px is not None and original_mm_per_px > 0:
        manifest = canvas_mm_per_px(float(original_mm_per_px), geom)
    return estimate_scale(fov, masks, manifest_mm_per_px=manifest, field_angle_deg=field_angle_deg,
                          given_source=given_source, fov_source=fov_source)
