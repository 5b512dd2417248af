"""`retsam run`: listing -> anti-join (before any bytes are read) -> commit batches through Ray Data -> Parquet.

Each commit batch is its own small Dataset (bounded block metadata: Ray keeps input paths per block), processed by
segmentation actors and quantification actors, materialised in the object store, split into the three tables,
written to staging and published with the images file last (see pipeline.output).
"""

from __future__ import annotations

import math
import platform
import socket
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import PIPELINE_VERSION
from pipeline import schema as S
from pipeline.config import PipelineConfig
from pipeline.listing import RESERVED, Listing
from pipeline.output import Output
from pipeline.resources import ensure_ray, plan_resources
from pipeline.selection import Redo, plan_work
from pipeline.storage import filesystem, resolve_storage_options


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def segmenter_provenance(cfg: PipelineConfig) -> dict[str, Any]:
    from retsam_core.segmenter import load_segmenter

    seg = load_segmenter(cfg.segmenter, device="cpu")
    info = seg.info
    prov = {"segmenter": f"{info.name}-{info.version}", "model_hash": info.weights_hash or "",
            "provided_targets": list(info.provides), "untrained": list(info.untrained), "resolution": info.resolution}
    choices = getattr(seg, "choices", None)  # the hybrid default: which segmenter supplies each target, and why
    if choices:
        prov["target_sources"] = {t: {"source": c.source, "reason": c.reason} for t, c in choices.items()}
    if hasattr(seg, "finisher"):  # its host-side step, run by the CPU actors (retsam_core.finishing)
        prov["finisher"] = seg.finisher().to_dict()
    return prov


# Main -----------------------------------------------------------------------------------------------------
def run_cohort(input_uri: str, output_uri: str, cfg: PipelineConfig | None = None, *, force: bool = False,
               model_hash_not: str | None = None, retry_errors: bool = False, limit: int | None = None,
               progress: bool | None = None, log: Callable[[str], None] = print, run_id: str | None = None,
               break_lock: bool = False, reprocess_changed: str | None = None) -> dict:
    """Process every image of INPUT not yet in OUTPUT; returns the summary (see the module docstring).

    `reprocess_changed` ("size" or "sha256", pipeline.changes) also processes again the images whose file changed
    on storage since their row was written; without it such files are counted and named, not processed."""
    from pipeline.output import WriterLock

    cfg = cfg or PipelineConfig()
    run_id = run_id or new_run_id()
    redo = Redo(force, model_hash_not, retry_errors, reprocess_changed)
    out = Output(output_uri, resolve_storage_options(output_uri, cfg.storage_options))
    with WriterLock(out, run_id, break_lock=break_lock):
        return _run_cohort(input_uri, output_uri, cfg, redo=redo, limit=limit, progress=progress, log=log,
                           run_id=run_id)


def dry_run(input_uri: str, output_uri: str, cfg: PipelineConfig | None = None, *, force: bool = False,
            model_hash_not: str | None = None, retry_errors: bool = False, limit: int | None = None,
            reprocess_changed: str | None = None, log: Callable[[str], None] = print) -> dict:
    """What `run_cohort` with these options would process, without writing anything or starting Ray."""
    cfg = cfg or PipelineConfig()
    out = Output(output_uri, resolve_storage_options(output_uri, cfg.storage_options))
    redo = Redo(force, model_hash_not, retry_errors, reprocess_changed)
    work = plan_work(input_uri, out, resolve_storage_options(input_uri, cfg.storage_options), redo, limit, log)
    return {**work.summary(), "input": input_uri, "output": output_uri, "options": {**redo.to_dict(), "limit": limit}}


