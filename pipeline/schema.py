"""Arrow schemas of the output tables: pipeline columns + the biomarker catalogue (with unit metadata)."""

from __future__ import annotations

import pyarrow as pa

STATUS_VALUES = ("ok", "error", "ungradable")

# Columns the pipeline owns in images/ (the biomarker catalogue columns follow them).
IMAGE_BASE_FIELDS: list[pa.Field] = [
    pa.field("image_id", pa.string(), nullable=False, metadata={"description": "stable id: path relative to the input root"}),
    pa.field("path", pa.string(), metadata={"description": "source URI"}),
    pa.field("status", pa.string(), nullable=False, metadata={"description": "ok / error / ungradable"}),
    pa.field("error", pa.string(), metadata={"description": "why the image failed or is ungradable"}),
    pa.field("warnings", pa.list_(pa.string()), metadata={"description": "non-fatal notes (alpha dropped, 16-bit...)"}),
    pa.field("null_reasons", pa.string(), metadata={"description": "JSON: biomarker column or family -> why null"}),
    pa.field("format", pa.string(), metadata={"description": "decoded file format"}),
    pa.field("file_bytes", pa.int64(), metadata={"unit": "B"}),
    pa.field("file_sha256", pa.string(), metadata={"description": "sha256 of the file's bytes: the same photograph stored twice (other name, other participant) shares it"}),
    pa.field("original_height", pa.int32(), metadata={"unit": "px"}),
    pa.field("original_width", pa.int32(), metadata={"unit": "px"}),
    pa.field("decode_scale", pa.float64(), metadata={"description": "original px per decoded px (JPEG draft)"}),
    pa.field("canvas_size", pa.int32(), metadata={"unit": "px"}),
    pa.field("box_x0", pa.float64(), metadata={"unit": "px", "description": "canvas square in original px"}),
    pa.field("box_y0", pa.float64(), metadata={"unit": "px"}),
    pa.field("box_side", pa.float64(), metadata={"unit": "px"}),
    pa.field("original_mm_per_px", pa.float64(), metadata={"unit": "mm/px", "description": "pixel size of the original photograph"}),
    # what a DICOM file's header states (null for other formats); patient identifiers and dates are never read
    pa.field("dicom_laterality", pa.string(), metadata={"description": "DICOM ImageLaterality (or Laterality): right / left"}),
    pa.field("dicom_pixel_spacing_mm", pa.float64(), metadata={"unit": "mm/px", "description": "DICOM PixelSpacing when square; the pixel size unless the manifest gives one"}),
    pa.field("dicom_field_of_view_deg", pa.float64(), metadata={"unit": "degree", "description": "DICOM HorizontalFieldOfView: the field angle of this image's scale estimate when it has no pixel size"}),
    pa.field("dicom_device", pa.string(), metadata={"description": "DICOM Manufacturer and ManufacturerModelName"}),
    pa.field("dicom_sop_instance_uid", pa.string(), metadata={"description": "DICOM SOPInstanceUID: links a row to the archive's instance"}),
    pa.field("n_segment_rows", pa.int64(), metadata={"description": "rows of this image in segments/"}),
    pa.field("segmenter", pa.string(), metadata={"description": "segmenter name and version"}),
    pa.field("model_hash", pa.string(), metadata={"description": "sha256 of the weights ('' = weights-free)"}),
    pa.field("provided_targets", pa.list_(pa.string())),
    pa.field("pipeline_version", pa.string()),
    pa.field("run_id", pa.string()),
    pa.field("quant_id", pa.string(), metadata={"description": "biomarker computation id; segments rows carry the same"}),
    pa.field("processed_at", pa.timestamp("us", tz="UTC")),
    pa.field("segment_seconds", pa.float64(), metadata={"unit": "s"}),
    pa.field("quantify_seconds", pa.float64(), metadata={"unit": "s"}),
]

GEOMETRY_FIELDS: list[pa.Field] = [
    pa.field("original_height", pa.int32()),
    pa.field("original_width", pa.int32()),
    pa.field("box_x0", pa.float64()),
    pa.field("box_y0", pa.float64()),
    pa.field("box_side", pa.float64()),
    pa.field("canvas_size", pa.int32()),
]


def _catalogue():
    try:
        from retsam_core.biomarkers import catalogue
    except ImportError:  # the catalogue is being written; keep a minimal fallback
        return None
    return catalogue


def biomarker_fields() -> list[pa.Field]:
    cat = _catalogue()
    if cat is None:
        return [pa.field("vessel_density", pa.float64(), metadata={"unit": "ratio"})]
    base = {f.name for f in IMAGE_BASE_FIELDS}
    return [f for f in cat.image_schema() if f.name not in base]


def segment_fields() -> list[pa.Field]:
    cat = _catalogue()
    extra = [] if cat is None else list(cat.segment_schema())
    head = [pa.field("image_id", pa.string(), nullable=False), pa.field("quant_id", pa.string())]
    return head + [f for f in extra if f.name not in ("image_id", "quant_id")]


def image_schema(metadata_fields: list[pa.Field] | None = None) -> pa.Schema:
    """images/ schema; manifest columns (if any) come right after image_id/path."""
    meta = [f for f in (metadata_fields or []) if f.name not in {x.name for x in IMAGE_BASE_FIELDS}]
    fields = IMAGE_BASE_FIELDS[:2] + meta + IMAGE_BASE_FIELDS[2:] + biomarker_fields()
    return pa.schema(fields, metadata={"table": "images"})


def segment_schema() -> pa.Schema:
    return pa.schema(segment_fields(), metadata={"table": "segments"})


def mask_schema(targets: list[str] | tuple[str, ...]) -> pa.Schema:
    fields = [pa.field("image_id", pa.string(), nullable=False)] + GEOMETRY_FIELDS + [
        pa.field("segmenter", pa.string()),
        pa.field("model_hash", pa.string()),
        pa.field("provided_targets", pa.list_(pa.string())),
        pa.field("original_mm_per_px", pa.float64(), metadata={"unit": "mm/px"}),
        pa.field("fov", pa.binary(), metadata={"encoding": "png 0/255, canvas size"}),
    ] + [pa.field(f"mask_{t}", pa.binary(), metadata={"encoding": "png 0/255, canvas size"}) for t in targets]
    return pa.schema(fields, metadata={"table": "masks"})


def empty_like(schema: pa.Schema, n: int) -> dict[str, list]:
    return {f.name: [None] * n for f in schema}


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Reorder/cast/add missing columns (as nulls) so every file of a table has the same schema."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            col = table[f.name]
            if not col.type.equals(f.type):
                col = col.cast(f.type, safe=False)
            cols.append(col)
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)
