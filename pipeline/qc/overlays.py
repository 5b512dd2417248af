"""QC overlays from a finished (or running) output: stored masks + the re-read source image -> OUTPUT/qc/*.png.

API for the pipeline (no Ray needed; call it on the driver after a run, or per row inside a Ray map):

- `render_overlays(output, image_ids=None, storage_options=None, mode="sample", n_sample=DEFAULT_SAMPLE,
  run_id=None)` -> list of written URIs. `image_ids` given: exactly those; else `mode` "sample" (a deterministic
  sample of `n_sample` ok images spread by a hash of the id, plus the n/4 lowest-quality ones), "all", or "none";
  `run_id` restricts the choice to that run's images. After `run_cohort`:
  `render_overlays(output_uri, None, out_opts, mode=cfg.qc_overlays, run_id=run_id)`.
- `render_row(mask_row, image_row=None, storage_options=None) -> bytes` (PNG): one overlay from one masks-table
  row (dict) and the matching images-table row (dict, for the source path and the key numbers). Pure apart from
  reading the source image; use it inside `map_batches` if overlays should be written during the run.
- `write_overlay(output, image_id, png, storage_options=None) -> str`: stores it at `overlay_uri(...)`.

The overlay is drawn on the model canvas: the source is decoded and cropped with the stored geometry (so it is
pixel-aligned with the masks); without stored geometry it is re-preprocessed with `retsam_core.preprocess`. When
the source cannot be read any more, the masks are drawn on a grey canvas with a note in the legend.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import polars as pl

from pipeline.qc.common import (
    GEOMETRY_FIELDS,
    QUALITY_GRADE_COLUMNS,
    QUALITY_SCORE_COLUMNS,
    SOURCE_COLUMNS,
    biomarker_columns,
    join,
    pick,
    read_bytes,
    safe_name,
    scan_tables,
    write_bytes,
)
from retsam_core.mask_codec import decode_mask
from retsam_core.overlay import render_overlay, encode_png
from retsam_core.preprocess import Geometry
from retsam_core.targets import TARGETS

log = logging.getLogger(__name__)
DEFAULT_SAMPLE = 24
MODES = ("none", "sample", "all")


def overlay_uri(output: str, image_id: str) -> str:
    """Where the overlay of `image_id` lives: OUTPUT/qc/<safe image id>.png."""
    return join(str(output), "qc", safe_name(image_id) + ".png")


def geometry_from_row(row: Mapping[str, Any]) -> Geometry | None:
    """Geometry from a masks row: flat columns, a `geometry` struct/dict, or a JSON string; None if absent."""
    g = row.get("geometry")
    if isinstance(g, (str, bytes)):
        try:
            g = json.loads(g)
        except ValueError:
            g = None
    sources = [g] if isinstance(g, Mapping) else []
    sources += [{k[len(p):]: v for k, v in row.items() if k.startswith(p)} for p in ("", "geom_", "geometry_")]
    for d in sources:
        size = d.get("canvas_size", d.get("size"))
        vals = [d.get(k) for k in GEOMETRY_FIELDS[:5]]
        if size is not None and all(v is not None for v in vals):
            return Geometry(int(vals[0]), int(vals[1]), float(vals[2]), float(vals[3]), float(vals[4]), int(size))
    return None


def decode_row_masks(row: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """{target: bool mask} for every `mask_<target>` (or bare `<target>`) column holding PNG bytes.

    A null cell means the segmenter does not provide that target: it is not drawn.
    """
    out = {}
    for t in TARGETS:
        v = row.get(f"mask_{t}", row.get(t))
        if isinstance(v, (bytes, bytearray, memoryview)) and len(v):
            out[t] = decode_mask(bytes(v))
    return out


def canvas_from_source(data: bytes, geom: Geometry | None, size: int) -> np.ndarray:
    """The model canvas (size x size RGB) for a source image: cropped by `geom` when known, else preprocessed."""
    from retsam_core.image_io import DecodeLimits, decode_image

    dec = decode_image(data, DecodeLimits(min_side=8, target_side=size))
    rgb = dec.rgb
    if geom is None:
        from retsam_core.preprocess import preprocess

        return preprocess(rgb, size, dec.decode_scale, (dec.original_height, dec.original_width)).image
    s = dec.decode_scale
    x0, y0, side = geom.box_x0 / s, geom.box_y0 / s, geom.box_side / s
    # Affine crop+resize in one step (handles padding and sub-pixel boxes).
    k = size / side
    m = np.array([[k, 0, -x0 * k], [0, k, -y0 * k]], np.float32)
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    if k < 0.5:  # pre-shrink for quality, then warp
        f = max(1, int(1 / k) // 2)
        rgb = cv2.resize(rgb, (max(1, rgb.shape[1] // f), max(1, rgb.shape[0] // f)), interpolation=cv2.INTER_AREA)
        m = np.array([[k * f, 0, -x0 * k], [0, k * f, -y0 * k]], np.float32)
        interp = cv2.INTER_LINEAR
    return cv2.warpAffine(rgb, m, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def key_numbers(image_row: Mapping[str, Any] | None, schema: Mapping[str, pl.DataType] | None = None, limit: int = 10) -> dict[str, Any]:
    """Ordered {label: value} for the legend: quality, then the main biomarkers present in the row."""
    if not image_row:
        return {}
    out: dict[str, Any] = {}
    if image_row.get("status") not in (None, "ok"):
        out["status"] = image_row.get("status")
    q = pick(image_row.keys(), QUALITY_GRADE_COLUMNS)
    if q is not None:
        out[q] = image_row.get(q)
    qs = pick(image_row.keys(), QUALITY_SCORE_COLUMNS)
    if qs is not None and qs != q:
        out[qs] = image_row.get(qs)
    if schema is None:
        schema = {k: _dtype_of(v) for k, v in image_row.items()}
    for label, col in biomarker_columns(schema, limit=limit):
        out[label.split(" (")[0] if len(label) > 26 else label] = image_row.get(col)
    return out


def _dtype_of(v: Any) -> pl.DataType:
    if isinstance(v, bool):
        return pl.Boolean()
    if isinstance(v, int):
        return pl.Int64()
    if isinstance(v, float):
        return pl.Float64()
    return pl.String()


def render_row(
    mask_row: Mapping[str, Any],
    image_row: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    schema: Mapping[str, pl.DataType] | None = None,
) -> bytes:
    """One overlay PNG from a masks row (+ images row for the source path and numbers). No Ray, no GPU."""
    masks = decode_row_masks(mask_row)
    geom = geometry_from_row(mask_row)
    size = geom.size if geom else (next(iter(masks.values())).shape[0] if masks else 1024)
    notes: list[str] = []
    canvas = None
    src_col = pick((image_row or {}).keys(), SOURCE_COLUMNS) or pick(mask_row.keys(), SOURCE_COLUMNS)
    src = (image_row or {}).get(src_col) if image_row and src_col in image_row else mask_row.get(src_col) if src_col else None
    if src:
        try:
            canvas = canvas_from_source(read_bytes(str(src), storage_options), geom, size)
        except Exception as exc:  # source moved/unreadable: still show the masks
            notes.append(f"source unreadable: {type(exc).__name__}")
            log.warning("overlay %s: cannot read source %s: %s", mask_row.get("image_id"), src, exc)
    else:
        notes.append("no source path in the images table")
    if canvas is None:
        canvas = np.full((size, size, 3), 70, np.uint8)
    if not masks:
        notes.append("no masks stored for this image")
    image_id = str(mask_row.get("image_id") or (image_row or {}).get("image_id") or "")
    return encode_png(render_overlay(canvas, masks, key_numbers(image_row, schema), image_id, notes))


def write_overlay(output: str, image_id: str, png: bytes, storage_options: Mapping[str, Any] | None = None) -> str:
    uri = overlay_uri(output, image_id)
    write_bytes(uri, png, storage_options)
    return uri


def sample_image_ids(images: pl.LazyFrame, n: int = DEFAULT_SAMPLE) -> list[str]:
    """Deterministic sample: `n` ok images spread by a hash of the id, plus up to n/4 lowest-quality ok ones."""
    schema = images.collect_schema()
    lf = images
    if "status" in schema:
        lf = lf.filter(pl.col("status") == "ok")
    ids = (
        lf.select(pl.col("image_id").cast(pl.String))
        .with_columns(h=pl.col("image_id").hash(seed=7))
        .sort("h")
        .head(n)
        .collect()["image_id"]
        .to_list()
    )
    qs = pick(schema.names(), QUALITY_SCORE_COLUMNS)
    if qs and numeric_dtype(schema[qs]) and n >= 4:
        low = lf.filter(pl.col(qs).is_not_null()).sort(qs).head(max(1, n // 4)).select(pl.col("image_id").cast(pl.String)).collect()
        ids += [i for i in low["image_id"].to_list() if i not in ids]
    return ids


def numeric_dtype(dt: pl.DataType) -> bool:
    return dt.is_numeric() and dt != pl.Boolean


def fetch_rows(
    output: str, image_ids: Sequence[str], storage_options: Mapping[str, Any] | None = None, tables=None
) -> tuple[dict[str, dict], dict[str, dict], dict[str, pl.DataType] | None]:
    """(masks rows by id, images rows by id, images schema) for `image_ids` (filtered scans, not full loads)."""
    tables = tables or scan_tables(output, storage_options)
    ids = [str(i) for i in image_ids]
    masks_rows: dict[str, dict] = {}
    image_rows: dict[str, dict] = {}
    schema = None
    if tables.get("images") is not None and ids:
        schema = dict(tables["images"].collect_schema())
        rows = tables["images"].filter(pl.col("image_id").cast(pl.String).is_in(ids)).collect()
        if "batch" in rows.columns:
            rows = rows.sort("batch", nulls_last=False)
        for r in rows.iter_rows(named=True):
            image_rows[str(r["image_id"])] = r  # the latest batch wins (reprocessed images)
    if tables.get("masks") is not None and ids:
        rows = tables["masks"].filter(pl.col("image_id").cast(pl.String).is_in(ids)).collect()
        if "batch" in rows.columns:
            rows = rows.sort("batch", nulls_last=False)
        for r in rows.iter_rows(named=True):
            iid = str(r["image_id"])
            want = (image_rows.get(iid) or {}).get("batch")
            prev = masks_rows.get(iid)
            # the masks of the images row's own batch; otherwise the latest batch
            if prev is None or want is None or prev.get("batch") != want:
                masks_rows[iid] = r
    return masks_rows, image_rows, schema


def render_overlays(
    output: str,
    image_ids: Iterable[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    mode: str = "sample",
    n_sample: int = DEFAULT_SAMPLE,
    chunk: int = 256,
    run_id: str | None = None,
) -> list[str]:
    """Render and store overlays under OUTPUT/qc/; returns the URIs written.

    `image_ids` (explicit list) wins over `mode`. Images without a masks row (errors, ungradable) are skipped.
    `run_id`: restrict "sample"/"all" to the images of that run (the pipeline passes its own run id).
    `mode="all"` walks the ids in chunks of `chunk`, so memory stays bounded.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if image_ids is None and mode == "none":
        return []
    tables = scan_tables(output, storage_options)
    if image_ids is not None:
        ids = [str(i) for i in image_ids]
    elif tables.get("masks") is None:
        return []
    else:
        src = tables["images"] if tables.get("images") is not None else tables["masks"]
        if run_id is not None and "run_id" in src.collect_schema().names():
            src = src.filter(pl.col("run_id") == run_id)
        if mode == "all":
            if "status" in src.collect_schema().names():
                src = src.filter(pl.col("status") == "ok")
            ids = src.select(pl.col("image_id").cast(pl.String)).unique().collect()["image_id"].sort().to_list()
        else:
            ids = sample_image_ids(src, n_sample)
    written: list[str] = []
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        masks_rows, image_rows, schema = fetch_rows(output, part, storage_options, tables)
        for iid in part:
            if iid not in masks_rows:
                log.info("overlay %s: no masks row (status %s)", iid, (image_rows.get(iid) or {}).get("status"))
                continue
            try:
                png = render_row(masks_rows[iid], image_rows.get(iid), storage_options, schema)
                written.append(write_overlay(output, iid, png, storage_options))
            except Exception as exc:  # one bad row must not stop the others (nor the run that called us)
                log.warning("overlay %s failed: %s: %s", iid, type(exc).__name__, exc)
    return written


def thumbnail_jpeg(png: bytes, width: int = 640, quality: int = 82) -> bytes:
    """Small JPEG of an overlay PNG, for embedding in the HTML report."""
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("overlay PNG could not be decoded")
    h, w = img.shape[:2]
    if w > width:
        img = cv2.resize(img, (width, max(1, math.floor(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
