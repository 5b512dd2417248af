"""Benchmark: does the quality grade flag photographs the model cannot segment?

    python benchmarks/bench_quality_grade.py --split test --out docs/model_eval/quality_grade/test.json

Real photographs with expert vessel labels (CHASE_DB1, HRF-AV) are degraded the way screening photographs go wrong
(defocus blur, under-exposure, haze as from a cataract, uneven illumination, heavy JPEG compression), each at three
strengths, on the model canvas. For every version the default segmenter's vessel DSC against the expert labels and
the pipeline's quality signals (`retsam_core.biomarkers.quality`, from that version and its vessel mask) are
recorded. Printed: the Spearman correlation of quality_score with DSC, DSC by grade, and how well the grade and the
score pick out the versions whose segmentation failed (DSC below 0.6, or 10 points under the clean photograph's).
Not a test; nothing is tuned on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (name, strengths, how): each maps a canvas RGB uint8 + FOV to a degraded canvas
DEGRADATIONS: dict[str, tuple[float, ...]] = {
    "blur_sigma_px": (1.5, 3.0, 6.0),
    "exposure_gain": (0.5, 0.3, 0.15),
    "haze_alpha": (0.3, 0.5, 0.7),
    "uneven_floor": (0.6, 0.35, 0.15),
    "jpeg_quality": (30, 12, 4),
}
FAILED_DSC = 0.6
FAILED_DROP = 0.10


def failed(row: dict) -> bool:
    """A version whose segmentation failed: DSC under FAILED_DSC, or FAILED_DROP under its clean photograph's."""
    return row["dsc"] < FAILED_DSC or row["drop"] > FAILED_DROP


def degrade(image: np.ndarray, fov: np.ndarray, kind: str, strength: float) -> np.ndarray:
    x = image.astype(np.float32)
    if kind == "blur_sigma_px":
        out = cv2.GaussianBlur(x, (0, 0), strength)
    elif kind == "exposure_gain":
        out = x * strength
    elif kind == "haze_alpha":  # a bright, featureless veil over the retina
        veil = cv2.GaussianBlur(x, (0, 0), 40) * 0.5 + 110
        out = x * (1 - strength) + veil * strength
    elif kind == "uneven_floor":  # light falls off to `strength` across the field, left to right
        ramp = np.linspace(1.0, strength, x.shape[1], dtype=np.float32)[None, :, None]
        out = x * ramp
    elif kind == "jpeg_quality":
        ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(strength)])
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32)
    else:
        raise ValueError(kind)
    out = np.clip(out, 0, 255).astype(np.uint8)
    out[~fov] = 0
    return out


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def auc(scores: list[float], positive: list[bool]) -> float | None:
    """P(score of a failed version < score of a good one): 1 = the score ranks every failure below every success."""
    s, p = np.asarray(scores), np.asarray(positive, bool)
    if p.all() or not p.any():
        return None
    lo, hi = s[p], s[~p]
    return float(((lo[:, None] < hi[None, :]).sum() + 0.5 * (lo[:, None] == hi[None, :]).sum()) / (len(lo) * len(hi)))


def run(split: str, limit: int | None, segmenter_name: str) -> dict:
    from retsam_core.biomarkers.quality import measure, score_and_grade
    from retsam_core.evaluation.evaluate import dataset_items
    from retsam_core.evaluation.metrics import dice
    from retsam_core.segmenter import load_segmenter

    seg = load_segmenter(segmenter_name)
    rows = []
    for dataset in ("chase_db1", "hrf_av"):
        for id_, image, fov, gts, _ in dataset_items(dataset, split, limit=limit):
            clean = None
            versions = [("clean", 0.0)] + [(k, s) for k, ss in DEGRADATIONS.items() for s in ss]
            for kind, strength in versions:
                img = image if kind == "clean" else degrade(image, fov, kind, strength)
                vessel = seg.segment(img[None], fov[None])[0]["vessel"]
                dsc = dice(vessel, gts["vessel"], fov | gts["vessel"])
                clean = dsc if kind == "clean" else clean
                vals = measure(img, fov, vessel)
                score, grade = score_and_grade(vals) or (None, None)
                rows.append({"dataset": dataset, "id": id_, "kind": kind, "strength": strength, "dsc": dsc,
                             "drop": clean - dsc, "quality_score": score, "quality_grade": grade,
                             "vessel_fraction": float((vessel & fov).sum() / max(fov.sum(), 1)), **vals})
            print(f"{dataset}/{id_}: clean DSC {clean:.3f}", flush=True)
    return summarise(rows)


def summarise(rows: list[dict]) -> dict:
    failures = [failed(r) for r in rows]
    by_grade = {}
    for g in ("good", "usable", "reject"):
        sel = [r for r in rows if r["quality_grade"] == g]
        if sel:
            by_grade[g] = {"versions": len(sel), "median_dsc": float(np.median([r["dsc"] for r in sel])),
                           "failed": int(sum(f for r, f in zip(rows, failures) if r["quality_grade"] == g))}
    by_kind = {}
    for kind in ["clean", *DEGRADATIONS]:
        for strength in sorted({r["strength"] for r in rows if r["kind"] == kind}, reverse=kind != "blur_sigma_px"):
            sel = [r for r in rows if r["kind"] == kind and r["strength"] == strength]
            by_kind[f"{kind}={strength:g}"] = {
                "median_dsc": float(np.median([r["dsc"] for r in sel])),
                "median_score": float(np.median([r["quality_score"] for r in sel])),
                "reject": sum(r["quality_grade"] == "reject" for r in sel), "versions": len(sel)}
    n_failed = int(sum(failures))
    rejected = [r["quality_grade"] == "reject" for r in rows]
    return {
        "versions": len(rows), "failed": n_failed,
        "failed_definition": f"DSC < {FAILED_DSC} or more than {FAILED_DROP:.2f} under the clean photograph",
        "spearman_score_dsc": spearman([r["quality_score"] for r in rows], [r["dsc"] for r in rows]),
        "auc_score_for_failure": auc([r["quality_score"] for r in rows], failures),
        "reject_recall": (sum(f and j for f, j in zip(failures, rejected)) / n_failed) if n_failed else None,
        "reject_precision": (sum(f and j for f, j in zip(failures, rejected)) / sum(rejected)) if any(rejected) else None,
        "by_grade": by_grade, "by_degradation": by_kind, "rows": rows,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, help="images per dataset")
    ap.add_argument("--segmenter", default="default")
    ap.add_argument("--out", help="write the figures (and every version's row) as JSON")
    a = ap.parse_args(argv)
    t0 = time.time()
    res = run(a.split, a.limit, a.segmenter)
    res["seconds"] = time.time() - t0
    print(f"\n{res['versions']} versions, {res['failed']} failed ({res['failed_definition']})")
    print(f"Spearman(quality_score, DSC) = {res['spearman_score_dsc']:.3f}; AUC of the score for failure = "
          f"{res['auc_score_for_failure']}; grade reject: recall {res['reject_recall']}, precision {res['reject_precision']}")
    print("| grade | versions | median DSC | failed |\n|---|---|---|---|")
    for g, v in res["by_grade"].items():
        print(f"| {g} | {v['versions']} | {v['median_dsc']:.3f} | {v['failed']} |")
    print("| degradation | median DSC | median score | reject |\n|---|---|---|---|")
    for k, v in res["by_degradation"].items():
        print(f"| {k} | {v['median_dsc']:.3f} | {v['median_score']:.3f} | {v['reject']}/{v['versions']} |")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
