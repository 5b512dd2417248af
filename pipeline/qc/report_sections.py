"""HTML rendering of the cohort report: section builders, tables, page shell and CSS (no data access beyond the
few outlier overlays and run records they are handed or fetch).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import logging
import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import polars as pl

from pipeline.qc import svg
from pipeline.qc.common import (
    filesystem,
    join,
)

log = logging.getLogger(__name__)


SECTIONS = ("summary", "status", "quality", "laterality", "duplicates", "biomarkers", "groups", "outliers", "runs", "timings")
N_BINS = 30
MAX_GROUP_LEVELS = 8
OUTLIER_Z = 4.0

def stats_dict(df: pl.DataFrame | None, cols: Sequence[str]) -> dict[str, dict[str, float | None]]:
    if df is None or df.height == 0:
        return {}
    row = df.row(0, named=True)
    out: dict[str, dict[str, float | None]] = {}
    for c in cols:
        d = {k.split("|", 1)[1]: v for k, v in row.items() if k.split("|", 1)[0] == c}
        out[c] = {k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)) for k, v in d.items()}
    return out


def _table(df: pl.DataFrame | None, cols: Sequence[str] | None = None, fmt_cols: Mapping[str, Any] | None = None, cls: str = "") -> str:
    if df is None or df.height == 0:
        return '<p class="muted">none</p>'
    cols = list(cols or df.columns)
    head = "".join(f"<th>{escape(str(c))}</th>" for c in cols)
    rows = []
    for r in df.select(cols).iter_rows():
        cells = []
        for c, v in zip(cols, r):
            f = (fmt_cols or {}).get(c)
            s = f(v) if f else _cell(v)
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            cells.append(f'<td class="num">{escape(s)}</td>' if num else f"<td>{escape(s)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return svg.fmt(v)
    return str(v)


def summary_section(output, n, status_df, span, runs, bio, groups) -> str:
    counts = dict(zip(status_df["status"].to_list(), status_df["n"].to_list())) if status_df is not None else {}
    rows = [
        ("output", str(output)),
        ("rows in images/", f"{n['rows']:,}"),
        ("distinct image ids", f"{n['ids']:,}" + ("" if n["ids"] == n["rows"] else "  (some images have several rows: reprocessed?)")),
        ("ok / error / ungradable", " / ".join(f"{counts.get(s, 0):,}" for s in ("ok", "error", "ungradable"))),
    ]
    if "batches" in n:
        rows.append(("batches", f"{n['batches']:,}"))
    if runs:
        rows.append(("runs", ", ".join(r.get("run_id", r["_file"]) for r in runs[-5:]) + (" ..." if len(runs) > 5 else "")))
    if span is not None and span.height:
        rows.append(("processed", f"{span['first'][0]} .. {span['last'][0]}"))
    rows.append(("grouping columns", ", ".join(groups) or "none in the manifest"))
    rows.append(("main biomarkers", ", ".join(c for _, c in bio) or "none"))
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<section id="summary"><h2>Summary</h2><table class="kv">{body}</table></section>'


def status_section(status_df, errors, kinds, err_col) -> str:
    if status_df is None:
        return '<section id="status"><h2>Status</h2><p class="muted">no status column</p></section>'
    total = max(1, int(status_df["n"].sum()))
    colors = {"ok": "#2ca02c", "error": "#d62728", "ungradable": "#ff7f0e"}
    chart = svg.bars([(s, float(c)) for s, c in status_df.iter_rows()], "images by status", colors=colors)
    tab = _table(status_df.with_columns(share=(pl.col("n") / total * 100).round(2)), fmt_cols={"share": lambda v: f"{v:.2f}%"})
    err_html = ""
    if errors is not None and errors.height:
        err_html = (
            "<h3>Error messages, grouped by kind</h3>" + _table(kinds, ["status", "kind", "n"])
            + f"<h3>Error messages, exact (top {errors.height})</h3>" + _table(errors, ["status", err_col, "n", "example"], cls="wrap")
        )
    elif status_df is not None:
        err_html = '<p class="muted">no failed or ungradable images</p>'
    return f'<section id="status"><h2>Status</h2><div class="row">{chart}{tab}</div>{err_html}</section>'


def quality_section(grade, score, grade_df, grade_by, groups, score_hist, score_edges, score_stats, low_q) -> str:
    out = ['<section id="quality"><h2>Image quality</h2>']
    if not grade and not score:
        out.append('<p class="muted">no quality columns in the images table</p></section>')
        return "".join(out)
    out.append('<div class="row">')
    if grade_df is not None:
        out.append(svg.bars([(g, float(c)) for g, c in grade_df.iter_rows()], f"{grade} (all rows)"))
    if score_hist is not None and score_edges:
        counts = _bin_counts(score_hist, [], None)
        out.append(svg.histogram(score_edges, [("all", counts)], f"{score} (ok rows)"))
    out.append("</div>")
    if grade_by is not None and groups:
        for g in groups:
            pv = grade_by.group_by(g, "grade").agg(pl.col("n").sum()).pivot(on="grade", index=g, values="n").fill_null(0).sort(g)
            pv = pv.select(g, *sorted(c for c in pv.columns if c != g))
            out.append(f"<h3>{escape(grade)} by {escape(g)}</h3>" + _table(pv.head(40)))
    if low_q is not None and low_q.height:
        out.append(f"<h3>Lowest {escape(score)} among ok images (re-check)</h3>" + _table(low_q))
    out.append("</section>")
    return "".join(out)


def _bin_counts(df: pl.DataFrame, by: list[str], level: tuple | None) -> list[int]:
    counts = [0] * N_BINS
    d = df
    if by and level is not None:
        for col, v in zip(by, level):
            d = d.filter(pl.col(col) == v)
    for b, nn in d.group_by("bin").agg(pl.col("n").sum()).iter_rows():
        counts[int(b)] += int(nn)
    return counts


def biomarker_section(bio, stats, hres, edges, groups) -> str:
    out = ['<section id="biomarkers"><h2>Biomarkers (ok images)</h2>']
    if not bio:
        out.append('<p class="muted">no biomarker columns found</p></section>')
        return "".join(out)
    rows = []
    for lab, c in bio:
        s = stats.get(c, {})
        rows.append({"biomarker": lab, "column": c, **{k: s.get(k) for k in ("n", "mean", "sd", "min", "p01", "median", "p99", "max")}})
    out.append(_table(pl.DataFrame(rows), fmt_cols={"n": lambda v: f"{int(v or 0):,}"}))
    out.append('<p class="muted">Histograms span the 0.5th..99.5th percentiles; values outside are counted in the edge bins.</p>')
    for lab, c in bio:
        df = hres.get(c)
        if df is None or c not in edges:
            continue
        below, above = int(df["below"].sum()), int(df["above"].sum())
        charts = [svg.histogram(edges[c], [("all", _bin_counts(df, [], None))], f"{lab}: all")]
        for g in groups:
            lv = df.group_by(g).agg(pl.col("n").sum()).sort("n", descending=True)[g].to_list()
            if len(lv) < 2:
                continue
            series = [(str(v), _bin_counts(df, [g], (v,))) for v in lv]
            charts.append(svg.histogram(edges[c], series, f"{lab}: by {g}"))
        note = f'<p class="muted">{below:,} below / {above:,} above the plotted range</p>' if below or above else ""
        out.append(f'<div class="bm"><h3>{escape(lab)} <code>{escape(c)}</code></h3><div class="row">{"".join(charts)}</div>{note}</div>')
    out.append("</section>")
    return "".join(out)


def groups_section(bio, groups, hres, levels) -> str:
    out = ['<section id="groups"><h2>Means by site / device / eye</h2>']
    if not groups:
        out.append('<p class="muted">the manifest has no site, device or eye column</p></section>')
        return "".join(out)
    for g in groups:
        df = hres.get(f"means:{g}")
        if df is None:
            continue
        df = df.rename({c: lab for lab, c in bio if c in df.columns})
        extra = " (top levels; the rest pooled as other)" if len(levels[g]) >= MAX_GROUP_LEVELS else ""
        out.append(f"<h3>by {escape(g)}{extra}</h3>" + _table(df, fmt_cols={"n": lambda v: f"{int(v):,}"}))
    out.append("</section>")
    return "".join(out)


def outlier_section(output, storage_options, outliers, counts, tables, n_overlays, write_missing, groups) -> str:
    out = ['<section id="outliers"><h2>Outliers</h2>',
           f'<p class="muted">Robust z = (value - median) / (1.4826 MAD) per biomarker, |z| &gt; {OUTLIER_Z:g}, ok images.</p>']
    if outliers is None or outliers.height == 0:
        out.append('<p class="muted">no outliers</p></section>')
        return "".join(out)
    out.append("<h3>Count by biomarker</h3>" + _table(counts))
    out.append("<h3>Most extreme</h3>" + _table(outliers, ["image_id", "biomarker", "value", "median", "z", *groups]))
    ids = []
    for i in outliers["image_id"].to_list():
        if i not in ids:
            ids.append(i)
    ids = ids[:n_overlays]
    if ids:
        out.append('<h3>Overlays</h3><div class="gallery">')
        out.append(_overlay_figures(output, storage_options, ids, outliers, tables, write_missing))
        out.append("</div>")
    out.append("</section>")
    return "".join(out)


def _overlay_figures(output, storage_options, ids, outliers, tables, write_missing) -> str:
    from pipeline.qc.common import exists, read_bytes
    from pipeline.qc.overlays import (
        fetch_rows,
        overlay_uri,
        render_row,
        thumbnail_jpeg,
        write_overlay,
    )

    figs = []
    todo = []
    pngs: dict[str, bytes] = {}
    for iid in ids:
        uri = overlay_uri(output, iid)
        if exists(uri, storage_options):
            try:
                pngs[iid] = read_bytes(uri, storage_options)
                continue
            except Exception:
                pass
        todo.append(iid)
    if todo and tables.get("masks") is not None:
        masks_rows, image_rows, schema = fetch_rows(output, todo, storage_options, tables)
        for iid in todo:
            if iid in masks_rows:
                try:
                    pngs[iid] = render_row(masks_rows[iid], image_rows.get(iid), storage_options, schema)
                    if write_missing:
                        write_overlay(output, iid, pngs[iid], storage_options)
                except Exception as exc:
                    log.warning("overlay for %s failed: %s", iid, exc)
    for iid in ids:
        why = outliers.filter(pl.col("image_id") == iid)
        cap = "; ".join(f"{b} = {svg.fmt(v)} (z {z:+.1f})" for b, v, z in why.select("biomarker", "value", "z").iter_rows())
        rel = "qc/" + overlay_uri(output, iid).rsplit("/qc/", 1)[1]
        if iid in pngs:
            b64 = base64.b64encode(thumbnail_jpeg(pngs[iid])).decode("ascii")
            img = f'<a href="{escape(rel)}"><img alt="overlay {escape(iid)}" src="data:image/jpeg;base64,{b64}"></a>'
        else:
            img = '<div class="noimg">no masks stored for this image</div>'
        figs.append(f"<figure>{img}<figcaption><b>{escape(iid)}</b><br>{escape(cap)}</figcaption></figure>")
    return "".join(figs)


def load_runs(output, storage_options, limit: int = 20) -> list[dict]:
    fs, root = filesystem(join(str(output), "_runs"), storage_options)
    try:
        files = sorted(p for p in fs.ls(root, detail=False) if str(p).endswith(".json"))
    except (FileNotFoundError, NotADirectoryError):
        return []
    runs = []
    for p in files[-limit:]:
        try:
            with fs.open(p, "rb") as f:
                d = json.loads(f.read().decode("utf-8"))
            if isinstance(d, dict):
                d["_file"] = str(p).rsplit("/", 1)[-1]
                runs.append(d)
        except Exception as exc:
            runs.append({"_file": str(p).rsplit("/", 1)[-1], "_error": f"unreadable: {exc}"})
    runs.sort(key=lambda r: str(r.get("started") or r.get("started_at") or r.get("_file")))
    return runs


def _shorten(obj: Any, max_items: int = 20) -> Any:
    if isinstance(obj, list):
        head = [_shorten(x, max_items) for x in obj[:max_items]]
        return head + ([f"... {len(obj) - max_items} more"] if len(obj) > max_items else [])
    if isinstance(obj, dict):
        return {k: _shorten(v, max_items) for k, v in obj.items()}
    return obj


def _json_block(obj: Any) -> str:
    return f"<pre>{escape(json.dumps(_shorten(obj), indent=2, default=str, sort_keys=False))}</pre>"


def _find_model_card(run: Mapping[str, Any], storage_options=None) -> tuple[str, dict] | None:
    """The model card (JSON beside the weights) of the run's segmenter, found by weights path or sha256."""
    from pathlib import Path

    seg = run.get("segmenter") if isinstance(run.get("segmenter"), Mapping) else {}
    want = str(seg.get("model_hash") or run.get("model_hash") or "")
    if not want:
        return None
    spec = str((run.get("config") or {}).get("segmenter") or "")
    cands: list[str] = []
    if spec.endswith(".safetensors"):
        cands.append(spec[: -len(".safetensors")] + ".json")
    weights_dir = Path(__file__).resolve().parents[2] / "retsam_core" / "weights"
    cands += [str(p) for p in sorted(weights_dir.glob("*.json"))] if weights_dir.is_dir() else []
    for c in cands:
        try:
            from pipeline.qc.common import read_bytes

            card = json.loads(read_bytes(c, storage_options).decode("utf-8"))
        except Exception:
            continue
        if isinstance(card, dict) and str(card.get("sha256", "")) == want:
            return c, card
    return None


