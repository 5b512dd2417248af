"""Learned segmenter benchmark: CPU inference time per image (one core, median) + the evaluation table.

  python benchmarks/bench_model.py [--weights W] [--runs 7] [--eval-summary out/eval/summary.json] [--json OUT]

Reports: forward pass at the model's own resolution (network only), and `segment()` on a 1024 px canvas
(resize in, network, resize + threshold out), with the 1-minute load average so that numbers taken on a shared
machine can be judged. The evaluation table is read from a summary written by `retsam_core.evaluation.report`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def bench(weights: str | None, runs: int = 7, canvas: int = 1024) -> dict:
    from retsam_core.model.loading import WEIGHTS_DIR, LearnedSegmenter

    torch.set_num_threads(1)
    weights = weights or str(WEIGHTS_DIR / "retsam-small.safetensors")
    seg = LearnedSegmenter.from_uri(weights, device="cpu")
    R = seg.model.cfg.resolution
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 255, (1, 3, R, R), dtype=np.uint8))
    img = rng.integers(0, 255, (1, canvas, canvas, 3), dtype=np.uint8)
    fov = np.ones((1, canvas, canvas), bool)
    fwd, full = [], []
    with torch.no_grad():
        seg.model(seg.model.normalise(x))  # warm-up
        for _ in range(runs):
            t = time.perf_counter()
            seg.model(seg.model.normalise(x))
            fwd.append((time.perf_counter() - t) * 1000)
    seg.segment(img, fov)
    for _ in range(runs):
        t = time.perf_counter()
        seg.segment(img, fov)
        full.append((time.perf_counter() - t) * 1000)
    return {
        "weights": weights, "sha256": seg.info.weights_hash, "model_resolution": R, "canvas": canvas, "threads": 1,
        "forward_ms_median": round(statistics.median(fwd), 1), "segment_ms_median": round(statistics.median(full), 1),
        "runs": runs, "params_millions": round(sum(p.numel() for p in seg.model.parameters()) / 1e6, 2),
        "decoders_computed": [g for g in seg.model.cfg.task_groups if g not in seg.model.skip_groups],
        "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(), "torch": torch.__version__,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--eval-summary", default="docs/model_eval/summary.json")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    r = bench(a.weights, a.runs)
    print(json.dumps(r, indent=1))
    p = Path(a.eval_summary)
    if p.exists():
        from retsam_core.evaluation.report import summary_markdown

        print(summary_markdown(json.loads(p.read_text())))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
