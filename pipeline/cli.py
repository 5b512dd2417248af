"""`retsam` command line: demo, run, segment, reprocess, quantify, status (+ train/evaluate and qc commands when
their packages are installed)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig

# CLI flags that map 1:1 onto PipelineConfig fields
CONFIG_FLAGS: list[tuple[str, str, type, str]] = [
    ("--canvas-size", "canvas_size", int, "model canvas side in px (default 1024; an angular-scale model sets its own from --field-angle-deg)"),
    ("--segmenter", "segmenter", str, "'default', 'learned', 'classical', or a path/URI of .safetensors weights; "
                                       "'+flip' after a learned one: test-time flip averaging (4 passes); "
                                       "'+bf16': bf16 on the CPU (faster where the CPU has bf16 instructions)"),
    ("--num-gpus", "num_gpus", float, "GPUs per segmentation actor (default 0; never more than the cluster has)"),
    ("--segment-actors", "segment_actors", int, "segmentation actors (default: automatic)"),
    ("--quantify-actors", "quantify_actors", int, "biomarker actors (default: automatic)"),
    ("--segment-batch-size", "segment_batch_size", int, "images per segmentation call"),
    ("--quantify-batch-size", "quantify_batch_size", int, "images per biomarker call"),
    ("--shard-size", "shard_size", int, "images per commit batch (one images file each)"),
    ("--address", "address", str, "Ray address ('auto' for a running cluster; default: start a local Ray)"),
    ("--local-num-cpus", "local_num_cpus", int, "logical CPUs of the local Ray"),
    ("--field-angle-deg", "field_angle_deg", float, "camera field angle: mm/px estimates, and the canvas side of an angular-scale model"),
    ("--quality-reject-below", "quality_reject_below", float, "mark rows ungradable below this quality score"),
    ("--qc-overlays", "qc_overlays", str, "QC overlay PNGs under OUTPUT/qc/: none, sample (default) or all"),
]


def _add_config_args(p: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    p.add_argument("--config", help="YAML or JSON file with PipelineConfig fields")
    for flag, dest, typ, help_ in CONFIG_FLAGS:
        if only is None or dest in only:
            p.add_argument(flag, dest=dest, type=typ, default=None, help=help_)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any PipelineConfig field")
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="fsspec storage option (AWS_* environment variables are used by default)")


def _config_from(args: argparse.Namespace) -> PipelineConfig:
    overrides: dict[str, Any] = {}
    for _, dest, _, _ in CONFIG_FLAGS:
        v = getattr(args, dest, None)
        if v is not None:
            overrides[dest] = v
    for item in getattr(args, "set", []) or []:
        k, _, v = item.partition("=")
        overrides[k.strip()] = _parse_value(v)
    cfg = PipelineConfig.load(getattr(args, "config", None), **overrides)
    so = dict(cfg.storage_options)
    for item in getattr(args, "storage_option", []) or []:
        k, _, v = item.partition("=")
        if k.startswith("client_kwargs."):
            so.setdefault("client_kwargs", {})[k.split(".", 1)[1]] = _parse_value(v)
        else:
            so[k] = _parse_value(v)
    return cfg.updated(storage_options=so) if so else cfg


def _parse_value(v: str) -> Any:
    try:
        return json.loads(v)
    except ValueError:
        return v


def _progress_default(args) -> bool:
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# run --------------------------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    from pipeline.runner import dry_run, run_cohort

    cfg = _config_from(args)
    if args.dry_run:
        plan = dry_run(args.input, args.output, cfg, force=args.force, model_hash_not=args.reprocess_model_hash_not,
                       retry_errors=args.retry_errors, limit=args.limit, reprocess_changed=args.reprocess_changed,
                       log=_log)
        print(json.dumps(plan, indent=2, default=str) if args.json else dry_run_lines(plan))
        return 0
    summary = run_cohort(args.input, args.output, cfg, force=args.force, model_hash_not=args.reprocess_model_hash_not,
                         retry_errors=args.retry_errors, limit=args.limit, progress=_progress_default(args), log=_log,
                         break_lock=args.break_lock, reprocess_changed=args.reprocess_changed)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(summary_line(summary))
    return 0


def dry_run_lines(plan: dict) -> str:
    lines = [f"dry run (nothing written): {plan['listed']} images listed in {plan['input']}, {plan['skipped']} already "
             f"in {plan['output']}, {plan['to_process']} would be processed"
             + (f" ({plan['superseding']} replacing existing rows)" if plan["superseding"] else "")]
    if plan["first_to_process"]:
        more = plan["to_process"] - len(plan["first_to_process"])
        lines.append("  first: " + ", ".join(plan["first_to_process"]) + (f" (+{more} more)" if more > 0 else ""))
    if plan["changed_on_storage"]:
        lines.append(f"  changed on storage: {plan['changed_on_storage']}, e.g. " + ", ".join(plan["changed_example"]))
    return "\n".join(lines)


def summary_line(s: dict) -> str:
    return (f"processed {s['processed']}, skipped {s['skipped']} (already done), failed {s['failed']}, "
            f"ungradable {s['ungradable']}, ok {s['ok']}, {s['images_per_s']:.2f} images/s -> {s['output']}")


# demo -------------------------------------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from pipeline.demo import build_demo
    from pipeline.runner import run_cohort

    out = Path(args.out).resolve()
    t0 = time.time()
    cohort = build_demo(out, side=args.side, huge=not args.no_huge)
    _log(f"demo cohort: {len(cohort.good)} fundus photographs + {len(cohort.bad)} problem files in {cohort.input_dir} "
         f"(manifest {cohort.manifest.name}, built in {time.time() - t0:.1f} s)")
    cfg = _config_from(args)
    results = out / "results"
    summary = run_cohort(str(cohort.manifest), str(results), cfg, progress=_progress_default(args), log=_log)
    from pipeline.scan import scan

    frames = scan(str(results))
    import polars as pl

    images = frames["images"].collect()
    print()
    print(f"Parquet written to {results}/  (images/, segments/, masks/ partitioned by batch=; run log in _runs/)")
    print(summary_line(summary))
    with pl.Config(tbl_rows=40, fmt_str_lengths=70, tbl_width_chars=160):
        cols = [c for c in ("image_id", "status", "error", "scale_source", "vessel_density_all_retina",
                            "quality_score") if c in images.columns]
        print(images.sort("status", "image_id").select(cols))
    print("\nQuery it:")
    print(f"  python -c \"import polars as pl; print(pl.scan_parquet('{results}/images/**/*.parquet', "
          f"hive_partitioning=True).group_by('status').len().collect())\"")
    print(f"  python -c \"import duckdb; duckdb.sql(\\\"SELECT status, count(*), avg(vessel_density_all_retina) FROM "
          f"read_parquet('{results}/images/**/*.parquet', hive_partitioning=true, union_by_name=true) GROUP BY status\\\").show()\"")
    print(f"  python -c \"from pipeline.scan import scan; print(scan('{results}')['segments'].collect())\"")
    print(f"\nCheck it: retsam report {results}   # one HTML page: failures, quality, laterality and duplicate "
          "checks, biomarker distributions, outliers with overlays")
    return 0


# segment ----------------------------------------------------------------------------------------------------
def cmd_segment(args) -> int:
    """Masks for a few images, no Ray: <stem>_<target>.png (0/255) at the original image size."""
    from pipeline.storage import IMAGE_EXTENSIONS
    from retsam_core.errors import ImageError
    from retsam_core.image_io import DecodeLimits, decode_image
    from retsam_core.mask_codec import encode_mask
    from retsam_core.preprocess import mask_to_original, preprocess
    from retsam_core.segmenter import load_segmenter

    cfg = _config_from(args)
    files: list[Path] = []
    for item in args.inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
        else:
            files.append(p)
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    seg = load_segmenter(cfg.segmenter, device="cuda" if cfg.num_gpus > 0 else "cpu")
    if args.probabilities:
        if not hasattr(seg, "keep_probabilities"):
            _log(f"--probabilities: the {seg.info.name} segmenter has no probability maps; masks only")
        else:
            seg.keep_probabilities = True
    side = seg.info.canvas_side(cfg.field_angle_deg, cfg.canvas_size)  # an angular-scale model sets its own
    limits = DecodeLimits(min_side=cfg.min_side, max_pixels=cfg.max_pixels, target_side=side)
    failures = 0
    for f in files:
        try:
            dec = decode_image(f.read_bytes(), limits)
            pre = preprocess(dec.rgb, side, dec.decode_scale, (dec.original_height, dec.original_width))
            masks = seg.segment(pre.image[None], pre.fov[None])[0]
        except (ImageError, OSError) as exc:
            failures += 1
            _log(f"{f}: {getattr(exc, 'status', 'error')}: {exc}")
            continue
        masks = {"fov": pre.fov, **masks}
        written, originals = [], {}
        for target, m in masks.items():
            originals[target] = full = mask_to_original(m, pre.geometry)
            path = outdir / f"{f.stem}_{target}.png"
            path.write_bytes(encode_mask(full))  # the stored masks' PNG: 8-bit 0/255
            written.append(path.name)
        if args.probabilities:
            written += _write_probabilities(seg, list(masks), pre.geometry, originals["fov"], outdir, f.stem)
        print(f"{f}: {', '.join(written)} ({dec.original_width}x{dec.original_height})")
    return 1 if failures and failures == len(files) else 0


def _write_probabilities(seg, targets: list[str], geometry, fov, outdir: Path, stem: str) -> list[str]:
    """<stem>_<target>_prob.png: the network's probability (0-255 for 0-1) at the original size, resampled
    bilinearly, zero outside the field of view, for each target whose mask is the learned one (a hybrid's classical
    targets have none)."""
    import cv2
    import numpy as np

    from retsam_core.preprocess import canvas_to_original

    kept = getattr(seg, "kept_probabilities", None)
    written = []
    for target in targets:
        probs = kept(target) if kept is not None else None
        if probs is None:
            continue
        full = canvas_to_original(probs[0].astype(np.float32), geometry, "linear") * fov
        ok, buf = cv2.imencode(".png", np.clip(np.rint(full * 255), 0, 255).astype(np.uint8))
        if ok:
            path = outdir / f"{stem}_{target}_prob.png"
            path.write_bytes(buf.tobytes())
            written.append(path.name)
    return written


# reprocess --------------------------------------------------------------------------------------------------
def cmd_reprocess(args) -> int:
    from pipeline.reprocess import reprocess_output

    cfg = _config_from(args)
    summary = reprocess_output(args.output, cfg, batches=args.batch or None, progress=_progress_default(args), log=_log)
    print(json.dumps(summary, default=str) if args.json else
          f"reprocessed {summary.get('recomputed', 0)} images in {summary.get('batches', 0)} batches -> {args.output}")
    return 0


# quantify ---------------------------------------------------------------------------------------------------
def cmd_quantify(args) -> int:
    from pipeline.quantify import quantify_masks

    cfg = _config_from(args)
    return quantify_masks(args.masks, args.output, cfg, mm_per_px=args.mm_per_px, as_json=args.json, log=_log)


# status -----------------------------------------------------------------------------------------------------
def cmd_status(args) -> int:
    from pipeline.status import output_status, status_text

    cfg = _config_from(args)
    summary = output_status(args.output, cfg.storage_options or None)
    print(json.dumps(summary, indent=2, default=str) if args.json else status_text(summary))
    return 0 if summary["exists"] else 1


# parser -----------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retsam", description="Cohort-scale retinal fundus segmentation and biomarkers")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the pipeline on a folder, glob, s3:// prefix or manifest (resumable)")
    r.add_argument("input", help="folder, glob, s3://bucket/prefix, or manifest (.csv/.parquet with a path column)")
    r.add_argument("output", help="output folder or s3://bucket/prefix")
    _add_config_args(r)
    r.add_argument("--force", action="store_true", help="reprocess every image, replacing existing rows")
    r.add_argument("--reprocess-model-hash-not", metavar="HASH",
                   help="reprocess images whose stored model_hash differs from HASH ('' = weights-free)")
    r.add_argument("--retry-errors", action="store_true", help="reprocess images whose status is error")
    r.add_argument("--reprocess-changed", nargs="?", const="size", choices=("size", "sha256"), metavar="size|sha256",
                   help="reprocess images whose file changed on storage since it was processed: its size differs "
                        "from the stored one (default), or with sha256 also same-size files whose bytes differ "
                        "(reads every processed file again)")
    r.add_argument("--limit", type=int, help="process at most N new images")
    r.add_argument("--dry-run", action="store_true",
                   help="list INPUT and say what would be processed (changed files included); write nothing, no Ray")
    r.add_argument("--break-lock", action="store_true", help="take over OUTPUT from a run that died elsewhere")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="build the bundled demo cohort in OUT/input and run the pipeline on it")
    d.add_argument("out")
    d.add_argument("--side", type=int, default=None, help="downsize the base photograph (faster)")
    d.add_argument("--no-huge", action="store_true", help="skip the 8000x6000 file")
    _add_config_args(d)
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("segment", help="write masks (PNG 0/255, original size) for images; no Ray")
    s.add_argument("inputs", nargs="+", help="image files or folders")
    s.add_argument("--out", required=True)
    _add_config_args(s, only=("canvas_size", "segmenter", "num_gpus", "field_angle_deg"))
    s.add_argument("--probabilities", action="store_true",
                   help="also <stem>_<target>_prob.png: the network's probability map (0-255), original size")
    s.set_defaults(func=cmd_segment)

    rp = sub.add_parser("reprocess", help="recompute biomarkers from stored masks (no segmentation)")
    rp.add_argument("output")
    rp.add_argument("--batch", action="append", help="only this batch id (repeatable)")
    _add_config_args(rp)
    rp.add_argument("--no-progress", action="store_true")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(func=cmd_reprocess)

    q = sub.add_parser("quantify", help="biomarkers from your own masks (<stem>_<target>.png)")
    q.add_argument("masks", help="folder of masks, or a manifest")
    q.add_argument("output", nargs="?", help="output folder/s3:// (cohort); omit with --json for one image")
    q.add_argument("--mm-per-px", type=float, help="pixel size of the masks")
    q.add_argument("--json", action="store_true", help="print the biomarkers of a single image as JSON")
    _add_config_args(q)
    q.set_defaults(func=cmd_quantify)

    st = sub.add_parser("status", help="an output's counts per status, models, versions, latest runs, writer")
    st.add_argument("output")
    _add_config_args(st, only=())
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    _register_optional(sub)
    return p


def _register_optional(sub) -> None:
    """Commands owned by other packages: learned model training/evaluation, QC overlays/report/query."""
    for module in ("retsam_core.training.cli", "retsam_core.evaluation.cli", "pipeline.qc.cli"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError:
            continue
        register = getattr(mod, "register", None)
        if register is not None:
            try:
                register(sub)
            except Exception as exc:  # noqa: BLE001 - a broken plug-in must not break `retsam run`
                _log(f"warning: could not register commands from {module}: {exc}")


def main(argv: list[str] | None = None) -> int:
    from pipeline.output import OutputLocked

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, OutputLocked, ConnectionError) as exc:
        _log(f"retsam {args.command}: error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