def runs_section(runs: list[dict]) -> str:
    out = ['<section id="runs"><h2>Runs, configuration and model card</h2>']
    if not runs:
        out.append('<p class="muted">no _runs/*.json found</p></section>')
        return "".join(out)
    for i, r in enumerate(reversed(runs)):
        latest = i == 0
        scalars = {k: v for k, v in r.items() if not isinstance(v, (dict, list)) and not k.startswith("_")}
        head = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(_cell(v))}</td></tr>" for k, v in scalars.items())
        blocks = []
        for k, v in r.items():
            if not isinstance(v, (dict, list)) or k.startswith("_"):
                continue
            kind = "model card" if ("model" in k or "card" in k or "segmenter" in k) else k
            blocks.append(f"<details{' open' if latest and ('config' in k or 'model' in k or 'card' in k) else ''}>"
                          f"<summary>{escape(kind if kind == k else f'{kind} ({k})')}</summary>{_json_block(v)}</details>")
        if latest:
            found = _find_model_card(r)
            seg = r.get("segmenter") if isinstance(r.get("segmenter"), Mapping) else {}
            if found:
                blocks.insert(0, f"<details open><summary>model card ({escape(found[0].rsplit('/', 1)[-1])})</summary>{_json_block(found[1])}</details>")
            elif seg and not seg.get("model_hash"):
                blocks.insert(0, f"<p>segmenter <b>{escape(str(seg.get('segmenter', '')))}</b>: weights-free (classical), no learned-model card.</p>")
        label = "latest run" if latest else "earlier run"
        out.append(
            f'<div class="run"><h3>{label}: {escape(str(r.get("run_id") or r["_file"]))}</h3>'
            f'<table class="kv">{head}</table>{"".join(blocks)}</div>'
        )
    out.append("</section>")
    return "".join(out)