def _run_cohort(input_uri: str, output_uri: str, cfg: PipelineConfig, *, redo: Redo, limit: int | None,
                progress: bool | None, log: Callable[[str], None], run_id: str) -> dict:
    t_start = time.time()
    progress = sys.stderr.isatty() if progress is None else progress
    timings: dict[str, float] = {}

    out_opts = resolve_storage_options(output_uri, cfg.storage_options)
    in_opts = resolve_storage_options(input_uri, cfg.storage_options)
    out = Output(output_uri, out_opts)
    t = time.time()
    cleaned = out.cleanup()
    deduped = out.dedupe()
    timings["recovery_s"] = time.time() - t
    if any(cleaned.values()) or deduped:
        log(f"recovered from an earlier interrupted run: {cleaned}, duplicate rows dropped: {deduped}")

    work = plan_work(input_uri, out, in_opts, redo, limit, log)
    timings.update(work.timings)
    listing, todo, skipped, superseding, changes = work.listing, work.todo, work.skipped, work.superseding, work.changes
    log(f"input {input_uri}: {len(listing)} images listed"
        + (f" ({listing.duplicates_dropped} duplicate manifest rows dropped)" if listing.duplicates_dropped else "")
        + listing.other_files_note() + f"; {skipped} already in {output_uri}; {todo.num_rows} to process"
        + (f" ({superseding} replacing existing rows)" if superseding else ""))

    counts = {"listed": len(listing), "other_files_not_listed": listing.other_files,
              "skipped": skipped - superseding if superseding else skipped, "processed": 0,
              "ok": 0, "error": 0, "ungradable": 0, "batches": 0, "superseded": superseding,
              "changed_on_storage": len(changes)}
    counts["skipped"] = len(listing) - todo.num_rows if not limit else skipped
    record: dict[str, Any] = {
        "run_id": run_id, "status": "running", "started_at": datetime.now(timezone.utc).isoformat(),
        "input": input_uri, "output": output_uri, "config": cfg.redacted(), "pipeline_version": PIPELINE_VERSION,
        "options": {**redo.to_dict(), "limit": limit},
        "host": socket.gethostname(), "versions": library_versions(),
    }
    stage_s = {"segment_s": 0.0, "quantify_s": 0.0, "write_s": 0.0, "pipeline_s": 0.0}
    batches: list[dict[str, Any]] = []
    if todo.num_rows:
        ensure_ray(cfg, progress=progress)
        plan = plan_resources(cfg, log)
        log(f"actors: {plan['segment_actors']} segmentation ({plan['num_gpus']:g} GPU, {plan['segment_num_cpus']:g} CPU(s) "
            f"each), up to {plan['quantify_actors']} quantify ({plan['quantify_num_cpus']:g} CPU(s) each)")
        prov = segmenter_provenance(cfg)
        record.update(resources=plan, segmenter=prov)
        out.write_json(out.path("_runs", f"{run_id}.json"), record)
        bar = _progress_bar(todo.num_rows, progress)
        t_proc = time.time()
        n_parts = math.ceil(todo.num_rows / cfg.dataset_size)

        def on_rows(nrows: int) -> None:
            if bar is not None:
                bar.update(nrows)

        def on_commit(info: dict) -> None:
            batches.append(info)
            for key in ("ok", "error", "ungradable"):
                counts[key] += info["counts"].get(key, 0)
            counts["processed"] += info["images"]
            counts["batches"] += 1
            for key in stage_s:
                stage_s[key] += info.get(key, 0.0)
            rate = counts["processed"] / max(1e-9, time.time() - t_proc)
            if bar is not None:
                bar.set_postfix(ok=counts["ok"], failed=counts["error"], ungradable=counts["ungradable"])
            msg = (f"committed batch {info['batch_id']}: {info['images']} images {info['counts']}; "
                   f"{counts['processed']}/{todo.num_rows} done, {rate:.2f} img/s")
            (bar.write if bar is not None else log)(msg)

        for p in range(n_parts):
            part = todo.slice(p * cfg.dataset_size, cfg.dataset_size)
            process_dataset(part, listing, out, cfg, plan, prov, run_id, p, in_opts, on_rows, on_commit)
        if bar is not None:
            bar.close()
        timings["processing_s"] = time.time() - t_proc
        if superseding:
            counts["superseded_rows_dropped"] = out.dedupe()
    if counts["processed"] and cfg.qc_overlays != "none":
        t = time.time()
        counts["qc_overlays"] = len(_render_qc_overlays(output_uri, out_opts, cfg, run_id, log))
        timings["qc_overlays_s"] = time.time() - t
    elapsed = time.time() - t_start
    timings["total_s"] = elapsed
    rate = counts["processed"] / max(1e-9, timings.get("processing_s", elapsed)) if counts["processed"] else 0.0
    summary = {**counts, "failed": counts["error"], "images_per_s": rate, "elapsed_s": elapsed, "run_id": run_id,
               "output": output_uri, "timings": {**timings, **stage_s}}
    record.update(status="finished", finished_at=datetime.now(timezone.utc).isoformat(), counts=counts,
                  timings={**timings, **stage_s}, batches=batches)
    if counts["processed"]:
        out.write_json(out.path("_runs", f"{run_id}.json"), record)
    log(f"summary: processed {counts['processed']}, skipped {counts['skipped']} (already done), "
        f"failed {counts['error']}, ungradable {counts['ungradable']}, ok {counts['ok']}, "
        f"{rate:.2f} images/s, {elapsed:.1f} s total")
    return summary


