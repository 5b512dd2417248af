"""Ray Data stages. Each is a callable class run on an actor pool; per-image failures become rows, never block
failures, so that good images in the same batch always go through.

Segment: compressed bytes -> decode (JPEG draft) -> preprocess -> segmenter's network part (loaded once per actor)
-> PNG masks, plus the evidence its host-side finishing reads (`retsam_core.finishing`).
Quantify: PNG masks -> finishing (A/V separation on the skeleton, post-processing, classical fovea: CPU work kept off
the GPU actors) -> scale -> compute_biomarkers -> image row + segments (Arrow IPC) + finished masks passthrough.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
import traceback
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import schema as S
from pipeline.config import field_angle_of
from pipeline.pixel_size import field_angle, given_pixel_size, load_lookup, load_scale_inputs, make_scale
from retsam_core.dicom_io import HEADER_FIELDS
from retsam_core.finishing import EVIDENCE, Finisher, PendingMasks, evidence_support

SEGMENT_OUT_EXTRA = [
    pa.field("read_path", pa.string()),
    pa.field("fov", pa.binary()),
    pa.field("canvas_rgb", pa.binary()),  # the canvas, raw (S, S, 3) uint8: exact for the finishing, no encode cost
    pa.field("masks_pending", pa.bool_()),  # the masks still need the segmenter's finishing step
] + [pa.field(f"evidence_{k}", pa.binary()) for k in EVIDENCE]
ERR_INTERNAL = "internal error"


def _segment_stage_schema(targets: list[str]) -> pa.Schema:
    names = {"image_id", "status", "error", "warnings", "format", "file_bytes", "file_sha256", "original_height", "original_width",
             "decode_scale", "canvas_size", "box_x0", "box_y0", "box_side", "segment_seconds", *HEADER_FIELDS}
    fields = [f for f in S.IMAGE_BASE_FIELDS if f.name in names]
    fields += SEGMENT_OUT_EXTRA + [pa.field(f"mask_{t}", pa.binary()) for t in targets]
    return pa.schema(fields)


def quantify_stage_schema(targets: list[str], emit_masks: bool = True) -> pa.Schema:
    img = S.image_schema()
    fields = [f for f in img if f.name != "path"]
    mask_only = [f for f in S.mask_schema(targets) if f.name not in {x.name for x in fields}] if emit_masks else []
    return pa.schema(fields + mask_only + [pa.field("segments_ipc", pa.binary())])


def limit_threads(n: int) -> None:
    """One actor = its reserved CPUs: stop OpenCV/torch from spawning a thread per core in every actor
    (oversubscription made the classical segmenter ~1.8x slower per image on 2 cores)."""
    n = max(1, int(n))
    try:
        import cv2

        cv2.setNumThreads(n)
    except Exception:  # noqa: BLE001
        pass
    try:
        import sys

        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(n)
    except Exception:  # noqa: BLE001
        pass


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class SegmentStage:
    """Decode + preprocess + segment. The segmenter is loaded once, here, from its spec/path."""

    def __init__(self, config: dict, lookup_path: str | None, fs, root_path: str, protocol: str, num_gpus: float = 0.0):
        from retsam_core.image_io import DecodeLimits
        from retsam_core.segmenter import load_segmenter

        self.cfg = config
        cpus = max(1, int(float(config.get("segment_num_cpus") or 1)))  # the planned reservation (runner)
        limit_threads(cpus)
        device = "cpu"
        if num_gpus and num_gpus > 0:
            try:
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
            except ImportError:
                device = "cpu"
        self.device = device
        self.segmenter = load_segmenter(config["segmenter"], device=device)
        # the canvas side: the configured one, or for an angular-scale segmenter its pixels per degree x the field angle
        self.size = self.segmenter.info.canvas_side(field_angle_of(config), int(config["canvas_size"]))
        self.limits = DecodeLimits(min_side=int(config["min_side"]), max_pixels=int(config["max_pixels"]), target_side=self.size)
        self.targets = list(self.segmenter.info.provides)
        self.schema = _segment_stage_schema(self.targets)
        self.lookup = load_lookup(lookup_path, fs)
        self.root_path, self.protocol = root_path, protocol
        self.pass_image = bool(config.get("pass_image_to_quantify", True))
        # a segmenter with a host-side finishing step leaves it to the CPU actors (QuantifyStage)
        self.pending = hasattr(self.segmenter, "segment_pending")
        # decode/preprocess in threads when the actor reserves several CPUs (a GPU actor: pipeline.resources)
        threads = int(config.get("decode_threads") or 0) or cpus
        if threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(threads, thread_name_prefix="retsam-decode")
        else:
            self.pool = None

    def _image_id(self, read_path: str) -> str:
        from pipeline.listing import image_id_for

        hit = self.lookup.get(read_path)
        return hit[0] if hit else image_id_for(read_path, self.root_path, self.protocol)

    def _prepare(self, path: str, data: bytes | None):
        """Decode + preprocess one image -> (row, Preprocessed or None). Never raises."""
        from retsam_core.errors import ImageError
        from retsam_core.image_io import decode_image
        from retsam_core.preprocess import preprocess

        t0 = time.perf_counter()
        row: dict[str, Any] = {"image_id": self._image_id(path), "read_path": path, "status": "ok", "error": None,
                               "warnings": [], "file_bytes": len(data) if data is not None else 0,
                               "file_sha256": hashlib.sha256(data).hexdigest() if data else None,
                               "canvas_size": self.size}
        pre = None
        try:
            dec = decode_image(data, self.limits)
            row.update(format=dec.format, original_height=dec.original_height, original_width=dec.original_width,
                       decode_scale=dec.decode_scale, warnings=list(dec.warnings), **dec.header)
            pre = preprocess(dec.rgb, self.size, dec.decode_scale, (dec.original_height, dec.original_width))
            g = pre.geometry
            row.update(box_x0=g.box_x0, box_y0=g.box_y0, box_side=g.box_side)
        except ImageError as exc:
            row.update(status=exc.status, error=str(exc))
        except MemoryError:
            row.update(status="error", error="out of memory while decoding (image too large for this worker)")
        except Exception as exc:  # noqa: BLE001 - one bad image never fails the batch
            row.update(status="error", error=f"{ERR_INTERNAL} in decode/preprocess: {type(exc).__name__}: {exc}")
        row["segment_seconds"] = time.perf_counter() - t0
        return row, pre

    def __call__(self, batch: pa.Table) -> pa.Table:
        from retsam_core.mask_codec import encode_mask

        paths = batch["path"].to_pylist()
        blobs = batch["bytes"].to_pylist()
        prepared = list(self.pool.map(self._prepare, paths, blobs)) if self.pool else [
            self._prepare(p, d) for p, d in zip(paths, blobs)]
        rows = [row for row, _ in prepared]
        pending = [(i, pre) for i, (_, pre) in enumerate(prepared) if pre is not None]
        if pending:
            self._segment(rows, pending, encode_mask)
        return pa.Table.from_pylist(rows, schema=self.schema)

    def _run(self, images: np.ndarray, fovs: np.ndarray) -> list[PendingMasks]:
        if self.pending:
            return self.segmenter.segment_pending(images, fovs)
        return [PendingMasks(m) for m in self.segmenter.segment(images, fovs)]

    def _segment(self, rows, pending, encode_mask) -> None:
        t0 = time.perf_counter()
        try:
            images = np.stack([p.image for _, p in pending])
            fovs = np.stack([p.fov for _, p in pending])
            outs = self._run(images, fovs)
            results = list(zip(pending, outs))
        except Exception:  # noqa: BLE001 - isolate the failing image by retrying one by one
            results = []
            for item in pending:
                i, p = item
                try:
                    results.append((item, self._run(p.image[None], p.fov[None])[0]))
                except Exception as exc:  # noqa: BLE001
                    rows[i].update(status="error", error=f"segmentation failed: {type(exc).__name__}: {exc}")
        share = (time.perf_counter() - t0) / max(1, len(pending))

        def encode(item) -> None:
            (i, p), out = item
            self._encode(rows[i], p, out, encode_mask)
            rows[i]["segment_seconds"] = rows[i].get("segment_seconds", 0.0) + share

        if self.pool:  # PNG encoding releases the GIL: an actor with several CPUs (a GPU actor) encodes in parallel
            list(self.pool.map(encode, results))
        else:
            for r in results:
                encode(r)

    def _encode(self, row: dict[str, Any], pre, out: PendingMasks, encode_mask) -> None:
        """One image's masks (1-bit transport PNGs when the CPU actors still finish them), evidence and canvas."""
        from retsam_core.mask_codec import encode_on_support

        try:
            row["fov"] = encode_mask(pre.fov, transport=self.pending)
            for t in self.targets:
                if t in out.masks:  # pending masks are re-encoded for storage once finished (QuantifyStage)
                    row[f"mask_{t}"] = encode_mask(out.masks[t], transport=self.pending)
            support = evidence_support(out.masks)
            for k, v in out.evidence.items():
                row[f"evidence_{k}"] = encode_on_support(v, support)
            row["masks_pending"] = self.pending
            if self.pass_image or self.pending:
                row["canvas_rgb"] = np.ascontiguousarray(pre.image, np.uint8).tobytes()
        except Exception as exc:  # noqa: BLE001
            row.update(status="error", error=f"mask encoding failed: {type(exc).__name__}: {exc}")


