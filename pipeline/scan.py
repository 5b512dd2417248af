"""Read an output folder back as Polars LazyFrames (hive partitions: a `batch` column on every table).

Only committed batches are read (a batch is committed once its images file exists), and segments/masks rows are
restricted to rows whose image (and, for segments, quantification id) is current in images/: leftovers of an
interrupted run or of a superseded quantification are never returned.
"""

from __future__ import annotations

import polars as pl

from pipeline.output import Output
from pipeline.storage import resolve_storage_options, to_uri


def _polars_storage_options(uri: str, opts: dict) -> dict | None:
    """fsspec-style options -> the object_store keys Polars understands."""
    if not uri.startswith(("s3://", "s3a://")):
        return None
    out: dict[str, str] = {}
    if opts.get("key"):
        out["aws_access_key_id"] = opts["key"]
    if opts.get("secret"):
        out["aws_secret_access_key"] = opts["secret"]
    if opts.get("token"):
        out["aws_session_token"] = opts["token"]
    ck = opts.get("client_kwargs") or {}
    if ck.get("endpoint_url"):
        out["aws_endpoint_url"] = ck["endpoint_url"]
        if ck["endpoint_url"].startswith("http://"):
            out["aws_allow_http"] = "true"
    out["aws_region"] = ck.get("region_name") or "us-east-1"
    if opts.get("profile"):
        out["aws_profile"] = opts["profile"]
    return out


def scan(output: str, storage_options: dict | None = None) -> dict[str, pl.LazyFrame]:
    """{'images', 'segments', 'masks'} -> LazyFrame over the committed hive layout of OUTPUT."""
    opts = resolve_storage_options(output, storage_options)
    out = Output(output, opts)
    committed = out.committed_batches()
    pl_opts = _polars_storage_options(output, opts)
    frames: dict[str, pl.LazyFrame] = {}
    for table in ("images", "segments", "masks"):
        files = [to_uri(out.protocol, f) for b in committed for f in out.parquet_files(out.batch_dir(table, b))]
        if not files:
            frames[table] = None
            continue
        frames[table] = pl.scan_parquet(files, hive_partitioning=True, storage_options=pl_opts,
                                        missing_columns="insert", extra_columns="ignore" if table == "images" else "ignore")
    images = frames["images"]
    if images is None:
        images = pl.LazyFrame(schema={"image_id": pl.String, "status": pl.String, "batch": pl.String})
    frames["images"] = images
    keys = images.select("image_id", "batch", "quant_id") if "quant_id" in images.collect_schema().names() else images.select("image_id", "batch")
    if frames["segments"] is not None:
        on = ["image_id", "batch"] + (["quant_id"] if "quant_id" in keys.collect_schema().names() else [])
        frames["segments"] = frames["segments"].join(keys, on=on, how="semi")
    else:
        frames["segments"] = pl.LazyFrame(schema={"image_id": pl.String, "batch": pl.String})
    if frames["masks"] is not None:
        frames["masks"] = frames["masks"].join(keys.select("image_id", "batch"), on=["image_id", "batch"], how="semi")
    else:
        frames["masks"] = pl.LazyFrame(schema={"image_id": pl.String, "batch": pl.String})
    return frames