def _render_qc_overlays(output_uri: str, out_opts: dict, cfg: PipelineConfig, run_id: str,
                        log: Callable[[str], None]) -> list[str]:
    """QC overlays of this run's images (a sample or all) from the stored masks; a failure here never fails the run."""
    try:
        from pipeline.qc.overlays import render_overlays

        written = render_overlays(output_uri, None, out_opts, mode=cfg.qc_overlays, n_sample=cfg.qc_sample_size,
                                  run_id=run_id)
    except Exception as exc:  # overlays are a convenience: the Parquet tables are already committed
        log(f"warning: QC overlays not rendered: {type(exc).__name__}: {exc}")
        return []
    if written:
        log(f"QC overlays: {len(written)} written under {output_uri.rstrip('/')}/qc/")
    return written


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="img", desc="retsam run", dynamic_ncols=True)


def process_dataset(part: pa.Table, listing: Listing, out: Output, cfg: PipelineConfig, plan: dict, prov: dict,
                    run_id: str, ds_index: int, in_opts: dict, on_rows: Callable[[int], None],
                    on_commit: Callable[[dict], None]) -> None:
    """One Ray Dataset over `part` (<= dataset_size images): actors are created once for it, and its output stream is
    cut into commit batches of about `shard_size` images, each published as soon as it is complete."""
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy

    from pipeline.stages import QuantifyStage, SegmentStage

    cfg_d = cfg.to_dict()
    cfg_d.pop("storage_options", None)
    cfg_d["segment_num_cpus"] = plan["segment_num_cpus"]  # the actors' threads: the planned reservation
    in_fs = filesystem(listing.root, in_opts)
    lookup_cols = ["image_id", "read_path"] + (["mm_per_px"] if "mm_per_px" in part.column_names else [])
    lookup_path = out.path("_staging", f"lookup-{run_id}-{ds_index:04d}.parquet")
    out.write_table(part.select(lookup_cols), lookup_path)
    read_paths = part["read_path"].to_pylist()
    n = len(read_paths)
    ds = ray.data.read_binary_files(
        read_paths, include_paths=True, filesystem=None if listing.protocol == "file" else in_fs,
        ignore_missing_paths=True, num_cpus=cfg.io_num_cpus,
        override_num_blocks=max(1, min(n, math.ceil(n / max(cfg.segment_batch_size, 1)), 2000)))
    ds = ds.map_batches(
        SegmentStage,
        fn_constructor_kwargs=dict(config=cfg_d, lookup_path=lookup_path, fs=out.fs, root_path=listing.root_path,
                                   protocol=listing.protocol, num_gpus=plan["num_gpus"]),
        compute=ActorPoolStrategy(size=plan["segment_actors"]),
        num_gpus=plan["num_gpus"], num_cpus=plan["segment_num_cpus"],
        batch_size=int(cfg.segment_batch_size), batch_format="pyarrow", zero_copy_batch=True)
    ds = ds.map_batches(
        QuantifyStage,
        fn_constructor_kwargs=dict(config=cfg_d, lookup_path=lookup_path, fs=out.fs, targets=prov["provided_targets"],
                                   finisher=prov.get("finisher"),
                                   provenance={**prov, "pipeline_version": PIPELINE_VERSION, "run_id": run_id,
                                               "quant_id": f"{run_id}-{ds_index:04d}"}),
        compute=ActorPoolStrategy(min_size=1, max_size=plan["quantify_actors"]),
        num_cpus=plan["quantify_num_cpus"], batch_size=int(cfg.quantify_batch_size), batch_format="pyarrow",
        zero_copy_batch=True)

    consume_and_commit(ds, part, listing, out, cfg, prov, run_id, ds_index, on_rows, on_commit)
    out.rm(lookup_path)


