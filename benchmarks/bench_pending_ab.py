"""`segment_pending` (the pipeline's segmentation-actor step) of this tree against an older `loading.py`, in one
process on one device, alternating rounds, plus a bit-for-bit check of their outputs. Session 16 ran it on a lent
H200 to measure the A/V quantisation and FOV cut moved onto the GPU (docs/model_eval/segment_pending_gpu_ab.json):

    git show 54a229f:retsam_core/model/loading.py > /tmp/old_loading.py
    python benchmarks/bench_pending_ab.py /tmp/old_loading.py [--seconds 6 --rounds 3 --batch 16 --json OUT]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def main(argv=None) -> None:
    import skimage.data
    import torch

    import retsam_core.model.loading as new
    from retsam_core.preprocess import preprocess

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old_loading", help="an older retsam_core/model/loading.py")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    spec = importlib.util.spec_from_file_location("loading_old", a.old_loading)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    w = str(new.default_weights_path())
    segs = {"new": new.LearnedSegmenter.from_uri(w, device=dev), "old": old.LearnedSegmenter.from_uri(w, device=dev)}
    pre = preprocess(skimage.data.retina(), 1024)
    imgs, fovs = np.repeat(pre.image[None], a.batch, 0), np.repeat(pre.fov[None], a.batch, 0)
    x, y = segs["new"].segment_pending(imgs[:2], fovs[:2]), segs["old"].segment_pending(imgs[:2], fovs[:2])
    same = all(p.masks.keys() == q.masks.keys() and p.evidence.keys() == q.evidence.keys()
               and all(np.array_equal(p.masks[k], q.masks[k]) for k in p.masks)
               and all(np.array_equal(p.evidence[k], q.evidence[k]) for k in p.evidence) for p, q in zip(x, y))
    rates: dict[str, list[float]] = {"new": [], "old": []}
    for name in ["new", "old"] * a.rounds:
        seg = segs[name]
        seg.segment_pending(imgs, fovs)
        if dev == "cuda":
            torch.cuda.synchronize()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < a.seconds:
            seg.segment_pending(imgs, fovs)
            n += 1
        rates[name].append(n * a.batch / (time.perf_counter() - t0))
    r = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "batch": a.batch,
         "identical_outputs": same, "images_per_s": {k: [round(v, 1) for v in vs] for k, vs in rates.items()},
         "median_new_over_old": round(statistics.median(rates["new"]) / statistics.median(rates["old"]), 2)}
    print(json.dumps(r))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
    main()
