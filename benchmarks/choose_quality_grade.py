"""Choose the quality grade's reject anchors on the TRAINING versions of bench_quality_grade.py, by the rule in
docs/model_eval/quality_grade/rule.md (highest reject recall of failed versions, with at most 2 % of clean
photographs rejected and precision at least 0.7).

    python benchmarks/choose_quality_grade.py runs/quality_grade_train.json

Candidates: the sharpness signal's "bad" anchor, and a seventh signal, the vessel mask's share of the field of view,
whose anchors put the reject line at a threshold t ("good" at the clean photographs' median). Prints the current
grade's figures, the best candidate's, and whether the rule adopts it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retsam_core.biomarkers.quality import QualityConfig, score_and_grade  # noqa: E402
from bench_quality_grade import failed as version_failed  # noqa: E402  (this folder is on sys.path)

MAX_CLEAN_REJECT = 0.02
MIN_PRECISION = 0.7
MIN_RECALL_GAIN = 0.2
SIGNALS = ("fov_fraction", "brightness", "illumination_uniformity", "contrast", "sharpness", "vessel_visibility")


@dataclass(frozen=True)
class WithVesselFraction(QualityConfig):
    vessel_fraction: tuple[float, float] = (0.0, 1.0)


def figures(rows: list[dict], cfg: QualityConfig, use_vessel_fraction: bool) -> dict:
    failed = np.array([version_failed(r) for r in rows])
    clean = np.array([r["kind"] == "clean" for r in rows])
    keys = SIGNALS + (("vessel_fraction",) if use_vessel_fraction else ())
    reject = np.array([(score_and_grade({k: r[k] for k in keys}, cfg) or (None, None))[1] == "reject" for r in rows])
    hit = (reject & failed).sum()
    return {"recall": float(hit / max(failed.sum(), 1)), "precision": float(hit / reject.sum()) if reject.any() else 0.0,
            "clean_reject": float(reject[clean].mean()), "rejected": int(reject.sum()), "failed": int(failed.sum())}


def admissible(f: dict) -> bool:
    return f["clean_reject"] <= MAX_CLEAN_REJECT and f["precision"] >= MIN_PRECISION


def choose(rows: list[dict]) -> dict:
    base = QualityConfig()
    current = figures(rows, base, False)
    vf_clean = np.median([r["vessel_fraction"] for r in rows if r["kind"] == "clean"])
    best = None
    for sharp_bad, t in product((0.5, 1.0, 1.5, 2.0, 3.0, 4.0), [None, *np.arange(0.01, 0.09, 0.0025)]):
        good_vf = float(vf_clean)
        cfg = WithVesselFraction(**{**base.__dict__}, vessel_fraction=(0.0, 1.0))
        cfg = replace(cfg, sharpness=(sharp_bad, max(base.sharpness[1], sharp_bad * 2)))
        if t is not None:
            bad = (t - base.reject_below * good_vf) / (1 - base.reject_below)
            cfg = replace(cfg, vessel_fraction=(float(bad), good_vf))
        f = figures(rows, cfg, t is not None)
        cand = {"sharpness": list(cfg.sharpness), "vessel_fraction": list(cfg.vessel_fraction) if t is not None else None,
                "vessel_fraction_reject_below": None if t is None else float(t), **f}
        if admissible(f) and (best is None or f["recall"] > best["recall"]
                              or (f["recall"] == best["recall"] and f["precision"] > best["precision"])):
            best = cand
    adopt = best is not None and best["recall"] >= current["recall"] + MIN_RECALL_GAIN
    return {"current": current, "current_admissible": admissible(current), "best": best, "adopt": bool(adopt),
            "clean_vessel_fraction_median": float(vf_clean)}


def candidate_config(best: dict) -> QualityConfig:
    cfg = replace(WithVesselFraction(**QualityConfig().__dict__), sharpness=tuple(best["sharpness"]))
    return replace(cfg, vessel_fraction=tuple(best["vessel_fraction"])) if best.get("vessel_fraction") else cfg


def clean_reject_elsewhere(best: dict, datasets=("idrid", "drishti_gs1")) -> dict:
    """How many clean TRAINING photographs of the cameras without vessel labels the candidate rejects (no label is
    read): a grade that rejects good photographs of another camera does not generalise."""
    from retsam_core.biomarkers.quality import measure
    from retsam_core.evaluation.evaluate import dataset_items
    from retsam_core.segmenter import load_segmenter

    cfg, seg, out = candidate_config(best), load_segmenter("default"), {}
    for ds in datasets:
        current = candidate = n = 0
        fractions = []
        for _, image, fov, _, _ in dataset_items(ds, "train"):
            vessel = seg.segment(image[None], fov[None])[0]["vessel"]
            vals = measure(image, fov, vessel)
            vals["vessel_fraction"] = float((vessel & fov).sum() / max(fov.sum(), 1))
            current += (score_and_grade({k: vals[k] for k in SIGNALS}) or (0, ""))[1] == "reject"
            keys = SIGNALS + (("vessel_fraction",) if best.get("vessel_fraction") else ())
            candidate += (score_and_grade({k: vals[k] for k in keys}, cfg) or (0, ""))[1] == "reject"
            fractions.append(vals["vessel_fraction"])
            n += 1
        out[ds] = {"images": n, "current_reject": int(current), "candidate_reject": int(candidate),
                   "vessel_fraction_median": float(np.median(fractions))}
        print(ds, out[ds], flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train_json")
    ap.add_argument("--out")
    ap.add_argument("--other-cameras", action="store_true",
                    help="also count the best candidate's rejections of clean IDRiD and DRISHTI-GS1 training photographs")
    a = ap.parse_args(argv)
    rows = json.loads(Path(a.train_json).read_text())["rows"]
    res = choose(rows)
    if a.other_cameras and res["best"]:
        res["best_clean_reject_other_cameras"] = clean_reject_elsewhere(res["best"])
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