def consume_and_commit(ds, part: pa.Table, listing: Listing, out: Output, cfg: PipelineConfig, prov: dict,
                       run_id: str, ds_index: int, on_rows: Callable[[int], None],
                       on_commit: Callable[[dict], None]) -> None:
    """Stream the quantified blocks of `ds` (over the listing rows `part`) and publish them in commit batches of
    about `shard_size` images; images that never came out of the stream get an error row."""
    import ray

    from pipeline.commit import stage_group

    index = {iid: i for i, iid in enumerate(part["image_id"].to_pylist())}
    seen = [False] * part.num_rows
    img_cols = [f.name for f in S.image_schema() if f.name != "path"]
    stage_task = ray.remote(stage_group).options(num_cpus=cfg.io_num_cpus)
    state = {"k": 0, "t": time.time()}

    def commit(refs: list, missing: list[int] | None = None) -> None:
        t0 = time.time()
        batch_id = f"{run_id}-{ds_index:04d}{state['k']:04d}"
        state["k"] += 1
        stage = out.staging(batch_id)
        if refs:
            results = ray.get(stage_task.remote(refs, out.fs, stage, prov["provided_targets"], img_cols,
                                                cfg.compression, cfg.masks_rows_per_file, cfg.segments_rows_per_file))
            got = results["image_id"].to_pylist()
            rows = [index.get(i) for i in got]
            if None in rows:  # cannot happen unless a reader renames paths; never lose the batch over it
                keep = [j for j, r_ in enumerate(rows) if r_ is not None]
                log_unknown = [got[j] for j, r_ in enumerate(rows) if r_ is None][:5]
                print(f"warning: ignoring rows for ids not in the listing: {log_unknown}", file=sys.stderr)
                results = results.take(pa.array(keep, pa.int64()))
                rows = [rows[j] for j in keep]
        else:
            results, rows = None, list(missing or [])
        for r in rows:
            seen[r] = True
        images = assemble_images(part.take(pa.array(rows, pa.int64())), results, listing, defaults={
            "run_id": run_id, "pipeline_version": PIPELINE_VERSION, "segmenter": prov["segmenter"],
            "model_hash": prov["model_hash"], "quant_id": f"{run_id}-{ds_index:04d}",
            "processed_at": datetime.now(timezone.utc)})
        # publish: segments and masks first, the images file (commit marker) last
        out.publish_dir(posixpath_join(stage, "segments"), out.batch_dir("segments", batch_id), prefix=f"{images['quant_id'][0]}-" if results is not None and images.num_rows else "")
        out.publish_dir(posixpath_join(stage, "masks"), out.batch_dir("masks", batch_id))
        out.write_table(images, posixpath_join(out.batch_dir("images", batch_id), "part-0.parquet"), cfg.compression)
        out.rm(stage)
        counts = {k: int(v) for k, v in zip(*_value_counts(images["status"]))}
        on_commit({"batch_id": batch_id, "images": images.num_rows, "counts": counts,
                   "segment_rows": int(pc.sum(images["n_segment_rows"]).as_py() or 0),
                   "pipeline_s": t0 - state["t"], "write_s": time.time() - t0,
                   "segment_s": float(pc.sum(images["segment_seconds"]).as_py() or 0.0),
                   "quantify_s": float(pc.sum(images["quantify_seconds"]).as_py() or 0.0)})
        state["t"] = time.time()

    pending: list = []
    pending_rows = 0
    for bundle in ds.iter_internal_ref_bundles():
        for entry, sl in zip(bundle.blocks, bundle.slices):
            if sl is not None:  # never produced by map_batches; be safe anyway
                entry_ref = ray.put(ray.get(entry.ref).slice(sl.start_offset, sl.end_offset - sl.start_offset))
                pending.append(entry_ref)
            else:
                pending.append(entry.ref)
        rows = bundle.num_rows() or 0
        pending_rows += rows
        on_rows(rows)
        if pending_rows >= cfg.shard_size:
            commit(pending)
            pending, pending_rows = [], 0
    if pending:
        commit(pending)
    missing = [i for i, s_ in enumerate(seen) if not s_]
    if missing:  # the reader returned no bytes (deleted/unreadable): one error row each
        for j in range(0, len(missing), cfg.shard_size):
            commit([], missing[j: j + cfg.shard_size])


