"""Where a row's pixel size comes from: the manifest, a DICOM header, the image rows (reprocess), or an estimate.

Why one place: the source decides whether a reprocess may reuse the size or must estimate it again, and it is
written to every row (`scale_source`), so the run, reprocess and quantify paths must agree on it.
"""

from __future__ import annotations

import io
from typing import Any

from retsam_core.preprocess import DEFAULT_FIELD_ANGLE_DEG


def load_lookup(lookup_path: str | None, fs) -> dict[str, tuple[str, float | None]]:
    """read_path -> (image_id, original mm/px) for one commit batch (written by the driver)."""
    if not lookup_path:
        return {}
    import pyarrow.parquet as pq

    with fs.open(lookup_path, "rb") as f:
        t = pq.read_table(io.BytesIO(f.read()))
    mm = t["mm_per_px"].to_pylist() if "mm_per_px" in t.column_names else [None] * t.num_rows
    return {rp: (iid, m) for rp, iid, m in zip(t["read_path"].to_pylist(), t["image_id"].to_pylist(), mm)}


def load_given_scale(path: str | None, fs) -> dict[str, tuple[float, str]] | None:
    """image_id -> (the pixel size the input gave, its scale_source) for reprocess; None when there is no table."""
    if not path:
        return None
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as f:
        t = pq.read_table(io.BytesIO(f.read()))
    return {i: (m, src) for i, m, src in zip(t["image_id"].to_pylist(), t["original_mm_per_px"].to_pylist(),
                                             t["scale_source"].to_pylist())}


def given_pixel_size(row: dict[str, Any], read_path: str | None, lookup: dict,
                     given_scale: dict | None) -> tuple[float | None, str]:
    """(original mm/px, scale_source) the input states: the manifest's, else the DICOM header's; (None, ...) when
    only an estimate is possible. A reprocess takes them from the image rows (`given_scale`)."""
    if given_scale is not None:
        return given_scale.get(row.get("image_id"), (None, "manifest"))
    hit = lookup.get(read_path) if read_path is not None else None
    if hit is not None and hit[1] is not None:
        return hit[1], "manifest"
    if row.get("dicom_pixel_spacing_mm") is not None:
        return row["dicom_pixel_spacing_mm"], "dicom"
    return row.get("original_mm_per_px"), "manifest"  # stored masks of an output without scale_source: as given


def make_scale(original_mm_per_px, geom, masks, fov, field_angle_deg: float = DEFAULT_FIELD_ANGLE_DEG,
               given_source: str = "manifest"):
    """Scale of the canvas grid: from the manifest (or DICOM header) when given, else estimated by retsam_core
    (FOV, then disc)."""
    from retsam_core.preprocess import canvas_mm_per_px

    manifest = None
    if original_mm_per_px is not None and original_mm_per_px > 0:
        manifest = canvas_mm_per_px(float(original_mm_per_px), geom)
    try:
        from retsam_core.biomarkers.scale import estimate_scale
    except ImportError:  # older core without the estimator
        from retsam_core.biomarkers import Scale

        return Scale(manifest, "manifest") if manifest else Scale(None, "none")
    return estimate_scale(fov, masks, manifest_mm_per_px=manifest, field_angle_deg=field_angle_deg,
                          given_source=given_source)
