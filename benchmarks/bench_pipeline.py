"""Benchmark: `retsam run` (Ray Data) vs a plain single-process loop over the same retsam_core functions.

    python benchmarks/bench_pipeline.py --n 200 --canvas-size 1024

Prints a Markdown table: throughput of both (same images, same machine, one run), per-stage time, and the driver's
peak RSS for listing + anti-join of a 1k and a 20k image listing (no processing). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_images(folder: Path, n: int) -> list[Path]:
    """n distinct ~1.4k px JPEG fundus photographs derived from skimage's real retina photograph."""
    import cv2
    import numpy as np
    from skimage import data

    base = data.retina()
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    s = base.shape[0]
    for i in range(n):
        m = cv2.getRotationMatrix2D((s / 2, s / 2), float(rng.uniform(-20, 20)), float(rng.uniform(0.95, 1.05)))
        img = cv2.warpAffine(base, m, (s, s))
        img = np.clip(img.astype(np.float32) * rng.uniform(0.8, 1.15), 0, 255).astype(np.uint8)
        if i % 2:
            img = img[:, ::-1]
        p = folder / f"img_{i:05d}.jpg"
        cv2.imwrite(str(p), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(p)
    return paths


def plain_loop(paths: list[Path], canvas: int, segmenter: str, cv2_threads: int | None = None) -> dict:
    from retsam_core.biomarkers import compute_biomarkers
    from retsam_core.biomarkers.scale import estimate_scale
    from retsam_core.image_io import DecodeLimits, decode_image
    from retsam_core.mask_codec import encode_mask
    from retsam_core.preprocess import preprocess
    from retsam_core.segmenter import load_segmenter

    import cv2

    saved = cv2.getNumThreads()
    if cv2_threads:
        cv2.setNumThreads(cv2_threads)
    t_start = time.perf_counter()
    seg = load_segmenter(segmenter)
    limits = DecodeLimits(target_side=canvas)
    st = {"decode_preprocess_s": 0.0, "segment_s": 0.0, "quantify_s": 0.0}
    for p in paths:
        t0 = time.perf_counter()
        d = decode_image(p.read_bytes(), limits)
        pre = preprocess(d.rgb, canvas, d.decode_scale, (d.original_height, d.original_width))
        t1 = time.perf_counter()
        masks = seg.segment(pre.image[None], pre.fov[None])[0]
        blobs = {k: encode_mask(v) for k, v in masks.items()}  # noqa: F841 - the pipeline stores them too
        t2 = time.perf_counter()
        compute_biomarkers(masks, pre.fov, estimate_scale(pre.fov, masks), image=pre.image, provided=seg.info.provides)
        t3 = time.perf_counter()
        st["decode_preprocess_s"] += t1 - t0
        st["segment_s"] += t2 - t1
        st["quantify_s"] += t3 - t2
    total = time.perf_counter() - t_start
    cv2.setNumThreads(saved)
    return {"total_s": total, "images_per_s": len(paths) / total, **st}


SETUP_SCRIPT = r"""
import os, sys
sys.path.insert(0, sys.argv[4])
import pyarrow as pa, pyarrow.parquet as pq
root, n, n_done = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
inp = os.path.join(root, "in")
for i in range(n):
    d = os.path.join(inp, f"site{i // 1000:03d}")
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, f"img_{i:07d}.jpg"), "wb").close()
ids = [f"site{i // 1000:03d}/img_{i:07d}.jpg" for i in range(n_done)]
for b in range(0, n_done, 1000):   # committed batches of 1000 rows, like a real output
    d = os.path.join(root, "out", "images", f"batch=b{b:07d}")
    os.makedirs(d)
    k = len(ids[b:b + 1000])
    pq.write_table(pa.table({"image_id": ids[b:b + 1000], "model_hash": [""] * k, "status": ["ok"] * k}),
                   os.path.join(d, "part-0.parquet"))
"""

RSS_SCRIPT = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[2])
from pipeline.listing import list_inputs
from pipeline.output import Output
from pipeline.selection import select_todo
import pipeline.stages, pipeline.scan  # everything the driver imports for a run (Ray itself excluded)
root = sys.argv[1]


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])  # kB


try:  # reset the high-water mark so that import-time peaks do not hide the listing's
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
base = status("VmRSS")
t = time.time()
listing = list_inputs(os.path.join(root, "in"))
todo, skipped, _ = select_todo(listing, Output(os.path.join(root, "out")).read_images(["image_id", "model_hash", "status"]))
shards = [todo.slice(i, 1000) for i in range(0, todo.num_rows, 1000)]
el = time.time() - t
peak = status("VmHWM")
print(json.dumps({"n": listing.table.num_rows, "done": skipped, "todo": todo.num_rows, "base_mb": base / 1024,
                  "peak_mb": peak / 1024, "seconds": el, "listing_mb": listing.table.nbytes / 2**20}))
