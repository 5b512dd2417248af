"""`retsam status OUTPUT`: where an output stands, from its own files (no input listing, no Ray).

The questions asked of a long-lived cohort output: how many images in each status, which models and pipeline
versions wrote them (a cohort half redone after new weights), which runs wrote it and whether one was cut short or
is writing now (its lock).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from pipeline.output import Output, WriterLock
from pipeline.qc.report_sections import load_runs
from pipeline.scan import scan


def output_status(output_uri: str, storage_options: dict | None = None, last_runs: int = 5) -> dict[str, Any]:
    out = Output(output_uri, storage_options)
    if not out.fs.exists(out.path("")):
        return {"output": output_uri, "exists": False}
    images = scan(output_uri, storage_options or None)["images"]
    names = images.collect_schema().names()
    summary: dict[str, Any] = {"output": output_uri, "exists": True, "images": 0, "batches": 0, "by_status": {}, "by_model": [],
                               "by_pipeline_version": {}}
    if "status" in names:
        queries = {"by_status": images.group_by("status").len().sort("status")}
        if "batch" in names:
            queries["batches"] = images.select(pl.col("batch").n_unique())
        if {"segmenter", "model_hash"} <= set(names):
            queries["by_model"] = images.group_by("segmenter", "model_hash").len().sort("len", descending=True)
        if "pipeline_version" in names:
            queries["by_pipeline_version"] = images.group_by("pipeline_version").len().sort("pipeline_version")
        res = dict(zip(queries, pl.collect_all(list(queries.values()))))  # group counts only: no row is held
        summary["by_status"] = dict(res["by_status"].iter_rows())
        summary["images"] = int(res["by_status"]["len"].sum())
        summary["batches"] = res["batches"].item() if "batches" in res else 0
        if "by_model" in res:
            summary["by_model"] = [{"segmenter": s, "model_hash": h or "", "images": n} for s, h, n in res["by_model"].iter_rows()]
        if "by_pipeline_version" in res:
            summary["by_pipeline_version"] = dict(res["by_pipeline_version"].iter_rows())
    writing = WriterLock(out, run_id="").live_holder()
    summary["writing_now"] = writing
    summary["runs"] = _runs(output_uri, storage_options, writing, last_runs)
    return summary


def _runs(output_uri: str, storage_options: dict | None, writing: dict | None, last: int) -> list[dict[str, Any]]:
    """The latest run records, newest first; a record still marked running with no live lock was cut short."""
    runs = []
    for rec in reversed(load_runs(output_uri, storage_options, limit=last)):
        if "_error" in rec:
            runs.append({"run_id": rec["_file"][:-5], "state": rec["_error"]})
            continue
        state = rec.get("status", "?")
        if state == "running" and not (writing and writing.get("run_id") == rec.get("run_id")):
            state = "interrupted (killed or failed: rerun to resume)"
        counts = rec.get("counts") or {}
        runs.append({"run_id": rec.get("run_id"), "state": state, "started_at": rec.get("started_at"),
                     "finished_at": rec.get("finished_at"), "processed": counts.get("processed"),
                     "failed": counts.get("error"), "segmenter": (rec.get("segmenter") or {}).get("segmenter")})
    return runs


def status_text(s: dict[str, Any]) -> str:
    if not s["exists"]:
        return f"{s['output']}: no output there"
    lines = [f"{s['output']}: {s['images']} images in {s['batches']} batches"]
    lines += [f"  {status:<11} {n}" for status, n in s["by_status"].items()]
    if len(s["by_model"]) > 0:
        lines.append("written by")
        lines += [f"  {m['segmenter']} {m['model_hash'][:12] or '(no weights)'}: {m['images']} images" for m in s["by_model"]]
    if len(s["by_pipeline_version"]) > 1:
        lines.append("pipeline versions: " + ", ".join(f"{v} ({n})" for v, n in s["by_pipeline_version"].items()))
    if s["writing_now"]:
        w = s["writing_now"]
        lines.append(f"being written now by run {w.get('run_id')} (host {w.get('host')}, pid {w.get('pid')})")
    if s["runs"]:
        lines.append("latest runs")
        for r in s["runs"]:
            done = f", processed {r['processed']}, failed {r['failed']}" if r.get("processed") is not None else ""
            lines.append(f"  {r['run_id']}: {r['state']}{done}")
    return "\n".join(lines)