def posixpath_join(*parts: str) -> str:
    import posixpath

    return posixpath.join(*parts)


def _value_counts(arr) -> tuple[list, list]:
    vc = pc.value_counts(arr)
    return vc.field("values").to_pylist(), vc.field("counts").to_pylist()


def assemble_images(shard: pa.Table, results: pa.Table | None, listing: Listing, defaults: dict | None = None) -> pa.Table:
    """Listing rows (with manifest metadata) + stage results; images missing from the results were unreadable."""
    meta_names = [c for c in shard.column_names if c not in RESERVED]
    meta_fields = [shard.schema.field(c) for c in meta_names]
    schema = S.image_schema(meta_fields)
    ids = shard["image_id"].to_pylist()
    if results is not None and results.num_rows:
        pos = {iid: i for i, iid in enumerate(results["image_id"].to_pylist())}
        idx = pa.array([pos.get(i) for i in ids], pa.int64())
        res = results.take(idx)
    else:
        res = S.conform(pa.table({"image_id": pa.array([], pa.string())}), pa.schema([f for f in schema if f.name not in meta_names and f.name != "path"])).take(pa.array([None] * len(ids), pa.int64()))
    cols: dict[str, Any] = {}
    for f in schema:
        if f.name in ("image_id", "path") or f.name in meta_names:
            cols[f.name] = shard[f.name]
        elif f.name in res.column_names:
            cols[f.name] = res[f.name]
    missing = pc.is_null(res["status"]) if "status" in res.column_names else pa.array([True] * len(ids))
    cols["status"] = pc.if_else(missing, "error", res["status"])
    cols["error"] = pc.if_else(missing, "file not found or unreadable (no bytes returned by the reader)", res["error"])
    n = len(ids)
    for name, value in (defaults or {}).items():  # provenance for rows that never reached a stage
        f = schema.field(name)
        filler = pa.array([value] * n, f.type)
        cols[name] = pc.if_else(pc.is_null(cols[name]), filler, cols[name]) if name in cols and f.type != pa.list_(pa.string()) else cols.get(name, filler)
    t = pa.table(cols)
    return S.conform(t, schema)


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("ray", "pyarrow", "numpy", "torch", "opencv-python-headless", "scikit-image", "skan", "polars",
                 "s3fs", "fsspec", "retsam"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    import retsam_core

    out["retsam_core"] = getattr(retsam_core, "__version__", "")
    out["pipeline"] = PIPELINE_VERSION
    return out