"""


def driver_rss(n: int, done: int) -> dict:
    repo = str(Path(__file__).resolve().parents[1])
    root = tempfile.mkdtemp(prefix="retsam-rss-")
    subprocess.run([sys.executable, "-c", SETUP_SCRIPT, root, str(n), str(done), repo], check=True)
    r = subprocess.run([sys.executable, "-c", RSS_SCRIPT, root, repo], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--canvas-size", type=int, default=1024)
    ap.add_argument("--segmenter", default="classical")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--skip-rss", action="store_true")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="retsam-bench-"))
    t = time.time()
    paths = make_images(work / "in", args.n)
    print(f"generated {len(paths)} images in {time.time() - t:.1f} s under {work}", file=sys.stderr)

    import ray

    from pipeline.config import PipelineConfig
    from pipeline.resources import ensure_ray
    from pipeline.runner import run_cohort

    cfg = PipelineConfig(canvas_size=args.canvas_size, segmenter=args.segmenter)
    # The machine may be shared: the plain loop runs on half the images just BEFORE and half just AFTER the
    # pipeline, so that both see the same background load on average; load averages are printed with the result.
    half = len(paths) // 2
    load = {"loop_a": os.getloadavg()[0]}
    q = max(1, len(paths) // 4)
    loop_a = plain_loop(paths[:half], args.canvas_size, args.segmenter)
    loop1_a = plain_loop(paths[:q], args.canvas_size, args.segmenter, cv2_threads=1)
    t = time.time()
    ensure_ray(cfg)
    ray_init_s = time.time() - t
    load["pipeline"] = os.getloadavg()[0]
    t = time.time()
    summary = run_cohort(str(work / "in"), str(work / "out"), cfg, progress=False,
                         log=lambda m: print(m, file=sys.stderr))
    pipe_s = time.time() - t
    load["pipeline_end"] = os.getloadavg()[0]
    plan = json.loads(next((work / "out" / "_runs").glob("*.json")).read_text())["resources"]
    ray.shutdown()
    loop1_b = plain_loop(paths[-q:], args.canvas_size, args.segmenter, cv2_threads=1)
    loop_b = plain_loop(paths[half:], args.canvas_size, args.segmenter)
    loop1_rate = 2 * q / (loop1_a["total_s"] + loop1_b["total_s"])
    load["loop_b_end"] = os.getloadavg()[0]
    loop = {k: loop_a[k] + loop_b[k] for k in ("total_s", "decode_preprocess_s", "segment_s", "quantify_s")}
    loop["images_per_s"] = len(paths) / loop["total_s"]
    pipe_rate = args.n / pipe_s
    ratio = pipe_rate / loop["images_per_s"]
    tm = summary["timings"]
    print(f"\n### retsam run vs plain loop ({args.n} images, 1411 px JPEG, canvas {args.canvas_size}, "
          f"segmenter {args.segmenter}, {os.cpu_count()} cores)\n")
    print("| | wall s | images/s | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| plain single-process loop (half before, half after the pipeline) | {loop['total_s']:.1f} | "
          f"{loop['images_per_s']:.2f} | 1.00 |")
    print(f"| same loop, OpenCV limited to 1 thread ({2 * q} images, quarter before + quarter after) | "
          f"{loop1_a['total_s'] + loop1_b['total_s']:.1f} | {loop1_rate:.2f} | {loop1_rate / loop['images_per_s']:.2f} |")
    print(f"| `retsam run` (Ray Data; {plan['segment_actors']} segment + {plan['quantify_actors']} quantify actors;"
          f" dataset start-up, listing and commits included) | {pipe_s:.1f} | {pipe_rate:.2f} | {ratio:.2f} |")
    print(f"| (ray.init, once per process, not included above) | {ray_init_s:.1f} | | |")
    print(f"\n1-min load average (2 cores = 2.0 when only this ran): {', '.join(f'{k} {v:.1f}' for k, v in load.items())}")
    print("\n### Per-stage time (sum over images, seconds)\n")
    print("| stage | plain loop | pipeline actors |")
    print("|---|---:|---:|")
    print(f"| decode + preprocess + segment | {loop['decode_preprocess_s'] + loop['segment_s']:.1f} | {tm['segment_s']:.1f} |")
    print(f"| (of which decode + preprocess) | {loop['decode_preprocess_s']:.1f} | |")
    print(f"| quantify (biomarkers) | {loop['quantify_s']:.1f} | {tm['quantify_s']:.1f} |")
    print(f"| commit (stage + publish Parquet) | | {tm['write_s']:.1f} |")
    print(f"| listing + anti-join | | {tm['listing_s'] + tm['anti_join_s']:.2f} |")
    if not args.skip_rss:
        print("\n### Driver peak RSS: listing + anti-join only (half of the listing already done)\n")
        print("| listing | already done | to do | listing table MB | RSS after imports MB | peak RSS MB | peak - before MB | seconds |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n in (1000, 20000, 100000):
            r = driver_rss(n, n // 2)
            print(f"| {r['n']} | {r['done']} | {r['todo']} | {r['listing_mb']:.1f} | {r['base_mb']:.0f} | "
                  f"{r['peak_mb']:.0f} | {r['peak_mb'] - r['base_mb']:.0f} | {r['seconds']:.2f} |")


if __name__ == "__main__":
    main()
