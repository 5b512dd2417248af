"""`retsam overlay|report|query|aggregate|export-masks`: the QC and analysis subcommands. `pipeline.cli` calls `register(subparsers)`.

Each handler takes the parsed `argparse.Namespace` and returns an exit code (0 ok, 1 failure, 2 usage).
Standalone use (before/without the main CLI): `python -m pipeline.qc.cli report OUTPUT`.
"""

from __future__ import annotations

import argparse
import sys
import time


def _add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage-option", action="append", default=[], metavar="KEY=VALUE", dest="qc_storage_option",
        help="fsspec option for object storage (repeatable; dotted keys nest, e.g. client_kwargs.endpoint_url=...). "
        "The standard AWS_* environment variables are used too.",
    )


def _command(subparsers, name: str, func, help: str, description: str, **kw) -> argparse.ArgumentParser:
    """A subcommand reading OUTPUT (local or object storage): its parser, with OUTPUT and the storage options."""
    p = subparsers.add_parser(name, help=help, description=description, **kw)
    p.add_argument("output", help="pipeline output folder or URI (s3://...)")
    _add_storage(p)
    p.set_defaults(func=func)
    return p


def register(subparsers) -> None:
    """Add the `overlay`, `report`, `query`, `aggregate` and `export-masks` subcommands to argparse subparsers."""
    p = _command(
        subparsers, "overlay", cmd_overlay, help="render QC overlay PNGs from stored masks into OUTPUT/qc/",
        description="Render QC overlays (vessels A/V, disc/cup, fovea, zone B/C rings, lesions, key numbers) from the "
        "stored masks and the re-read source image; written to OUTPUT/qc/<image>.png (or --out for one image).",
    )
    p.add_argument("image_id", nargs="*", help="image ids (as in the images table); none: use --sample/--all")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--sample", type=int, metavar="N", help="render a deterministic sample of N ok images")
    g.add_argument("--all", action="store_true", help="render every image that has masks")
    p.add_argument("--out", help="with one IMAGE_ID: write the PNG here instead of OUTPUT/qc/")

    p = _command(
        subparsers, "report", cmd_report, help="write a self-contained HTML cohort report",
        description="Cohort report: status counts and grouped errors, quality, laterality and duplicate checks, "
        "biomarker histograms (overall and by site/device/eye), outliers with overlays, run config/model card and "
        "timings. Self-contained HTML.",
    )
    p.add_argument("--out", help="HTML file to write (default OUTPUT/report.html)")
    p.add_argument("--title", help="report title")
    p.add_argument("--outlier-overlays", type=int, default=8, metavar="N", help="overlays embedded for the N most extreme outliers (default 8; 0 = none)")
    p.add_argument("--max-outliers", type=int, default=30, metavar="N", help="rows in the outlier table (default 30)")
    p.add_argument("--no-write-overlays", action="store_true", help="do not store overlays rendered for the report under OUTPUT/qc/")

    p = _command(
        subparsers, "query", cmd_query, help="run SQL (DuckDB) over the output tables",
        description="Run DuckDB SQL with views images, segments and masks over the hive-partitioned Parquet "
        "(batch column included). Prints a table, or writes --out file.csv|file.parquet.",
        epilog='example: retsam query OUT "SELECT site, avg(crae_knudtson_um_zone_b) FROM images WHERE status=\'ok\' GROUP BY site"',
    )
    p.add_argument("sql", help="SQL text, or @file.sql to read it from a file")
    p.add_argument("--out", help="write the result to a .csv or .parquet file (local or object storage)")
    p.add_argument("--max-rows", type=int, default=50, help="rows to print (default 50)")

    p = _command(
        subparsers, "aggregate", cmd_aggregate,
        help="one row per participant (eye, visit...): biomarker means over usable images",
        description="Reduce the images table to one row per group for analysis: ok images not graded reject, "
        "each file once (a file under two groups is left out of both), numeric biomarkers averaged over the images "
        "that have them, yes/no biomarkers as fractions. Parquet with units in the field metadata.",
    )
    p.add_argument("--by", default="participant_id,eye", help="comma-separated columns (default participant_id,eye)")
    p.add_argument("--out", help="Parquet file to write (default OUTPUT/aggregates/by_<columns>.parquet)")
    p.add_argument("--include-rejected", action="store_true", help="keep images whose quality grade is reject")

    p = _command(
        subparsers, "export-masks", cmd_export_masks, help="write the stored masks as PNG files at each photograph's size",
        description="The masks of processed images as DEST/<image>_<target>.png (8-bit 0/255), mapped back onto each "
        "photograph exactly as `retsam segment` writes them; no segmentation is run.",
    )
    p.add_argument("dest", help="folder or URI to write the PNG files to")
    p.add_argument("image_id", nargs="*", help="image ids (default: every image with masks)")
    p.add_argument("--targets", help="comma-separated targets (default: every stored one, fov included)")
    p.add_argument("--canvas", action="store_true", help="write the model-canvas masks as stored instead")


