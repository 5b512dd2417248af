"""How much do CRAE / CRVE / AVR move when the optic disc moves a pixel, and does reading them on several circles
across zone B (instead of the mid circle alone) steady them? (HRF-AV expert A/V maps)

  python benchmarks/bench_calibre_stability.py [--split train] [--circles 1 5] [--json OUT]

Per image: the pipeline's canvas, the segmenter's optic disc (HRF-AV has no disc labels) and the expert artery/vein
maps. Zone B is placed from that disc and from the same disc grown and shrunk by one pixel (about ±2.5 % of its
radius, less than two models' discs differ). For each circle count it prints, over the images, the median of each
image's largest relative change under those moves, and how far the model's own A/V map agrees with the expert's
(Pearson r and median absolute difference, model disc for both, as `bench_av_calibre.py`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from bench_av_calibre import KEYS, agreement, hrf_av_images  # noqa: E402  (this folder is on sys.path)
from scipy.ndimage import binary_dilation, binary_erosion  # noqa: E402

def _calibre(masks: dict, fov, scale, image, circles: int) -> dict:
    from retsam_core.biomarkers import compute_biomarkers
    from retsam_core.biomarkers.context import Config

    res = compute_biomarkers(masks, fov, scale, image=image, provided=list(masks),
                             config=Config(calibre_circles=circles))
    return {k: res.values.get(k) for k in KEYS}


def run(split: str, circles: tuple[int, ...], segmenter: str = "learned", data_root: str | None = None) -> dict:
    from retsam_core.biomarkers.scale import estimate_scale
    from retsam_core.segmenter import load_segmenter

    seg = load_segmenter(segmenter)
    rows = []
    for id_, pre, pred, expert_maps, field_angle in hrf_av_images(seg, split, data_root):
        expert = {t: expert_maps[t] for t in ("artery", "vein")}
        disc = pred["optic_disc"]
        model = {t: pred[t] for t in ("artery", "vein", "optic_disc", "fovea") if t in pred}
        scale = estimate_scale(pre.fov, expert, field_angle_deg=field_angle)
        discs = {"as segmented": disc, "grown 1 px": binary_dilation(disc), "shrunk 1 px": binary_erosion(disc)}
        row = {"id": id_}
        for n in circles:
            expert_by_disc = {name: _calibre(expert | {"optic_disc": d, "fovea": pred.get("fovea")}, pre.fov, scale,
                                             pre.image, n) for name, d in discs.items()}
            row[f"expert_{n}"] = expert_by_disc["as segmented"]
            row[f"model_{n}"] = _calibre(model, pre.fov, scale, pre.image, n)
            for k in KEYS:
                vals = [v[k] for v in expert_by_disc.values()]
                base = vals[0]
                if base is None or any(v is None for v in vals):
                    row[f"shift_{n}_{k}"] = None if base is None else 1.0  # a value that vanishes is a full change
                else:
                    row[f"shift_{n}_{k}"] = max(abs(v - base) / base for v in vals)
        rows.append(row)
        shifts = (f"{n}c:{k.split('_')[0]}={row[f'shift_{n}_{k}']!s:.5}" for n in circles for k in KEYS)
        print(id_, " ".join(shifts), flush=True)
    summary = {"split": split, "images": len(rows), "weights": seg.info.weights_hash[:12]}
    for n in circles:
        s = {}
        for k in KEYS:
            shifts = [r[f"shift_{n}_{k}"] for r in rows if r[f"shift_{n}_{k}"] is not None]
            pairs = [(r[f"model_{n}"][k], r[f"expert_{n}"][k]) for r in rows
                     if r[f"model_{n}"][k] is not None and r[f"expert_{n}"][k] is not None]
            median_shift = round(float(np.median(shifts)), 4) if shifts else None
            s[k] = {"median_largest_relative_change_disc_pm_1px": median_shift,
                    "images_changed_over_5pct": int(sum(x > 0.05 for x in shifts)),
                    "model_vs_expert": agreement(pairs)}
        summary[f"circles_{n}"] = s
    return {"summary": summary, "rows": rows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="train", choices=("train", "test"))
    ap.add_argument("--circles", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--segmenter", default="learned")
    ap.add_argument("--data-root")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    out = run(a.split, tuple(a.circles), a.segmenter, a.data_root)
    print(json.dumps(out["summary"], indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
