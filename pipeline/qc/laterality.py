"""Report section: does the eye the data states (manifest `eye`, DICOM header) match the eye the image shows?

Why: mislabelled eyes are common in screening exports, and every nasal/temporal biomarker and any per-eye analysis
depends on the label. The pipeline infers `laterality` from the disc (and fovea) position; this section counts,
per stated source, agreements and disagreements on ok images and lists the disagreeing images to re-check.
"""

from __future__ import annotations

import polars as pl

from pipeline.qc.report_sections import _table

# spellings of the eye in manifests and headers -> right / left (anything else counts as not stated)
EYE_WORDS = {
    "od": "right", "r": "right", "re": "right", "right": "right", "right eye": "right", "oculus dexter": "right",
    "os": "left", "l": "left", "le": "left", "left": "left", "left eye": "left", "oculus sinister": "left",
}
STATED_SOURCES = (("manifest eye", "eye"), ("DICOM header", "dicom_laterality"))
MAX_LISTED = 50


def normalised_eye(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.String).str.strip_chars().str.to_lowercase().replace_strict(EYE_WORDS, default=None)


def laterality_queries(ok: pl.LazyFrame, schema: dict) -> dict[str, pl.LazyFrame]:
    """Two small lazy queries over the ok rows (outcome counts, disagreeing rows); none without the columns."""
    if "laterality" not in schema:
        return {}
    parts = [
        ok.select(
            pl.lit(label).alias("source"), "image_id", pl.col(col).cast(pl.String).alias("stated"),
            normalised_eye(col).alias("stated_eye"), pl.col("laterality").alias("inferred"),
        )
        for label, col in STATED_SOURCES if col in schema
    ]
    if not parts:
        return {}
    rows = pl.concat(parts).with_columns(
        outcome=pl.when(pl.col("stated_eye").is_null()).then(pl.lit("not stated"))
        .when(pl.col("inferred").is_null()).then(pl.lit("not inferred"))
        .when(pl.col("stated_eye") == pl.col("inferred")).then(pl.lit("agrees"))
        .otherwise(pl.lit("disagrees"))
    )
    return {
        "laterality_counts": rows.group_by("source", "outcome").agg(pl.len().alias("n")).sort("source", "outcome"),
        "laterality_disagree": rows.filter(pl.col("outcome") == "disagrees")
        .select("source", "image_id", "stated", "inferred").sort("source", "image_id").head(MAX_LISTED),
    }


def laterality_section(counts: pl.DataFrame | None, disagree: pl.DataFrame | None) -> str:
    head = '<section id="laterality"><h2>Laterality check</h2>'
    if counts is None or counts.height == 0:
        return head + ('<p class="muted">nothing to compare: needs the inferred <code>laterality</code> and a stated '
                       'eye (manifest <code>eye</code> or DICOM header)</p></section>')
    stating = counts.filter(pl.col("outcome") != "not stated")["source"].unique()  # e.g. no DICOM in the cohort
    counts = counts.filter(pl.col("source").is_in(stating.implode()))
    if counts.height == 0:
        return head + '<p class="muted">no ok image has a stated eye (manifest <code>eye</code> or DICOM header)</p></section>'
    wide = counts.pivot(on="outcome", index="source", values="n").fill_null(0).sort("source", descending=True)
    cols = ["source"] + [c for c in ("agrees", "disagrees", "not inferred", "not stated") if c in wide.columns]
    note = ("<p>ok images whose stated eye (OD/OS, R/L, right/left) differs from the eye the photograph shows (the "
            "disc's side of the fovea, or of the field). Re-check these labels before any per-eye analysis; "
            f"at most {MAX_LISTED} are listed.</p>")
    listed = _table(disagree) if disagree is not None and disagree.height else '<p class="muted">no disagreements</p>'
    return head + note + _table(wide.select(cols)) + "<h3>Disagreements</h3>" + listed + "</section>"
