"""`retsam aggregate OUTPUT --by participant_id,eye`: one row per participant (and eye, visit...) for analysis.

Why: health records are per participant; a cohort holds several photographs per eye and visit, some rejected by
quality, some the same file twice. Every analysis has to reduce them, and doing it by hand invites three errors
this module makes impossible: averaging ungradable photographs in, counting a copied file twice, and giving a file
that sits under two participants (a linkage error) to one of them. Rules:

- ok images only; images graded `reject` are left out unless asked (`gradable` false);
- a file stored more than once (`file_sha256`) counts once inside a group; a file that appears under two groups
  cannot be attributed and is left out of both (the report's duplicate check lists it);
- rows missing a `by` value are left out;
- every numeric biomarker of the catalogue becomes the mean over the group's images that have a value (nulls are
  not zeros), every yes/no biomarker the fraction of those images where it holds; text columns are dropped.

Units, definitions and references travel in the Parquet field metadata, as in the images table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa

from retsam_core.biomarkers.catalogue import CATALOGUE


@dataclass(frozen=True)
class AggregateResult:
    table: pl.DataFrame
    images_used: int
    left_out: dict[str, int]  # reason -> images


def aggregate(images: pl.LazyFrame, by: Sequence[str], include_rejected: bool = False) -> AggregateResult:
    """Group ok images of an output's images table by `by` under the rules above."""
    names = images.collect_schema().names()
    missing = [c for c in by if c not in names]
    if not by or missing:
        meta = [c for c in names if c in _MANIFEST_LIKE]
        raise ValueError(f"cannot group by {', '.join(missing) or 'nothing'}: not a column of the images table "
                         f"(manifest-like columns here: {', '.join(meta) or 'none'}; inferred: laterality)")
    # numeric biomarkers average, yes/no ones become fractions (the same mean); a grouping column is not averaged
    averaged = [c.name for c in CATALOGUE if c.dtype in ("float64", "int64", "bool") and c.name in names and c.name not in by]
    file_key = pl.col("file_sha256") if "file_sha256" in names else pl.lit(None, pl.String)
    rejected = pl.col("gradable").eq(False) if "gradable" in names and not include_rejected else pl.lit(False)
    rows = (
        images.filter(pl.col("status") == "ok")
        .select(*by, "image_id", *averaged, _file=pl.coalesce(file_key, pl.col("image_id")),
                _rejected=rejected.fill_null(False))
        .with_columns(_group=pl.concat_str([pl.col(c).cast(pl.String) for c in by], separator="\x1f"))
        .with_columns(_reason=pl.when(pl.col("_group").is_null()).then(pl.lit("missing " + "/".join(by)))
                      .when(pl.col("_rejected")).then(pl.lit("quality grade reject")))
        .collect()
    )
    candidates = rows.filter(pl.col("_reason").is_null()).with_columns(
        _reason=pl.when(pl.col("_group").n_unique().over("_file") > 1).then(pl.lit("same file under two groups"))
        .when(pl.col("image_id").rank("ordinal").over("_file", "_group") > 1).then(pl.lit("copy of a file already counted"))
    )
    kept = candidates.filter(pl.col("_reason").is_null())
    reasons = pl.concat([rows.select("_reason"), candidates.select("_reason")]).drop_nulls()
    left_out = dict(reasons.group_by("_reason").len().sort("_reason").iter_rows())
    table = (
        kept.group_by(list(by))
        .agg(
            pl.len().alias("n_images"),
            pl.col("image_id").sort().alias("image_ids"),
            *[pl.col(c).cast(pl.Float64).mean().alias(c) for c in averaged],
        )
        .sort(list(by))
    )
    return AggregateResult(table, kept.height, left_out)


_MANIFEST_LIKE = ("participant_id", "eye", "visit", "site", "device", "laterality")


def arrow_table(result: AggregateResult, by: Sequence[str], source: str) -> pa.Table:
    """The aggregate as Arrow with each biomarker's unit and definition (how it was aggregated) in its metadata."""
    t = result.table.to_arrow()
    entries = {c.name: c for c in CATALOGUE}
    fields = []
    for f in t.schema:
        c = entries.get(f.name)
        if c is None:
            meta = {"description": "images of the group used (ok, graded usable or better, each file once)"} \
                if f.name in ("n_images", "image_ids") else {}
        elif c.dtype == "bool":
            meta = {"unit": "ratio", "description": f"fraction of the group's images where: {c.definition}",
                    "family": c.family}
        else:
            meta = {"unit": c.unit, "description": f"mean over the group's images with a value of: {c.definition}",
                    "family": c.family}
        if c is not None and c.reference:
            meta["reference"] = c.reference
        fields.append(f.with_metadata(meta) if meta else f)
    info = {"table": "aggregate", "by": ",".join(by), "source": source,
            "left_out": ",".join(f"{k}={v}" for k, v in result.left_out.items())}
    return t.cast(pa.schema(fields, metadata=info))


def aggregate_output(output: str, by: Sequence[str], out: str | None = None,
                     storage_options: Mapping[str, Any] | None = None, include_rejected: bool = False) -> tuple[str, AggregateResult]:
    """Aggregate OUTPUT's images and write Parquet to `out` (default OUTPUT/aggregates/by_<cols>.parquet)."""
    import io

    import pyarrow.parquet as pq

    from pipeline.qc.common import write_bytes
    from pipeline.scan import scan

    result = aggregate(scan(output, dict(storage_options or {}))["images"], by, include_rejected)
    target = out or f"{output.rstrip('/')}/aggregates/by_{'_'.join(by)}.parquet"
    buf = io.BytesIO()
    pq.write_table(arrow_table(result, by, output), buf)
    write_bytes(target, buf.getvalue(), storage_options)
    return target, result