class QuantifyStage:
    """Biomarkers from the masks (CPU). Used by `run` (after SegmentStage), `reprocess` and `quantify`."""

    def __init__(self, config: dict, lookup_path: str | None, fs, provenance: dict, targets: list[str],
                 finisher: dict | None = None, scale_inputs_path: str | None = None):
        self.cfg = config
        # reprocess: the stored masks carry the pixel size the first run used, estimated or given; only a given one
        # may be reused, so that an estimate is made again (under the header's or this config's field angle)
        self.scale_inputs = load_scale_inputs(scale_inputs_path, fs)
        self.finisher = Finisher.from_dict(finisher) if finisher is not None else None
        self.pass_image = bool(config.get("pass_image_to_quantify", True))
        limit_threads(int(float(config.get("quantify_num_cpus") or 1)))
        self.lookup = load_lookup(lookup_path, fs)
        self.prov = provenance
        self.targets = list(targets)
        self.schema = quantify_stage_schema(self.targets, emit_masks=bool(config.get("emit_masks", True)))
        self.seg_schema = S.segment_schema()
        self.bio_fields = S.biomarker_fields()
        if config.get("warmup", True):
            warm_up_biomarkers()

    def __call__(self, batch: pa.Table) -> pa.Table:
        cols = batch.column_names
        data = {c: batch[c].to_pylist() for c in cols}
        out = []
        for i in range(batch.num_rows):
            row = {c: data[c][i] for c in cols}
            out.append(self.quantify_row(row))
        return pa.Table.from_pylist(out, schema=self.schema)

    def quantify_row(self, row: dict[str, Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        read_path = row.pop("read_path", None)
        mm_orig, source = given_pixel_size(row, read_path, self.lookup, self.scale_inputs)
        row["original_mm_per_px"] = _plain(mm_orig) if mm_orig is not None else None
        canvas = row.pop("canvas_rgb", None)
        pending = bool(row.pop("masks_pending", None))
        evidence = {k: row.pop(f"evidence_{k}", None) for k in EVIDENCE}
        for key in ("segmenter", "model_hash", "provided_targets"):  # stored masks keep their own provenance
            if row.get(key) is None:
                row[key] = self.prov[key]
        row.update(pipeline_version=self.prov["pipeline_version"], run_id=self.prov["run_id"],
                   quant_id=self.prov["quant_id"], processed_at=datetime.now(timezone.utc))
        row["n_segment_rows"] = 0
        if row.get("status") == "ok" or (row.get("fov") is not None and row.get("status") != "error"):
            try:
                self._biomarkers(row, canvas, pending, evidence, source)
            except Exception as exc:  # noqa: BLE001
                row.update(status="error", error=f"biomarker computation failed: {type(exc).__name__}: {exc}",
                           null_reasons=json.dumps({"*": traceback.format_exc(limit=3)[-500:]}))
        row["quantify_seconds"] = time.perf_counter() - t0
        return row

    def _biomarkers(self, row: dict[str, Any], canvas: bytes | None, pending: bool = False,
                    evidence: dict[str, bytes | None] | None = None, source: str = "manifest") -> None:
        from retsam_core.biomarkers import compute_biomarkers
        from retsam_core.mask_codec import decode_mask
        from retsam_core.preprocess import Geometry

        if row.get("fov") is None:
            raise ValueError("no field-of-view mask stored for this image")
        fov = decode_mask(row["fov"])
        masks = {t: decode_mask(row[f"mask_{t}"]) for t in self.targets if row.get(f"mask_{t}") is not None}
        geom = Geometry(int(row["original_height"]), int(row["original_width"]), float(row["box_x0"]),
                        float(row["box_y0"]), float(row["box_side"]), int(row["canvas_size"]))
        side = int(row["canvas_size"])
        image = None if canvas is None else np.frombuffer(canvas, np.uint8).reshape(side, side, 3)
        if pending:
            masks = self._finish(row, masks, image, fov, evidence or {})
        if not self.pass_image:
            image = None
        angle, fov_source = field_angle(row, field_angle_of(self.cfg), self.scale_inputs)
        scale = make_scale(row.get("original_mm_per_px"), geom, masks, fov, angle, source, fov_source)
        res = compute_biomarkers(masks, fov, scale, image=image, provided=self.prov["provided_targets"])
        for f in self.bio_fields:
            row[f.name] = _plain(res.values.get(f.name))
        if row.get("original_mm_per_px") is None and row.get("scale_mm_per_px") is not None:
            row["original_mm_per_px"] = row["scale_mm_per_px"] / geom.original_px_per_canvas_px
        row["null_reasons"] = json.dumps(res.reasons, sort_keys=True) if res.reasons else None
        threshold = self.cfg.get("quality_reject_below")
        q = row.get("quality_score")
        if threshold is not None and q is not None and q < float(threshold) and row["status"] == "ok":
            row.update(status="ungradable", error=f"quality score {q:.2f} below {float(threshold):.2f}")
        row["n_segment_rows"], row["segments_ipc"] = pack_segments(res.segments, row["image_id"], self.prov["quant_id"],
                                                                   self.seg_schema)

    def _finish(self, row: dict[str, Any], masks: dict[str, np.ndarray], image: np.ndarray | None, fov: np.ndarray,
                evidence: dict[str, bytes | None]) -> dict[str, np.ndarray]:
        """The segmenter's host-side step (A/V separation, post-processing, classical fovea) on this CPU actor; the
        finished masks replace the pending ones in the row, so the stored masks are the measured ones (and every
        stored mask, the FOV too, is re-encoded from its 1-bit transport PNG as an 8-bit one)."""
        from retsam_core.mask_codec import decode_on_support, encode_mask

        if self.finisher is None or image is None:
            raise ValueError("the segmenter's masks need finishing, but no finisher or canvas reached this stage")
        support = evidence_support(masks)
        ev = {k: decode_on_support(v, support) for k, v in evidence.items() if v is not None}
        masks = self.finisher(PendingMasks(masks, ev), image, fov)
        row["fov"] = encode_mask(fov)
        for t in self.targets:
            if t in masks:
                row[f"mask_{t}"] = encode_mask(masks[t])
        return masks


def pack_segments(segments: list[dict] | None, image_id: str, quant_id: str, schema: pa.Schema) -> tuple[int, bytes | None]:
    """Per-segment rows of one image as Arrow IPC bytes: one binary cell travels through Ray Data instead of a
    nested list column whose schema would have to be unified across blocks."""
    rows = [{**{k: _plain(v) for k, v in s.items()}, "image_id": image_id, "quant_id": quant_id} for s in (segments or [])]
    if not rows:
        return 0, None
    table = pa.Table.from_pylist(rows, schema=schema)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return len(rows), sink.getvalue()


def warm_up_biomarkers() -> None:
    """Compile the JIT parts of the biomarker code (skan/numba: seconds per process) now, while the first images
    are still being segmented, instead of on the first real image."""
    import cv2

    from retsam_core.biomarkers import Scale, compute_biomarkers

    size = 128
    fov = np.zeros((size, size), np.uint8)
    cv2.circle(fov, (size // 2, size // 2), size // 2 - 4, 1, -1)
    vessel = np.zeros_like(fov)
    cv2.line(vessel, (20, 64), (108, 64), 1, 2)
    cv2.line(vessel, (64, 64), (90, 20), 1, 2)
    cv2.line(vessel, (64, 64), (90, 108), 1, 2)
    disc = np.zeros_like(fov)
    cv2.circle(disc, (30, 64), 8, 1, -1)
    try:
        compute_biomarkers({"vessel": vessel.astype(bool), "optic_disc": disc.astype(bool)}, fov.astype(bool),
                           Scale(0.01, "manifest"), provided=("vessel", "optic_disc"))
    except Exception:  # noqa: BLE001 - warm-up only
        pass


def explode_segments(batch: pa.Table) -> pa.Table:
    """segments_ipc (one Arrow IPC stream per image) -> long segment rows."""
    schema = S.segment_schema()
    tables = []
    for blob in batch["segments_ipc"].to_pylist():
        if blob:
            tables.append(S.conform(pa.ipc.open_stream(blob).read_all(), schema))
    return pa.concat_tables(tables) if tables else schema.empty_table()


def mask_rows(batch: pa.Table, schema: pa.Schema) -> pa.Table:
    import pyarrow.compute as pc

    t = batch.filter(pc.is_valid(batch["fov"]))
    return S.conform(t, schema)
