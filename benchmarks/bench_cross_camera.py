"""How much accuracy does the training recipe lose on a camera it never saw? (held-out-camera test)

  python benchmarks/bench_cross_camera.py --target vessel \
      --model chase_db1=runs/crosscam/chase-only.safetensors --model hrf_av=runs/crosscam/hrf-only.safetensors \
      --reference learned --reference classical [--json docs/model_eval/cross_camera_vessel.json]
  python benchmarks/bench_cross_camera.py --target vessel ... --reference hrf_av+wide-aug=runs/crosscam/hrf-only-wideaug.safetensors
  python benchmarks/bench_cross_camera.py --target optic_disc \
      --model drishti_gs1=runs/crosscam/drishti-only.safetensors --model idrid=runs/crosscam/idrid-only.safetensors
  python benchmarks/bench_cross_camera.py --target optic_disc --json docs/model_eval/cross_camera_optic_disc_standardised.json \
      --model drishti_gs1=runs/crosscam/drishti-only-std.safetensors --model idrid=runs/crosscam/idrid-only-std.safetensors

Every `--model DATASET=WEIGHTS` was trained on DATASET's training split alone (`jobs/configs/crosscam-*-cpu.json`:
same architecture, recipe and budget). Each model is scored on the target's test split of every dataset that labels
it; the diagonal is the in-domain figure, the rest are cameras and populations the model never saw (CHASE_DB1:
children in England, Nidek NM-200-D, 30 degrees; HRF: adults, healthy/diabetic/glaucomatous, Canon CR-1, 45 degrees;
DRISHTI-GS1: a glaucoma clinic in India, disc-centred; IDRiD: diabetic retinopathy in India, Kowa VX-10 alpha,
macula-centred, 50 degrees). Per test set it prints the in-domain DSC, the
cross-camera DSC and their ratio, measured in one run. `--reference` adds segmenters that saw every dataset (the
shipped weights: `learned`) or none (`classical`) as fixed points on the same images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

TEST_SETS = {"vessel": ("chase_db1", "hrf_av"), "optic_disc": ("drishti_gs1", "idrid")}


def score(segmenter, target: str, dataset: str, limit: int | None = None) -> dict:
    """DSC (and clDice for vessels) of one segmenter's `target` on one test split (the pipeline's 1024 px canvas)."""
    from retsam_core.datasets.readers import DATASETS
    from retsam_core.evaluation.evaluate import dataset_items, evaluate_items

    side = segmenter.info.canvas_side(DATASETS[dataset].field_angle_deg)  # an angular-scale model's own canvas
    res = evaluate_items(segmenter, dataset_items(dataset, "test", limit=limit, model_side=side), [target], title=f"{dataset}/test",
                         log=lambda *_: None)
    if target not in res["aggregate"]:
        raise ValueError(f"{segmenter.info.name} does not provide {target}")
    dsc = [r[target]["dsc"] for r in res["per_image"]]
    agg = res["aggregate"][target]
    return {"images": len(dsc), "dsc": round(agg["dsc"], 4), "dsc_median": round(float(np.median(dsc)), 4),
            "sensitivity": round(agg["sensitivity"], 4)} | ({"cldice": round(agg["cldice"], 4)} if "cldice" in agg else {})


def cross_camera(target: str, models: dict[str, str], references: list[str], limit: int | None = None) -> dict:
    """`models`: {training dataset: weights}. Returns the score matrix and, per test set, in-domain vs cross."""
    from retsam_core.segmenter import load_segmenter

    test_sets = TEST_SETS[target]
    matrix: dict[str, dict[str, dict]] = {}
    named = [r.split("=", 1) if "=" in r else (r, r) for r in references]  # "LABEL=SPEC" or a bare spec
    for label, spec in list(models.items()) + named:
        seg = load_segmenter(spec, device="cpu")
        matrix[label] = {"weights": getattr(seg.info, "weights_hash", "")[:12]}
        for ds in test_sets:
            matrix[label][ds] = score(seg, target, ds, limit)
            print(f"{label:>12} on {ds:<10} DSC {matrix[label][ds]['dsc']:.3f} (median {matrix[label][ds]['dsc_median']:.3f})",
                  flush=True)
    shift = {}
    for ds in test_sets:
        if ds not in models:
            continue
        own = matrix[ds][ds]["dsc"]
        others = {m: matrix[m][ds]["dsc"] for m in models if m != ds}
        if not others:
            continue
        best = max(others, key=others.get)
        shift[ds] = {"in_domain_dsc": own, "cross_camera_dsc": others[best], "cross_trained_on": best,
                     "ratio_cross_over_in": round(others[best] / own, 3), "drop_points": round(100 * (own - others[best]), 1)}
    return {"target": target, "models": models, "references": references, "matrix": matrix, "shift": shift}


def markdown(out: dict) -> str:
    """The matrix as a table (rows: what a model was trained on; columns: test splits) and the ratios below it."""
    sets = TEST_SETS[out["target"]]
    lines = [f"# Held-out cameras: {out['target']}", "",
             "`python benchmarks/bench_cross_camera.py`: each row a segmenter (a model trained on one dataset's "
             "training split alone, or a reference), each column a test split; bold = in-domain. Scored on the 1024 px "
             "canvas, threshold 0.5 (an angular-scale model segments its own canvas for the camera, averaged onto it).", "",
             f"| {out['target']} DSC (median) | " + " | ".join(f"{ds} test" for ds in sets) + " |",
             "|---|" + "---|" * len(sets)]
    for label, row in out["matrix"].items():
        what = f"trained on {label} only" if label in out["models"] else label
        cells = [f"**{row[ds]['dsc']:.3f}** ({row[ds]['dsc_median']:.3f})" if label == ds else
                 f"{row[ds]['dsc']:.3f} ({row[ds]['dsc_median']:.3f})" for ds in sets]
        lines.append(f"| {what} (`{row['weights'] or '-'}`) | " + " | ".join(cells) + " |")
    lines.append("")
    for ds, s in out["shift"].items():
        lines.append(f"- {ds} test: in-domain {s['in_domain_dsc']:.3f}, trained on {s['cross_trained_on']} only "
                     f"{s['cross_camera_dsc']:.3f}: ratio {s['ratio_cross_over_in']:.3f} ({s['drop_points']:.1f} points lost)")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=sorted(TEST_SETS), default="vessel")
    ap.add_argument("--model", action="append", required=True, metavar="DATASET=WEIGHTS",
                    help="weights trained on DATASET's training split alone (repeat)")
    ap.add_argument("--reference", action="append", default=[], metavar="[LABEL=]SPEC",
                    help="also score this segmenter (learned, classical, or weights; optionally named LABEL)")
    ap.add_argument("--limit", type=int, help="images per test split (smoke runs)")
    ap.add_argument("--json", help="write the matrix here (and a Markdown table beside it, .md)")
    a = ap.parse_args(argv)
    models = dict(m.split("=", 1) for m in a.model)
    unknown = [d for d in models if d not in TEST_SETS[a.target]]
    if unknown:
        raise SystemExit(f"--model datasets for {a.target} must be among {TEST_SETS[a.target]}, got {unknown}")
    out = cross_camera(a.target, models, a.reference, limit=a.limit)
    table = markdown(out)  # the matrix, then one line per test set: in-domain vs cross-camera and their ratio
    print(table)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
        Path(a.json).with_suffix(".md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
