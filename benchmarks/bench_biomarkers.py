"""Whole-catalogue time for one 1024 x 1024 image (not a test): `python benchmarks/bench_biomarkers.py [--repeat N]`.

Inputs: HRF-AV 01_h artery/vein labels resized to 1024 wide (padded to a square canvas) with a synthetic disc, cup,
fovea and lesion set; without the shared data, the fully synthetic fundus (retsam_core.biomarkers.synthetic).
Prints per-family medians and the overall median. Target: median <= 0.5 s on one core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: no hidden BLAS/OpenMP pools
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from retsam_core.biomarkers import Scale, compute_biomarkers  # noqa: E402
from retsam_core.biomarkers.synthetic import fundus_masks

SIZE = 1024


def _hrf_masks(root: Path) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray] | None:
    p = root / "HRF-AV" / "masks" / "av" / "01_h_AVmanual.png"
    if not p.is_file():
        return None
    av = cv2.imread(str(p), cv2.IMREAD_COLOR)[..., ::-1]
    h, w = av.shape[:2]
    nh = round(h * SIZE / w)
    y0 = (SIZE - nh) // 2

    def canvas(m: np.ndarray) -> np.ndarray:
        out = np.zeros((SIZE, SIZE), bool)
        out[y0 : y0 + nh] = cv2.resize(m.astype(np.float32), (SIZE, nh), interpolation=cv2.INTER_AREA) >= 0.5
        return out

    masks = {"artery": canvas(av[..., 0] > 127), "vein": canvas(av[..., 2] > 127),
             "vessel": canvas((av > 127).any(axis=-1))}
    synth, _ = fundus_masks(SIZE, seed=1)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    fov = (np.hypot(xx - SIZE / 2, yy - SIZE / 2) < 0.49 * SIZE) & (yy >= y0) & (yy < y0 + nh)
    dx, dy, r = 2586 * SIZE / w, 1138 * SIZE / w + y0, 160 * SIZE / w  # 01_h disc (tests/test_biomarkers_real.py)
    masks["optic_disc"] = np.hypot(xx - dx, yy - dy) < r
    masks["optic_cup"] = np.hypot((xx - dx) / 0.6, (yy - dy) / 0.65) < r
    masks["fovea"] = np.hypot(xx - (dx - 2.5 * 2 * r), yy - (dy + 0.3 * r)) < 0.02 * SIZE
    for k in ("microaneurysm", "hemorrhage", "hard_exudate", "soft_exudate", "drusen"):
        masks[k] = synth[k] & fov
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    jpg = next((root / "HRF-AV" / "images").glob("01_h.*"), None)
    if jpg is not None:
        rgb = cv2.imread(str(jpg), cv2.IMREAD_REDUCED_COLOR_2)[..., ::-1]
        image[y0 : y0 + nh] = cv2.resize(rgb, (SIZE, nh), interpolation=cv2.INTER_AREA)
    return masks, fov, image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    root = Path(os.environ.get("RETSAM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    loaded = _hrf_masks(root)
    source = "HRF-AV 01_h labels + image, synthetic disc/cup/fovea/lesions" if loaded else "synthetic fundus, no image"
    masks, fov, image = loaded or (*fundus_masks(SIZE, seed=1), None)
    scale = Scale(0.0125, "manifest")
    cv2.setNumThreads(1)  # one core: CPU time then equals single-core time even on a busy machine
    compute_biomarkers(masks, fov, scale, image=image)  # warm-up: skan's numba compilation
    totals, walls, fams = [], [], {}
    for _ in range(args.repeat):
        t0, w0 = time.process_time(), time.perf_counter()
        res = compute_biomarkers(masks, fov, scale, image=image)
        totals.append(time.process_time() - t0)
        walls.append(time.perf_counter() - w0)
        for k, v in res.timings.items():
            fams.setdefault(k, []).append(v)
    n_val = sum(v is not None for v in res.values.values())
    print(f"inputs: {source}; {SIZE}x{SIZE}; {len(res.values)} columns ({n_val} non-null), {len(res.segments)} segments")
    for k, v in sorted(fams.items(), key=lambda kv: -statistics.median(kv[1])):
        print(f"  {k:12s} median {statistics.median(v) * 1000:7.1f} ms CPU")
    print(f"whole catalogue: median {statistics.median(totals):.3f} s CPU on one core (min {min(totals):.3f}, "
          f"max {max(totals):.3f}, n={len(totals)}); wall median {statistics.median(walls):.3f} s at load average "
          f"{os.getloadavg()[0]:.1f} (wall is inflated when other jobs share the cores)")


if __name__ == "__main__":
    main()
