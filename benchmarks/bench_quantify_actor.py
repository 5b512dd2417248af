"""CPU seconds per image on the quantify (CPU) actors, and how many CPUs that asks per GPU.

On a GPU cluster the network runs at hundreds of images per second (`bench_model.py --gpu`; 301 images/s in bf16 on
one H200 in session 12), and every image then needs the CPU actors' work: the segmenter's finishing (A/V vote,
post-processing, classical fovea), every biomarker, and the stored 8-bit PNG masks. That work, not the GPU, sets
how many CPUs a cohort needs. This runs the pipeline's own stages without Ray: `SegmentStage` once per image (the
network on this CPU, not timed), then `QuantifyStage.quantify_row` on its row, one thread, median of `--runs`,
with the finishing's share timed separately. Real photographs: the HRF-AV test images when the shared data is
present, else scikit-image's fundus.

    python benchmarks/bench_quantify_actor.py [--images 6] [--runs 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GPU_BENCH = Path(__file__).resolve().parents[1] / "docs" / "model_eval" / "bench_gpu.json"


def photographs(n: int, tmp: Path) -> list[Path]:
    try:
        from retsam_core.datasets.readers import get_reader

        reader = get_reader("hrf_av")
        return [reader.load("test", i).image_path for i in reader.ids("test")[:n]]
    except (FileNotFoundError, OSError):
        import cv2
        import skimage.data

        path = tmp / "skimage_retina.png"
        cv2.imwrite(str(path), cv2.cvtColor(skimage.data.retina()[..., :3], cv2.COLOR_RGB2BGR))
        return [path]


def run(n_images: int = 6, runs: int = 3, segmenter: str = "default") -> dict:
    import tempfile

    import fsspec
    import pyarrow as pa

    from pipeline.config import PipelineConfig
    from pipeline.runner import segmenter_provenance
    from pipeline.stages import QuantifyStage, SegmentStage

    config = PipelineConfig(segmenter=segmenter)
    cfg = config.to_dict()
    with tempfile.TemporaryDirectory() as tmp:
        paths = photographs(n_images, Path(tmp))
        seg = SegmentStage(cfg, None, fsspec.filesystem("file"), str(paths[0].parent), "file")
        rows = seg(pa.table({"path": [str(p) for p in paths], "bytes": [p.read_bytes() for p in paths]})).to_pylist()
    prov = segmenter_provenance(config)
    prov.update(pipeline_version="bench", run_id="bench", quant_id="bench")
    stage = QuantifyStage(cfg, None, fsspec.filesystem("file"), prov, seg.targets, finisher=prov.get("finisher"))
    finishing: list[float] = []
    inner = stage._finish

    def timed_finish(*a, **k):
        t = time.perf_counter()
        out = inner(*a, **k)
        finishing.append(time.perf_counter() - t)
        return out

    stage._finish = timed_finish
    per_image = []
    for row in rows:
        totals, finishes = [], []
        for _ in range(runs + 1):  # the first pass warms caches and is dropped
            finishing.clear()
            t = time.perf_counter()
            out = stage.quantify_row(dict(row))
            totals.append(time.perf_counter() - t)
            finishes.append(sum(finishing))
        if out["status"] not in ("ok", "ungradable"):
            raise RuntimeError(f"{row['image_id']}: {out['status']}: {out['error']}")
        per_image.append({"image": row["image_id"], "cpu_s": statistics.median(totals[1:]),
                          "finishing_s": statistics.median(finishes[1:])})
    cpu_s = statistics.median(r["cpu_s"] for r in per_image)
    result = {"segmenter": prov["segmenter"], "weights": prov["model_hash"][:12], "images": len(per_image),
              "runs": runs, "threads": 1, "cpu_s_per_image": round(cpu_s, 4),
              "finishing_s_per_image": round(statistics.median(r["finishing_s"] for r in per_image), 4),
              "images_per_s_per_cpu": round(1.0 / cpu_s, 3), "load_average_1min": os.getloadavg()[0]}
    if GPU_BENCH.exists():  # the network's measured GPU rate -> CPUs to keep one GPU busy
        gpu = json.loads(GPU_BENCH.read_text())
        rate = gpu.get("network_bf16_images_per_s")
        if rate:
            result.update(gpu_network_images_per_s=rate, gpu_device=gpu.get("device"),
                          cpus_per_gpu_at_network_rate=round(rate * cpu_s))
    result["per_image"] = per_image
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--segmenter", default="default")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    r = run(a.images, a.runs, a.segmenter)
    print(json.dumps({k: v for k, v in r.items() if k != "per_image"}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
    main()
