"""Report section: the same file stored more than once (identical bytes under other names).

Why: screening exports and biobank transfers copy photographs: the same file in two folders, re-sent under a new
name, or attached to a second participant. A copy counts twice in every per-eye mean, and a copy under another
participant or eye is a linkage error that silently gives one person's retina to another. The pipeline records
each file's sha256 (`file_sha256`); this section groups ok images by it, counts the groups and lists them, those
whose participant or eye disagree first. Re-encoded or resized copies have other bytes and are not found here.
"""

from __future__ import annotations

import polars as pl

from pipeline.qc.laterality import normalised_eye
from pipeline.qc.report_sections import _table

MAX_LISTED = 50
IDENTITY_COLUMNS = (("participant_id", "participants"), ("eye", "eyes"))


def duplicate_queries(ok: pl.LazyFrame, schema: dict) -> dict[str, pl.LazyFrame]:
    """One small lazy query over the ok rows: each sha256 held by two or more images; none without the column."""
    if "file_sha256" not in schema:
        return {}
    ids = [(col, label) for col, label in IDENTITY_COLUMNS if col in schema]
    keyed = ok.filter(pl.col("file_sha256").is_not_null()).with_columns(
        *[(normalised_eye(col) if col == "eye" else pl.col(col).cast(pl.String)).alias(f"_{col}") for col, _ in ids]
    )
    groups = (
        keyed.group_by("file_sha256")
        .agg(
            pl.len().alias("images"),
            pl.col("image_id").sort().alias("image_ids"),
            *[pl.col(f"_{col}").drop_nulls().unique().sort().alias(label) for col, label in ids],
        )
        .filter(pl.col("images") > 1)
    )
    conflict = pl.any_horizontal([pl.col(label).list.len() > 1 for _, label in ids]) if ids else pl.lit(False)
    return {"duplicates": groups.with_columns(conflict.alias("conflict"))}


def duplicate_section(groups: pl.DataFrame | None) -> str:
    head = '<section id="duplicates"><h2>Duplicate files</h2>'
    if groups is None:
        return head + '<p class="muted">no file hashes in this output (written before pipeline 0.2.5)</p></section>'
    if groups.height == 0:
        return head + "<p>no ok image shares its bytes with another</p></section>"
    n_images = int(groups["images"].sum())
    n_conflict = int(groups["conflict"].sum())
    files = f"{groups.height} file{'s' if groups.height != 1 else ''}"
    note = (f"<p>{files} stored more than once: {n_images} ok images, {n_images - groups.height} of "
            f"them copies that count again in every mean. <b>{n_conflict}</b> of these are attached to more "
            "than one participant or eye, a linkage error to resolve at the source. Identical bytes only: "
            f"re-encoded copies are not found. At most {MAX_LISTED} are listed, conflicts first.</p>")
    listed = (
        groups.sort(["conflict", "images", "file_sha256"], descending=[True, True, False]).head(MAX_LISTED)
        .with_columns(pl.col("file_sha256").str.slice(0, 12),
                      pl.when(pl.col("conflict")).then(pl.lit("yes")).otherwise(pl.lit("")).alias("conflict"),
                      *[pl.col(c).list.join(", ") for c in groups.columns if groups[c].dtype == pl.List(pl.String)])
    )
    return head + note + _table(listed) + "</section>"
