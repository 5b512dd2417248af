"""Benchmark: `retsam report` (and one `retsam query`) on a synthetic 100k-row output in the real layout.

The images table uses the pipeline's real Arrow schema (`pipeline.schema.image_schema`: pipeline columns + the
whole biomarker catalogue, ~380 columns) plus manifest columns site/device/eye, written as hive batches of 2,000
rows like a real run. No masks (the report's aggregate path is what scales with the cohort; outlier overlays are a
fixed handful of images and are timed by the tests).

    python benchmarks/bench_report.py --rows 100000            # prints the timings
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ERRORS = [
    ("error", "empty file (0 bytes)"),
    ("error", "corrupt or truncated JPEG file: image file is truncated (17 bytes not processed)"),
    ("error", "not an image: unrecognised format (312 bytes, starts b'<html>\\n')"),
    ("error", "image too small: 40x40 px (minimum side 64 px)"),
    ("error", "file not found or unreadable (no bytes returned by the reader)"),
    ("ungradable", "no field of view found: image is black or nearly black"),
    ("ungradable", "grayscale image (mode L): a colour fundus photograph is required"),
]
SITES = [f"site_{i:02d}" for i in range(12)]
DEVICES = ["topcon_nw400", "canon_cr2", "optos_daytona", "zeiss_visucam"]
EYES = ["left", "right"]


def synth_batch(schema: pa.Schema, n: int, rng: np.random.Generator, offset: int, run_id: str, batch: str) -> pa.Table:
    status = rng.choice(["ok", "error", "ungradable"], size=n, p=[0.95, 0.03, 0.02])
    ok = status == "ok"
    err_idx = rng.integers(0, len(ERRORS), n)
    cols = {}
    for f in schema:
        name, t = f.name, f.type
        if name == "image_id":
            cols[name] = pa.array([f"p{offset + i:07d}/img.jpg" for i in range(n)])
        elif name == "path":
            cols[name] = pa.array([f"s3://cohort/raw/p{offset + i:07d}/img.jpg" for i in range(n)])
        elif name == "status":
            cols[name] = pa.array(status.tolist())
        elif name == "error":
            e = [None if s == "ok" else ERRORS[k][1] if ERRORS[k][0] == s else f"{s}: see log" for s, k in zip(status, err_idx)]
            cols[name] = pa.array(e, pa.string())
        elif name == "site":
            cols[name] = pa.array(rng.choice(SITES, n, p=np.linspace(2, 1, len(SITES)) / np.linspace(2, 1, len(SITES)).sum()).tolist())
        elif name == "device":
            cols[name] = pa.array(rng.choice(DEVICES, n).tolist())
        elif name == "eye":
            cols[name] = pa.array(rng.choice(EYES, n).tolist())
        elif name == "quality_grade":
            g = rng.choice(["good", "usable", "reject"], n, p=[0.7, 0.22, 0.08])
            cols[name] = pa.array([x if o else None for x, o in zip(g, ok)], pa.string())
        elif name == "run_id":
            cols[name] = pa.array([run_id] * n)
        elif name in ("segmenter",):
            cols[name] = pa.array(["retsam-small-1"] * n)
        elif name == "processed_at":
            cols[name] = pa.array([datetime.now(timezone.utc)] * n, t)
        elif pa.types.is_floating(t):
            loc = 1 + (zlib.crc32(name.encode()) % 997)
            v = rng.normal(loc, loc * 0.12, n)
            v[rng.random(n) < 0.001] *= 3  # a few outliers
            v[~ok | (rng.random(n) < 0.02)] = np.nan
            cols[name] = pa.array(v, t, from_pandas=True)
        elif pa.types.is_integer(t):
            v = rng.poisson(5, n)
            cols[name] = pa.array(np.where(ok, v, 0), t).cast(t)
        elif pa.types.is_boolean(t):
            cols[name] = pa.array(rng.random(n) < 0.5)
        else:
            cols[name] = pa.nulls(n, t)
    return pa.table(cols, schema=schema)


def synth_output(root: Path, rows: int, batch_rows: int = 2000, seed: int = 0) -> Path:
    from pipeline.schema import image_schema

    meta = [pa.field("site", pa.string()), pa.field("device", pa.string()), pa.field("eye", pa.string())]
    schema = image_schema(meta)
    rng = np.random.default_rng(seed)
    run_id = "20261127T000000Z-bench"
    out = root / "out"
    for k, start in enumerate(range(0, rows, batch_rows)):
        n = min(batch_rows, rows - start)
        bid = f"{run_id}-{k:05d}"
        d = out / "images" / f"batch={bid}"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(synth_batch(schema, n, rng, start, run_id, bid), d / "part-0.parquet", compression="zstd")
    (out / "_runs").mkdir(parents=True, exist_ok=True)
    (out / "_runs" / f"{run_id}.json").write_text(json.dumps({
        "run_id": run_id, "status": "finished", "started_at": "2026-11-27T00:00:00Z", "config": {"canvas_size": 1024},
        "segmenter": {"segmenter": "retsam-small-1", "model_hash": "0" * 64}, "counts": {"listed": rows},
        "timings": {"listing_s": 12.0, "processing_s": 3600.0, "total_s": 3620.0},
    }))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dir", help="work folder (default: a temporary one, removed afterwards)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    from pipeline.qc.query import query
    from pipeline.qc.report import build_report

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench_report_"))
    try:
        t = time.perf_counter()
        out = synth_output(root, args.rows)
        t_synth = time.perf_counter() - t
        size = sum(p.stat().st_size for p in (out / "images").rglob("*.parquet"))
        ncols = len(pq.read_schema(next((out / "images").rglob("*.parquet"))))
        print(f"synthetic images table: {args.rows:,} rows x {ncols} columns, {size / 1e6:.1f} MB Parquet, "
              f"written in {t_synth:.1f} s")
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            html = build_report(str(out), str(root / "report.html"))
            times.append(time.perf_counter() - t)
        kb = Path(html).stat().st_size / 1024
        print(f"retsam report: {min(times):.2f} s (best of {args.repeat}: {', '.join(f'{x:.2f}' for x in times)}), "
              f"HTML {kb:.0f} KiB")
        t = time.perf_counter()
        res = query(str(out), "SELECT site, count(*) n, avg(crae_knudtson_um_zone_b) crae FROM images WHERE status = 'ok' GROUP BY site ORDER BY site")
        print(f"retsam query (mean CRAE by site, {res.num_rows} groups): {time.perf_counter() - t:.2f} s")
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
