"""`retsam export-masks OUTPUT DEST`: the stored masks of a processed cohort as PNG files, at each photograph's size.

Why: a cohort already segmented should not be segmented again to hand its masks to another tool (a grader's
viewer, a measurement of one's own). The masks table keeps every target at the model canvas with the canvas's
place in the photograph; this maps them back exactly as `retsam segment` writes its masks (`mask_to_original`),
so the files are the same: `<image>_<target>.png`, 8-bit 0/255, the photograph's width and height.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import polars as pl

from pipeline.qc.common import safe_name, scan_tables, write_bytes
from pipeline.qc.overlays import decode_row_masks, fetch_rows, geometry_from_row
from retsam_core.mask_codec import decode_mask, encode_mask
from retsam_core.preprocess import mask_to_original


def row_masks(row: Mapping[str, Any], targets: Sequence[str] | None = None, native: bool = True) -> dict[str, bytes]:
    """{target: PNG} of one masks row (`fov` included), on the photograph's grid or, `native=False`, the canvas."""
    geometry = geometry_from_row(row)
    if native and geometry is None:
        raise ValueError(f"{row.get('image_id')}: no canvas geometry stored, so no photograph-sized masks")
    masks = decode_row_masks(row)
    if row.get("fov") is not None:
        masks = {"fov": decode_mask(row["fov"]), **masks}
    return {t: encode_mask(mask_to_original(m, geometry) if native else m)
            for t, m in masks.items() if not targets or t in targets}


def export_masks(output: str, dest: str, image_ids: Iterable[str] | None = None, targets: Sequence[str] | None = None,
                 storage_options: Mapping[str, Any] | None = None, native: bool = True, chunk: int = 128) -> list[str]:
    """Write DEST/<image>_<target>.png for the given images (default: every image with masks); returns the paths.
    Images are read `chunk` at a time, so memory stays bounded on a large cohort."""
    tables = scan_tables(output, storage_options)
    if tables.get("masks") is None:
        return []
    if image_ids is None:
        ids = tables["masks"].select(pl.col("image_id").cast(pl.String)).unique().collect()["image_id"].sort().to_list()
    else:
        ids = [str(i) for i in image_ids]
    written: list[str] = []
    base = dest.rstrip("/")
    for start in range(0, len(ids), chunk):
        part = ids[start: start + chunk]
        masks_rows, _, _ = fetch_rows(output, part, storage_options, tables)
        for iid in part:
            if iid not in masks_rows:
                continue
            for target, png in row_masks(masks_rows[iid], targets, native).items():
                path = f"{base}/{safe_name(iid)}_{target}.png"
                write_bytes(path, png, storage_options)
                written.append(path)
    return written
