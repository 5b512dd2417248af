"""`retsam reprocess OUTPUT`: recompute biomarkers from the stored masks (no decoding, no segmentation, no GPU).

Per committed batch: masks -> QuantifyStage actors -> new segments files (prefixed with the new quant_id) ->
the batch's images file replaced atomically (it names the current quant_id) -> old segments files deleted.
Killed at any point, readers see either the old or the new biomarkers of a batch, never a mix (scan() joins
segments on quant_id; the next run deletes the leftovers).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import PIPELINE_VERSION
from pipeline import schema as S
from pipeline.config import PipelineConfig
from pipeline.output import Output
from pipeline.resources import ensure_ray, plan_resources
from pipeline.runner import library_versions, new_run_id, posixpath_join
from pipeline.storage import resolve_storage_options
from retsam_core.biomarkers.scale import GIVEN_SCALE_SOURCES

# columns recomputed by a reprocess (everything else in the images row is kept as it was)
RECOMPUTED = {"null_reasons", "n_segment_rows", "quant_id", "quantify_seconds", "original_mm_per_px"}


def reprocess_output(output_uri: str, cfg: PipelineConfig | None = None, *, batches: list[str] | None = None,
                     progress: bool = False, log: Callable[[str], None] = print) -> dict:
    from pipeline.output import WriterLock

    cfg = cfg or PipelineConfig()
    run_id = new_run_id()
    with WriterLock(Output(output_uri, resolve_storage_options(output_uri, cfg.storage_options)), run_id):
        return _reprocess_output(output_uri, cfg, run_id, batches=batches, progress=progress, log=log)


def _reprocess_output(output_uri: str, cfg: PipelineConfig, run_id: str, *, batches: list[str] | None,
                      progress: bool, log: Callable[[str], None]) -> dict:
    """Recompute biomarkers for every committed batch (or `batches`) in ONE Ray Dataset (actors start once);
    outputs arrive in batch order (preserve_order) and each batch is swapped in as soon as it is complete."""
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy

    from pipeline.commit import stage_group
    from pipeline.stages import QuantifyStage

    t0 = time.time()
    quant_id = f"{run_id}-q"
    out = Output(output_uri, resolve_storage_options(output_uri, cfg.storage_options))
    out.cleanup()
    todo = [b for b in out.committed_batches() if batches is None or b in batches]
    counts = {"batches": 0, "images": 0, "recomputed": 0, "failed": 0}
    if not todo:
        log(f"nothing to reprocess in {output_uri}")
        return {**counts, "run_id": run_id}
    ensure_ray(cfg, progress=progress)
    plan = plan_resources(cfg, log)
    files: list[str] = []
    ends: list[int] = []
    targets: list[str] | None = None
    for b in todo:
        rows = 0
        for p in out.parquet_files(out.batch_dir("masks", b)):
            with out.fs.open(p, "rb") as f:
                meta = pq.ParquetFile(f).metadata
            if targets is None:
                targets = [n[len("mask_"):] for n in meta.schema.to_arrow_schema().names if n.startswith("mask_")]
            if meta.num_rows:
                files.append(p)
                rows += meta.num_rows
        ends.append((ends[-1] if ends else 0) + rows)
    scale_inputs_path = _write_scale_inputs(out, todo, out.staging(f"reprocess-{run_id}-scale-inputs.parquet"))
    cfg_d = cfg.to_dict()
    cfg_d.pop("storage_options", None)
    cfg_d["emit_masks"] = False
    prov = {"segmenter": None, "model_hash": None, "provided_targets": None, "pipeline_version": PIPELINE_VERSION,
            "run_id": run_id, "quant_id": quant_id}
    stage_task = ray.remote(stage_group).options(num_cpus=cfg.io_num_cpus)
    img_cols = [f.name for f in S.image_schema() if f.name != "path"]
    queue: list[tuple] = []  # (ref, first row, end row) in stream order
    cum = 0
    bi = 0

    def commit(k: int) -> None:
        b = todo[k]
        start = ends[k - 1] if k else 0
        refs = [r for r, s, e in queue if e > start and s < ends[k]]
        old_files = out.parquet_files(out.batch_dir("images", b))
        old = pa.concat_tables([out.read_parquet(p) for p in old_files], promote_options="permissive")
        stage = out.staging(f"reprocess-{run_id}-{b}")
        new = None
        if refs:
            new = ray.get(stage_task.remote(refs, out.fs, stage, targets or [], img_cols, cfg.compression,
                                            cfg.masks_rows_per_file, cfg.segments_rows_per_file, "",
                                            old["image_id"].to_pylist()))
        merged, recomputed, failed = merge_images(old, new, quant_id)
        # publish: new segments beside the old, then the images file (switches quant_id), then delete the old
        out.publish_dir(posixpath_join(stage, "segments"), out.batch_dir("segments", b), prefix=f"{quant_id}-")
        out.write_table(merged, old_files[0], cfg.compression)
        for p in old_files[1:]:
            out.rm(p)
        for p in out.parquet_files(out.batch_dir("segments", b)):
            if not p.rsplit("/", 1)[-1].startswith(f"{quant_id}-"):
                out.rm(p)
        out.rm(stage)
        counts["batches"] += 1
        counts["images"] += old.num_rows
        counts["recomputed"] += recomputed
        counts["failed"] += failed
        log(f"batch {k + 1}/{len(todo)} ({b}) reprocessed: {recomputed} recomputed, {failed} failed")

    if files:
        ds = ray.data.read_parquet(files, filesystem=None if out.local else out.fs)
        ds = ds.map_batches(
            QuantifyStage, fn_constructor_kwargs=dict(config=cfg_d, lookup_path=None, fs=out.fs, provenance=prov,
                                                      targets=targets or [], scale_inputs_path=scale_inputs_path),
            compute=ActorPoolStrategy(min_size=1, max_size=max(plan["segment_actors"], plan["quantify_actors"])),
            num_cpus=plan["quantify_num_cpus"], batch_size=int(cfg.quantify_batch_size), batch_format="pyarrow")
        ds.context.execution_options.preserve_order = True  # batches come out contiguous, in order
        for bundle in ds.iter_internal_ref_bundles():
            for entry in bundle.blocks:
                n = entry.metadata.num_rows or 0
                queue.append((entry.ref, cum, cum + n))
                cum += n
            while bi < len(todo) and cum >= ends[bi]:
                commit(bi)
                queue = [q for q in queue if q[2] > ends[bi]]
                bi += 1
    while bi < len(todo):  # batches without masks (or an empty stream)
        commit(bi)
        bi += 1
    out.rm(scale_inputs_path)
    elapsed = time.time() - t0
    out.write_json(out.path("_runs", f"{run_id}.json"), {
        "run_id": run_id, "kind": "reprocess", "output": output_uri, "config": cfg.redacted(),
        "finished_at": datetime.now(timezone.utc).isoformat(), "counts": counts, "elapsed_s": elapsed,
        "versions": library_versions(), "batches": todo})
    log(f"summary: reprocessed {counts['recomputed']} images in {counts['batches']} batches "
        f"({counts['failed']} failed), {elapsed:.1f} s")
    return {**counts, "run_id": run_id, "elapsed_s": elapsed}


def _write_scale_inputs(out: Output, batches: list[str], path: str) -> str:
    """Write what a reprocess needs to scale an image as the run did, from the image rows: the stored original mm/px
    with its scale_source where the input gave it (GIVEN_SCALE_SOURCES) or where the row has no scale_source (an
    older output: reused as before), and the DICOM header's field of view. Images left out were estimated."""
    images = out.read_images(["image_id", "scale_source", "original_mm_per_px", "dicom_field_of_view_deg"], batches)
    source = images["scale_source"].cast(pa.string())
    reuse = pc.or_(pc.is_null(source), pc.fill_null(pc.is_in(source, pa.array(GIVEN_SCALE_SOURCES)), False))
    fov = images["dicom_field_of_view_deg"].cast(pa.float64())
    table = pa.table({
        "image_id": images["image_id"],
        "original_mm_per_px": pc.if_else(reuse, images["original_mm_per_px"].cast(pa.float64()),
                                         pa.scalar(None, pa.float64())),
        "scale_source": source,
        "dicom_field_of_view_deg": fov,
    }).filter(pc.or_(reuse, pc.is_valid(fov)))
    out.write_table(table, path)
    return path


