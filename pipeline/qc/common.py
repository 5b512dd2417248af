"""Shared helpers for QC overlays, the cohort report and queries: paths on fsspec, table scans, column names.

Everything here reads the output layout of docs/CONTRACTS.md and never loads a whole table into memory.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.output import Output
from pipeline.scan import scan
from pipeline.storage import join_uri as join
from pipeline.storage import resolve_storage_options, to_uri

TABLES = ("images", "segments", "masks")

# Column-name candidates, most specific first (the pipeline and biomarker catalogue own the real names).
SOURCE_COLUMNS = ("path", "source_uri", "source_path", "source", "uri", "image_path", "file")
STATUS_COLUMNS = ("status",)
ERROR_COLUMNS = ("error", "error_message", "message")
QUALITY_GRADE_COLUMNS = ("quality_grade", "quality_label", "quality_class", "quality")
QUALITY_SCORE_COLUMNS = ("quality_score", "quality_prob", "quality")
GROUP_COLUMNS = ("site", "device", "eye")
MODEL_COLUMNS = ("segmenter", "model_name", "model", "model_hash", "weights_hash")
RUN_COLUMNS = ("run_id",)
GEOMETRY_FIELDS = ("original_height", "original_width", "box_x0", "box_y0", "box_side", "canvas_size")

# Main biomarkers, in report order: (label, exact catalogue names, fallback regex on column names).
MAIN_BIOMARKERS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("CRAE (um, zone B)", ("crae_knudtson_um_zone_b", "crae_knudtson_um_zone_c"), r"^crae.*um"),
    ("CRVE (um, zone B)", ("crve_knudtson_um_zone_b", "crve_knudtson_um_zone_c"), r"^crve.*um"),
    ("AVR (zone B)", ("avr_knudtson_zone_b", "avr_knudtson_zone_c"), r"^avr"),
    ("vertical CDR", ("cdr_vertical",), r"cdr|cup_disc_ratio"),
    ("vessel density", ("vessel_density_all_retina",), r"vessel_density"),
    ("fractal dimension", ("fd_box_skeleton_all_retina", "fd_box_mask_all_retina"), r"fractal|^fd_"),
    ("tortuosity", ("tortuosity_distance_all_retina",), r"tortuos"),
    ("mean vessel width (um)", ("width_mean_um_all_retina",), r"^width_mean"),
    ("branching angle (deg)", ("branching_angle_mean_deg_all_retina",), r"branch.*angle"),
    ("disc area (mm2)", ("disc_area_mm2",), r"^disc_area"),
    ("hemorrhage count", ("hemorrhage_count",), r"^hemorrhage_count$"),
    ("microaneurysm count", ("microaneurysm_count",), r"^microaneurysm_count$"),
    ("atrophy coverage", ("atrophy_total_coverage",), r"atrophy.*coverage"),
    ("tessellation coverage", ("tessellation_coverage",), r"^tessellation_coverage"),
)

# Not biomarkers even when numeric.
NON_BIOMARKER = re.compile(
    r"^(image_id|batch|run_id|row|index|age|height|width|original_|box_|size$|decode|.*_ms$|.*_seconds$|.*time.*"
    r"|quality|mm_per_px|scale|.*_hash$|.*_version$|n_|num_)",
    re.IGNORECASE,
)


def is_remote(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def resolve_options(uri: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """fsspec options for `uri`: the AWS environment merged under explicit options, as the pipeline resolves them;
    explicit options only for local paths."""
    if not is_remote(uri):
        return {}
    return resolve_storage_options(str(uri), dict(storage_options or {}))


def filesystem(path: str, storage_options: Mapping[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """fsspec filesystem and the protocol-less path for `path`."""
    fs, p = fsspec.core.url_to_fs(str(path), **resolve_options(path, storage_options))
    return fs, p


def committed_files(output: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """{table: Parquet file URIs} of committed batches only (the pipeline's own rule, `Output.committed_batches`):
    files of a batch still being written are never read."""
    out = Output(str(output), resolve_options(output, storage_options))
    batches = out.committed_batches()
    return {t: [to_uri(out.protocol, f) for b in batches for f in out.parquet_files(out.batch_dir(t, b))] for t in TABLES}


def arrow_dataset(
    output: str, table: str, files: list[str], storage_options: Mapping[str, Any] | None = None
) -> ds.Dataset | None:
    """A lazy pyarrow dataset over `files` of OUTPUT/<table>/batch=*/ with the hive `batch` column and a unified
    schema. Works for any fsspec location (local, s3://, gs://, memory://); None when there are no files.
    """
    if not files:
        return None
    fs, root = filesystem(join(output, table), storage_options)
    plain = [filesystem(f, storage_options)[1] for f in files]
    schemas = [pq.read_schema(p, filesystem=fs) for p in plain]
    schema = pa.unify_schemas(schemas, promote_options="permissive")
    part = ds.partitioning(pa.schema([("batch", pa.string())]), flavor="hive")
    if "batch" in schema.names:
        schema = schema.remove(schema.get_field_index("batch"))
    schema = schema.append(pa.field("batch", pa.string()))
    return ds.dataset(plain, schema=schema, filesystem=fs, format="parquet", partitioning=part, partition_base_dir=root)


def scan_tables(output: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, pl.LazyFrame | None]:
    """{images, segments, masks} -> LazyFrame from `pipeline.scan` (committed, current rows), or None where the
    table has no committed files."""
    frames = scan(str(output), storage_options=dict(storage_options) if storage_options else None)
    files = committed_files(output, storage_options)
    return {t: frames.get(t) if files[t] else None for t in TABLES}


def pick(columns: Iterable[str], candidates: Iterable[str]) -> str | None:
    cols = list(columns)
    for c in candidates:
        if c in cols:
            return c
    return None


def numeric(schema: Mapping[str, pl.DataType], name: str) -> bool:
    dt = schema.get(name)
    return dt is not None and dt.is_numeric() and dt != pl.Boolean


def biomarker_columns(schema: Mapping[str, pl.DataType], limit: int = 12) -> list[tuple[str, str]]:
    """[(label, column)] of the main biomarkers present: catalogue names first, then other float columns."""
    cols = [c for c in schema if numeric(schema, c)]
    chosen: list[tuple[str, str]] = []
    used: set[str] = set()
    for label, exact, rx in MAIN_BIOMARKERS:
        col = next((c for c in exact if c in cols), None)
        if col is None:
            r = re.compile(rx, re.IGNORECASE)
            col = next((c for c in cols if c not in used and r.search(c) and not NON_BIOMARKER.match(c)), None)
            if col is not None:
                label = label.split(" (")[0]
        if col is not None and col not in used:
            chosen.append((label, col))
            used.add(col)
    if len(chosen) < 4:  # unknown naming: fall back to the float columns
        for c in cols:
            if len(chosen) >= limit:
                break
            if c not in used and not NON_BIOMARKER.match(c) and schema[c].is_float():
                chosen.append((c, c))
                used.add(c)
    return chosen[:limit]


def safe_name(image_id: str) -> str:
    """File-name-safe form of an image id (stable; used for qc/<safe>.png)."""
    raw = str(image_id)
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._")[:160] or "image"
    if s != raw:  # altered: add a short hash so that distinct ids never collide
        s += "-" + hashlib.sha1(raw.encode("utf-8")).hexdigest()[:8]
    return s


def read_bytes(uri: str, storage_options: Mapping[str, Any] | None = None) -> bytes:
    fs, p = filesystem(uri, storage_options)
    with fs.open(p, "rb") as f:
        return f.read()


def write_bytes(uri: str, data: bytes, storage_options: Mapping[str, Any] | None = None) -> None:
    fs, p = filesystem(uri, storage_options)
    parent = p.rsplit("/", 1)[0] if "/" in p else ""
    if parent and not is_remote(uri):
        fs.makedirs(parent, exist_ok=True)
    with fs.open(p, "wb") as f:
        f.write(data)


def exists(uri: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    fs, p = filesystem(uri, storage_options)
    try:
        return fs.exists(p)
    except Exception:
        return False


def parse_storage_options(items: Iterable[str] | None) -> dict[str, Any]:
    """CLI `--storage-option key=value` (repeatable; dotted keys nest: client_kwargs.endpoint_url=...)."""
    out: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"--storage-option expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        val: Any = {"true": True, "false": False}.get(v.lower(), v)
        d = out
        parts = k.split(".")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = val
    return out