def timings_section(runs, timing_df, report_times, timing_cols=()) -> str:
    out = ['<section id="timings"><h2>Timings</h2>']
    for r in reversed(runs[-1:]):
        t = next((v for k, v in r.items() if "timing" in k and isinstance(v, dict)), None)
        if t:
            flat = {k: v for k, v in _flatten(t).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            out.append(svg.bars(list(flat.items())[:25], f"run {r.get('run_id', r['_file'])}: timings", width=520))
    if timing_df is not None and timing_df.height:
        row = timing_df.row(0, named=True)
        rows = [{"column": c, **{k: row.get(f"{c}|{k}") for k in ("sum", "mean", "p50", "p95", "max")}} for c in timing_cols]
        out.append("<h3>Per-image timings (ok images)</h3>" + _table(pl.DataFrame(rows)))
    out.append("<h3>This report</h3>" + "".join(f"<p>{escape(k)}: {v:.2f}</p>" for k, v in report_times.items()))
    out.append("</section>")
    return "".join(out)


def _flatten(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1d3557;color:#fff;padding:12px 20px}header h1{margin:0;font-size:20px}
nav a{color:#cde;margin-right:14px;text-decoration:none}main{padding:8px 20px 40px}
section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:10px 16px;margin:14px 0}
h2{font-size:18px;margin:6px 0 10px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0;font-size:13px}th,td{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}table.kv th{color:#555;font-weight:600}
table.wrap td{max-width:600px;word-break:break-word}
.row{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}.muted{color:#777}.warn{color:#b00}
svg.chart{background:#fff;border:1px solid #eee}svg .ct{font-size:12px;font-weight:600}svg .tk{font-size:10px;fill:#444}
svg .ax{stroke:#888;stroke-width:1}
.gallery{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;width:420px}figure img{width:100%;border:1px solid #ccc}
figcaption{font-size:12px;word-break:break-word}.noimg{height:120px;background:#eee;display:flex;align-items:center;justify-content:center}
pre{background:#f4f4f4;padding:8px;overflow:auto;max-height:400px;font-size:12px}code{font-size:12px;color:#555}
footer{color:#888;font-size:12px;padding:0 20px 20px}
"""


def page(title: str, parts: Mapping[str, str], seconds: float) -> str:
    nav = "".join(f'<a href="#{s}">{s}</a>' for s in SECTIONS if s in parts)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(parts.get(s, "") for s in SECTIONS)
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><nav>{nav}</nav></header><main>{body}</main>"
        f"<footer>generated {now} by retsam report in {seconds:.2f} s; self-contained (no scripts, no network)</footer>"
        "</body></html>"
    )
