"""`retsam report OUTPUT`: one self-contained HTML file (inline CSS + SVG + base64 JPEG overlays, no JS, no network).

Scales with the cohort: every number is a Polars aggregate over the lazily scanned Parquet (group-bys, quantiles,
binned counts, top-k); no step materialises all rows of a table. The only row-level data read are the few outlier
rows (top-k) and their masks for the overlay thumbnails.

Sections (HTML ids): summary, status, quality, laterality, duplicates, biomarkers, groups, outliers, runs, timings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from html import escape
from typing import Any

import polars as pl

from pipeline.qc.common import (
    ERROR_COLUMNS,
    GROUP_COLUMNS,
    QUALITY_GRADE_COLUMNS,
    QUALITY_SCORE_COLUMNS,
    biomarker_columns,
    join,
    numeric,
    pick,
    scan_tables,
    write_bytes,
)
from pipeline.qc.duplicates import duplicate_queries, duplicate_section
from pipeline.qc.laterality import laterality_queries, laterality_section
from pipeline.qc.report_sections import (
    MAX_GROUP_LEVELS,
    N_BINS,
    OUTLIER_Z,
    biomarker_section,
    groups_section,
    load_runs,
    outlier_section,
    page,
    quality_section,
    runs_section,
    stats_dict,
    status_section,
    summary_section,
    timings_section,
)

log = logging.getLogger(__name__)



def build_report(
    output: str,
    out: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    max_outliers: int = 30,
    outlier_overlays: int = 8,
    write_missing_overlays: bool = True,
    title: str | None = None,
) -> str:
    """Write the report (default OUTPUT/report.html) and return its URI."""
    out = out or join(str(output), "report.html")
    html_text = report_html(output, storage_options, max_outliers, outlier_overlays, write_missing_overlays, title)
    if "://" in out:
        write_bytes(out, html_text.encode("utf-8"), storage_options)
    else:
        from pathlib import Path

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(html_text, encoding="utf-8")
    return out


def report_html(
    output: str,
    storage_options: Mapping[str, Any] | None = None,
    max_outliers: int = 30,
    outlier_overlays: int = 8,
    write_missing_overlays: bool = True,
    title: str | None = None,
) -> str:
    t0 = time.perf_counter()
    tables = scan_tables(output, storage_options)
    images = tables.get("images")
    parts: dict[str, str] = {}
    if images is None:
        body = f'<section id="summary"><h2>Summary</h2><p class="warn">No images table under {escape(str(output))}/images/.</p></section>'
        parts["summary"] = body
        runs = load_runs(output, storage_options)
        parts["runs"] = runs_section(runs)
        parts["timings"] = timings_section(runs, None, {})
        return page(title or f"RetSAM report: {output}", parts, time.perf_counter() - t0)

    schema = dict(images.collect_schema())
    status_col = "status" if "status" in schema else None
    ok = images.filter(pl.col("status") == "ok") if status_col else images
    groups = [g for g in GROUP_COLUMNS if g in schema]
    bio = biomarker_columns(schema)
    runs = load_runs(output, storage_options)

    # --- one batch of small aggregate queries ---------------------------------------------------------------
    q: dict[str, pl.LazyFrame] = {}
    q["n"] = images.select(
        pl.len().alias("rows"),
        pl.col("image_id").n_unique().alias("ids"),
        *([pl.col("run_id").n_unique().alias("runs")] if "run_id" in schema else []),
        *([pl.col("batch").n_unique().alias("batches")] if "batch" in schema else []),
    )
    if status_col:
        q["status"] = images.group_by("status").agg(pl.len().alias("n")).sort("n", descending=True)
        err = pick(schema, ERROR_COLUMNS)
        if err:
            bad = images.filter(pl.col("status") != "ok")
            q["errors"] = (
                bad.group_by("status", err)
                .agg(pl.len().alias("n"), pl.col("image_id").first().alias("example"))
                .sort("n", descending=True)
                .head(50)
            )
            q["error_kinds"] = (
                bad.with_columns(kind=pl.col(err).fill_null("(no message)").str.split(":").list.first().str.slice(0, 80))
                .group_by("status", "kind")
                .agg(pl.len().alias("n"))
                .sort("n", descending=True)
                .head(30)
            )
    grade = pick(schema, QUALITY_GRADE_COLUMNS)
    if grade and numeric(schema, grade):
        grade = None
    score = pick(schema, QUALITY_SCORE_COLUMNS)
    if score and not numeric(schema, score):
        score = None
    if grade:
        q["grade"] = images.group_by(pl.col(grade).cast(pl.String).fill_null("(none)").alias("grade")).agg(pl.len().alias("n")).sort("grade")
        if groups:
            q["grade_by"] = images.group_by(pl.col(grade).cast(pl.String).fill_null("(none)").alias("grade"), *groups).agg(pl.len().alias("n"))
    for g in groups:
        q[f"levels:{g}"] = (
            images.group_by(pl.col(g).cast(pl.String).fill_null("(missing)").alias("level"))
            .agg(pl.len().alias("n"))
            .sort("n", descending=True)
        )
    numeric_cols = [c for _, c in bio] + ([score] if score else [])
    if numeric_cols:
        aggs = []
        for c in numeric_cols:
            x = pl.col(c).cast(pl.Float64)
            x = pl.when(x.is_finite()).then(x)
            aggs += [
                x.count().alias(f"{c}|n"), x.mean().alias(f"{c}|mean"), x.std().alias(f"{c}|sd"),
                x.min().alias(f"{c}|min"), x.max().alias(f"{c}|max"), x.median().alias(f"{c}|median"),
                x.quantile(0.005).alias(f"{c}|lo"), x.quantile(0.995).alias(f"{c}|hi"),
                x.quantile(0.01).alias(f"{c}|p01"), x.quantile(0.99).alias(f"{c}|p99"),
            ]
        q["stats"] = ok.select(aggs)
    timing_cols = [c for c in schema if numeric(schema, c) and (c.endswith("_seconds") or c.endswith("_ms") or c.endswith("_s"))]
    if timing_cols:
        q["timing"] = ok.select(
            *[pl.col(c).sum().alias(f"{c}|sum") for c in timing_cols],
            *[pl.col(c).mean().alias(f"{c}|mean") for c in timing_cols],
            *[pl.col(c).quantile(0.5).alias(f"{c}|p50") for c in timing_cols],
            *[pl.col(c).quantile(0.95).alias(f"{c}|p95") for c in timing_cols],
            *[pl.col(c).max().alias(f"{c}|max") for c in timing_cols],
        )
    q.update(laterality_queries(ok, schema))
    q.update(duplicate_queries(ok, schema))
    if "processed_at" in schema:
        q["span"] = images.select(pl.col("processed_at").min().alias("first"), pl.col("processed_at").max().alias("last"))
    keys = list(q)
    res = dict(zip(keys, pl.collect_all([q[k] for k in keys])))
    t_agg1 = time.perf_counter() - t0

    # --- group levels (top-k, others pooled) and binned histograms --------------------------------------------
    levels = {g: res[f"levels:{g}"]["level"].to_list()[:MAX_GROUP_LEVELS] for g in groups}
    stats = stats_dict(res.get("stats"), numeric_cols)
    gexpr = {
        g: pl.when(pl.col(g).cast(pl.String).fill_null("(missing)").is_in(levels[g]))
        .then(pl.col(g).cast(pl.String).fill_null("(missing)"))
        .otherwise(pl.lit("other"))
        .alias(g)
        for g in groups
    }
    hq: dict[str, pl.LazyFrame] = {}
    edges: dict[str, list[float]] = {}
    for c in numeric_cols:
        st = stats.get(c, {})
        lo, hi = st.get("lo"), st.get("hi")
        if lo is None or hi is None or not st.get("n"):
            continue
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        w = (hi - lo) / N_BINS
        edges[c] = [lo + i * w for i in range(N_BINS + 1)]
        x = pl.col(c).cast(pl.Float64)
        b = ((x - lo) / w).floor().clip(0, N_BINS - 1).cast(pl.Int32).alias("bin")
        hq[c] = (
            ok.filter(x.is_finite())
            .select(b, *gexpr.values(), (x < lo).alias("below"), (x > hi).alias("above"))
            .group_by("bin", *groups)
            .agg(pl.len().alias("n"), pl.col("below").sum().alias("below"), pl.col("above").sum().alias("above"))
        )
    if groups and bio:
        for g in groups:
            hq[f"means:{g}"] = (
                ok.group_by(gexpr[g])
                .agg(pl.len().alias("n"), *[pl.col(c).cast(pl.Float64).mean().alias(c) for _, c in bio])
                .sort(g)
            )
    # Outliers: robust z = (x - median) / (1.4826 * MAD), MAD from one more aggregate.
    med = {c: stats[c]["median"] for _, c in bio if stats.get(c, {}).get("median") is not None}
    if med:
        hq["mad"] = ok.select([(pl.col(c).cast(pl.Float64) - m).abs().median().alias(c) for c, m in med.items()])
    hkeys = list(hq)
    hres = dict(zip(hkeys, pl.collect_all([hq[k] for k in hkeys]))) if hkeys else {}
    t_agg2 = time.perf_counter() - t0

    outliers = None
    outlier_counts = None
    if med:
        mad = hres["mad"].row(0, named=True)
        scale = {c: (1.4826 * mad[c]) if mad[c] else (stats[c]["sd"] or None) for c in med}
        scale = {c: s for c, s in scale.items() if s}
        labels = {c: lab for lab, c in bio}
        if scale:
            ref = pl.LazyFrame(
                {"variable": list(scale), "median": [med[c] for c in scale], "scale": [scale[c] for c in scale],
                 "biomarker": [labels[c] for c in scale]}
            )
            long = (
                ok.select("image_id", *groups, *[pl.col(c).cast(pl.Float64) for c in scale])
                .unpivot(index=["image_id", *groups], on=list(scale), variable_name="variable", value_name="value")
                .filter(pl.col("value").is_finite())
                .join(ref, on="variable")
                .with_columns(z=(pl.col("value") - pl.col("median")) / pl.col("scale"))
                .filter(pl.col("z").abs() > OUTLIER_Z)
            )
            outliers, outlier_counts = pl.collect_all(
                [
                    long.with_columns(az=pl.col("z").abs()).top_k(max_outliers, by="az").drop("az"),
                    long.group_by("biomarker").agg(pl.len().alias("n"), pl.col("image_id").n_unique().alias("images")).sort("n", descending=True),
                ]
            )
    low_q = None
    if score:
        low_q = ok.filter(pl.col(score).is_not_null()).bottom_k(10, by=score).select("image_id", score, *groups).collect()
    t_agg3 = time.perf_counter() - t0

    # --- HTML ----------------------------------------------------------------------------------------------
    n = res["n"].row(0, named=True)
    parts["summary"] = summary_section(output, n, res.get("status"), res.get("span"), runs, bio, groups)
    parts["status"] = status_section(res.get("status"), res.get("errors"), res.get("error_kinds"), pick(schema, ERROR_COLUMNS))
    parts["quality"] = quality_section(grade, score, res.get("grade"), res.get("grade_by"), groups, hres.get(score), edges.get(score), stats.get(score or "", {}), low_q)
    parts["laterality"] = laterality_section(res.get("laterality_counts"), res.get("laterality_disagree"))
    parts["duplicates"] = duplicate_section(res.get("duplicates"))
    parts["biomarkers"] = biomarker_section(bio, stats, hres, edges, groups)
    parts["groups"] = groups_section(bio, groups, hres, levels)
    t_ov = time.perf_counter()
    parts["outliers"] = outlier_section(
        output, storage_options, outliers, outlier_counts, tables, outlier_overlays, write_missing_overlays, groups
    )
    t_ov = time.perf_counter() - t_ov
    parts["runs"] = runs_section(runs)
    parts["timings"] = timings_section(runs, res.get("timing"), {"aggregates (s)": t_agg3, "outlier overlays (s)": t_ov}, timing_cols)
    log.info("report: aggregates %.2fs (%.2f/%.2f/%.2f), overlays %.2fs", t_agg3, t_agg1, t_agg2, t_agg3, t_ov)
    return page(title or f"RetSAM report: {output}", parts, time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------------------------
