"""`retsam quantify`: biomarkers from masks you bring (`<stem>_<target>.png`, optional `<stem>_fov.png` and image
`<stem>.jpg`), without segmentation: one image to JSON, or a cohort through the CPU quantify stage into the same
Parquet layout as `retsam run` (images/ and segments/; there is no masks/ table: the masks are yours).

Uses `retsam_core.biomarkers.mask_files` (find_mask_sets, quantify_mask_set). Local folders only.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from pipeline import PIPELINE_VERSION
from pipeline import schema as S
from pipeline.config import PipelineConfig, field_angle_of

SEGMENTER_NAME = "user-masks"


def _mask_listing(masks: str):
    """(Listing, {stem: MaskSet}) from a folder of masks or a CSV manifest with `stem` (+ optional `folder`)."""
    import pyarrow.csv as pacsv

    from pipeline.listing import Listing
    from retsam_core.biomarkers.mask_files import find_mask_sets

    p = Path(masks)
    if p.is_dir():
        sets = find_mask_sets(p)
        stems = sorted(sets)
        table = pa.table({"image_id": stems, "path": [str(p / s) for s in stems], "read_path": [str(p) for _ in stems]})
        return Listing(table, str(p) + "/", "file")
    if p.suffix.lower() == ".csv":
        t = pacsv.read_csv(p, convert_options=pacsv.ConvertOptions(column_types={"stem": pa.string()}))
        if "stem" not in t.column_names:
            raise ValueError(f"{p}: a masks manifest needs a 'stem' column (and optionally 'folder')")
        folders = [str((p.parent / f).resolve()) if f else str(p.parent.resolve())
                   for f in (t["folder"].to_pylist() if "folder" in t.column_names else [None] * t.num_rows)]
        stems = t["stem"].to_pylist()
        out = pa.table({"image_id": stems, "path": [f"{f}/{s}" for f, s in zip(folders, stems)], "read_path": folders})
        for c in t.column_names:
            if c not in ("stem", "folder"):
                out = out.append_column(c, t[c] if c != "mm_per_px" else t[c].cast(pa.float64()))
        return Listing(out, str(p.parent) + "/", "file")
    raise FileNotFoundError(f"masks folder or manifest not found: {masks}")


class MaskSetStage:
    """CPU actor: one row per mask set -> image row (+ segments as Arrow IPC)."""

    def __init__(self, config: dict, provenance: dict):
        from pipeline.stages import quantify_stage_schema, warm_up_biomarkers

        self.cfg = config
        self.prov = provenance
        self.schema = quantify_stage_schema([], emit_masks=False)
        self.seg_schema = S.segment_schema()
        self.bio_fields = S.biomarker_fields()
        self.sets: dict[str, dict] = {}
        warm_up_biomarkers()

    def __call__(self, batch: pa.Table) -> pa.Table:
        mm = batch["mm_per_px"].to_pylist() if "mm_per_px" in batch.column_names else [None] * batch.num_rows
        rows = [self.one(i, f, m) for i, f, m in zip(batch["image_id"].to_pylist(), batch["read_path"].to_pylist(), mm)]
        return pa.Table.from_pylist(rows, schema=self.schema)

    def one(self, stem: str, folder: str, mm: float | None) -> dict[str, Any]:
        from retsam_core.biomarkers.mask_files import find_mask_sets, quantify_mask_set

        from pipeline.stages import _plain, pack_segments

        t0 = time.perf_counter()
        row: dict[str, Any] = {"image_id": stem, "status": "ok", "segmenter": SEGMENTER_NAME, "model_hash": "",
                               "pipeline_version": PIPELINE_VERSION, "run_id": self.prov["run_id"],
                               "quant_id": self.prov["quant_id"], "processed_at": datetime.now(timezone.utc),
                               "n_segment_rows": 0, "warnings": []}
        try:
            if folder not in self.sets:
                self.sets[folder] = find_mask_sets(folder)
            ms = self.sets[folder].get(stem)
            if ms is None:
                raise FileNotFoundError(f"no masks named {stem}_<target>.png in {folder}")
            mm = mm if mm is not None else self.cfg.get("mm_per_px")
            res = quantify_mask_set(ms, manifest_mm_per_px=mm, field_angle_deg=field_angle_of(self.cfg),
                                    provided=self.cfg.get("provided") or None)
            row["provided_targets"] = sorted(ms.masks)
            row["original_mm_per_px"] = mm
            for f in self.bio_fields:
                row[f.name] = _plain(res.values.get(f.name))
            notes = res.reasons.pop("_inputs", "")
            row["warnings"] = [n for n in notes.split("; ") if n]
            row["null_reasons"] = json.dumps(res.reasons, sort_keys=True) if res.reasons else None
            row["n_segment_rows"], row["segments_ipc"] = pack_segments(res.segments, stem, self.prov["quant_id"],
                                                                       self.seg_schema)
        except (ValueError, FileNotFoundError) as exc:
            row.update(status="error", error=str(exc))
        except Exception as exc:  # noqa: BLE001
            row.update(status="error", error=f"biomarker computation failed: {type(exc).__name__}: {exc}",
                       null_reasons=json.dumps({"*": traceback.format_exc(limit=3)[-500:]}))
        row["quantify_seconds"] = time.perf_counter() - t0
        return row


def quantify_masks(masks: str, output: str | None, cfg: PipelineConfig, *, mm_per_px: float | None = None,
                   as_json: bool = False, log: Callable[[str], None] = print, progress: bool = False) -> int:
    try:
        from retsam_core.biomarkers import mask_files  # noqa: F401
    except ImportError:
        log("retsam quantify: retsam_core.biomarkers.mask_files is not available in this installation")
        return 2
    listing = _mask_listing(masks)
    if output is None:  # single image (or a few) -> JSON on stdout
        if not as_json:
            raise ValueError("give an OUTPUT for a cohort, or --json to print the biomarkers")
        from retsam_core.biomarkers.mask_files import find_mask_sets, quantify_mask_set

        results = []
        for stem, folder in zip(listing.table["image_id"].to_pylist(), listing.table["read_path"].to_pylist()):
            ms = find_mask_sets(folder)[stem]
            res = quantify_mask_set(ms, manifest_mm_per_px=mm_per_px, field_angle_deg=cfg.field_angle_deg)
            results.append({"image_id": stem, "values": res.values, "reasons": res.reasons,
                            "n_segments": len(res.segments or [])})
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2, default=_json_default))
        return 0
    return 0 if quantify_cohort(listing, output, cfg, mm_per_px=mm_per_px, log=log, progress=progress) else 1


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def quantify_cohort(listing, output: str, cfg: PipelineConfig, *, mm_per_px: float | None = None,
                    log: Callable[[str], None] = print, progress: bool = False) -> dict:
    from pipeline.output import Output, WriterLock
    from pipeline.runner import new_run_id
    from pipeline.storage import resolve_storage_options

    run_id = new_run_id()
    with WriterLock(Output(output, resolve_storage_options(output, cfg.storage_options)), run_id):
        return _quantify_cohort(listing, output, cfg, run_id, mm_per_px=mm_per_px, log=log, progress=progress)


def _quantify_cohort(listing, output: str, cfg: PipelineConfig, run_id: str, *, mm_per_px: float | None,
                     log: Callable[[str], None], progress: bool) -> dict:
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy

    from pipeline.output import Output
    from pipeline.resources import ensure_ray, plan_resources
    from pipeline.runner import consume_and_commit
    from pipeline.selection import select_todo
    from pipeline.storage import resolve_storage_options

    t0 = time.time()
    out = Output(output, resolve_storage_options(output, cfg.storage_options))
    out.cleanup()
    todo, skipped, _ = select_todo(listing, out.read_images(["image_id", "model_hash", "status"]))
    log(f"{len(listing)} mask sets; {skipped} already in {output}; {todo.num_rows} to quantify")
    counts = {"processed": 0, "ok": 0, "error": 0, "ungradable": 0, "skipped": skipped, "batches": 0}
    if todo.num_rows:
        ensure_ray(cfg, progress=progress)
        plan = plan_resources(cfg, log)
        prov = {"segmenter": SEGMENTER_NAME, "model_hash": "", "provided_targets": [], "run_id": run_id}
        cfg_d = {**cfg.to_dict(), "mm_per_px": mm_per_px}
        cfg_d.pop("storage_options", None)

        def on_commit(info):
            counts["processed"] += info["images"]
            counts["batches"] += 1
            for k in ("ok", "error", "ungradable"):
                counts[k] += info["counts"].get(k, 0)
            log(f"committed batch {info['batch_id']}: {info['images']} mask sets {info['counts']}")

        for p in range(math.ceil(todo.num_rows / cfg.dataset_size)):
            part = todo.slice(p * cfg.dataset_size, cfg.dataset_size)
            cols = ["image_id", "read_path"] + (["mm_per_px"] if "mm_per_px" in part.column_names else [])
            ds = ray.data.from_arrow(part.select(cols)).repartition(max(1, min(part.num_rows, 64)))
            ds = ds.map_batches(MaskSetStage, fn_constructor_kwargs=dict(
                config=cfg_d, provenance={**prov, "quant_id": f"{run_id}-{p:04d}"}),
                compute=ActorPoolStrategy(min_size=1, max_size=max(plan["segment_actors"], plan["quantify_actors"])),
                num_cpus=plan["quantify_num_cpus"], batch_size=int(cfg.quantify_batch_size), batch_format="pyarrow")
            consume_and_commit(ds, part, listing, out, cfg, prov, run_id, p, lambda n: None, on_commit)
    elapsed = time.time() - t0
    out.write_json(out.path("_runs", f"{run_id}.json"), {"run_id": run_id, "kind": "quantify", "counts": counts,
                                                         "elapsed_s": elapsed, "config": cfg.redacted()})
    log(f"summary: quantified {counts['processed']} mask sets ({counts['error']} failed), skipped {skipped}, "
        f"{elapsed:.1f} s")
    return counts