def _opts(args) -> dict:
    from pipeline.qc.common import parse_storage_options

    return parse_storage_options(getattr(args, "qc_storage_option", None))


def cmd_overlay(args) -> int:
    from pipeline.qc.common import write_bytes
    from pipeline.qc.overlays import DEFAULT_SAMPLE, fetch_rows, render_overlays, render_row

    opts = _opts(args)
    if args.out:
        if len(args.image_id) != 1:
            print("--out needs exactly one IMAGE_ID", file=sys.stderr)
            return 2
        masks_rows, image_rows, schema = fetch_rows(args.output, args.image_id, opts)
        iid = args.image_id[0]
        if iid not in masks_rows:
            st = (image_rows.get(iid) or {}).get("status")
            print(f"{iid}: no masks stored" + (f" (status {st}: {(image_rows.get(iid) or {}).get('error')})" if st else " (unknown image id)"), file=sys.stderr)
            return 1
        write_bytes(args.out, render_row(masks_rows[iid], image_rows.get(iid), opts, schema), opts)
        print(args.out)
        return 0
    t = time.time()
    if args.image_id:
        written = render_overlays(args.output, args.image_id, opts)
        if len(written) < len(args.image_id):
            print(f"{len(args.image_id) - len(written)} of {len(args.image_id)} image(s) have no masks "
                  "(error/ungradable or unknown id)", file=sys.stderr)
    elif args.all:
        written = render_overlays(args.output, None, opts, mode="all")
    else:
        written = render_overlays(args.output, None, opts, mode="sample", n_sample=args.sample or DEFAULT_SAMPLE)
    for w in written:
        print(w)
    print(f"{len(written)} overlay(s) written in {time.time() - t:.1f} s", file=sys.stderr)
    return 0 if written or not args.image_id else 1


def cmd_report(args) -> int:
    from pipeline.qc.report import build_report

    t = time.time()
    out = build_report(
        args.output, args.out, _opts(args), max_outliers=args.max_outliers, outlier_overlays=args.outlier_overlays,
        write_missing_overlays=not args.no_write_overlays, title=args.title,
    )
    print(out)
    print(f"report written in {time.time() - t:.2f} s", file=sys.stderr)
    return 0


def cmd_query(args) -> int:
    import duckdb

    from pipeline.qc.query import export, print_result

    sql = args.sql
    if sql.startswith("@"):
        with open(sql[1:], encoding="utf-8") as f:
            sql = f.read()
    sql = sql.strip().rstrip(";")
    try:
        if args.out:
            n = export(args.output, sql, args.out, _opts(args))
            print(f"{n:,} rows written to {args.out}" if n >= 0 else f"written to {args.out}", file=sys.stderr)
        else:
            print_result(args.output, sql, _opts(args), max_rows=args.max_rows)
    except duckdb.Error as exc:
        print(f"query failed: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_aggregate(args) -> int:
    from pipeline.qc.aggregate import aggregate_output

    by = [c.strip() for c in args.by.split(",") if c.strip()]
    try:
        target, result = aggregate_output(args.output, by, args.out, _opts(args), args.include_rejected)
    except ValueError as exc:
        print(f"aggregate: {exc}", file=sys.stderr)
        return 2
    left = "; ".join(f"{reason}: {n}" for reason, n in result.left_out.items()) or "none"
    print(target)
    print(f"{result.table.height} groups from {result.images_used} ok images (left out: {left})", file=sys.stderr)
    return 0


def cmd_export_masks(args) -> int:
    from pipeline.qc.export_masks import export_masks

    t = time.time()
    targets = [x.strip() for x in args.targets.split(",") if x.strip()] if args.targets else None
    written = export_masks(args.output, args.dest, args.image_id or None, targets, _opts(args), native=not args.canvas)
    images = len(args.image_id)
    print(f"{len(written)} mask file(s) written to {args.dest} in {time.time() - t:.1f} s", file=sys.stderr)
    if images and not written:
        print("none of the given images has stored masks (error/ungradable or unknown id)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="retsam-qc", description="RetSAM QC: overlays, report, query")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