def merge_images(old: pa.Table, new: pa.Table | None, quant_id: str) -> tuple[pa.Table, int, int]:
    """Old rows with their biomarker columns replaced by the new computation (rows without masks kept as is)."""
    base_names = {f.name for f in S.IMAGE_BASE_FIELDS}
    bio = S.biomarker_fields()
    bio_names = {f.name for f in bio}
    old_bio_names = set()
    try:
        from retsam_core.biomarkers import catalogue

        old_bio_names = {f.name for f in catalogue.image_schema()}
    except ImportError:
        pass
    meta_fields = [old.schema.field(c) for c in old.column_names
                   if c not in base_names and c not in bio_names and c not in old_bio_names and c != "batch"]
    schema = S.image_schema(meta_fields)
    old = S.conform(old, schema)
    ids = old["image_id"].to_pylist()
    if new is None or new.num_rows == 0:
        cols = {f.name: old[f.name] for f in schema}
        cols["quant_id"] = pa.array([quant_id] * old.num_rows, pa.string())
        return pa.Table.from_pydict(cols, schema=schema), 0, 0
    pos = {iid: i for i, iid in enumerate(new["image_id"].to_pylist())}
    idx = pa.array([pos.get(i) for i in ids], pa.int64())
    fresh = new.take(idx)
    has_new = pc.is_valid(idx)
    new_status = fresh["status"]
    failed_mask = pc.and_(has_new, pc.equal(pc.fill_null(new_status, ""), "error"))
    cols = {}
    for f in schema:
        if f.name in bio_names or f.name in RECOMPUTED:
            if f.name in fresh.column_names:
                cols[f.name] = pc.if_else(has_new, fresh[f.name].cast(f.type), old[f.name])
            else:
                cols[f.name] = old[f.name]
        else:
            cols[f.name] = old[f.name]
    cols["quant_id"] = pa.array([quant_id] * old.num_rows, pa.string())
    cols["status"] = pc.if_else(failed_mask, "error", old["status"])
    cols["error"] = pc.if_else(failed_mask, fresh["error"], old["error"])
    cols["processed_at"] = pc.if_else(has_new, fresh["processed_at"], old["processed_at"])
    merged = pa.Table.from_pydict(cols, schema=schema)
    return merged, int(pc.sum(has_new.cast(pa.int64())).as_py() or 0), int(pc.sum(failed_mask.cast(pa.int64())).as_py() or 0)
