"""Does the model's artery/vein map give the calibre biomarkers the expert map gives? (HRF-AV test split)

  python benchmarks/bench_av_calibre.py [--segmenter learned] [--json OUT] [--card retsam_core/weights/retsam-small.json]
  python benchmarks/bench_av_calibre.py --decompose [--split train] [--json OUT]

With --card, the weights beside that card are measured (unless --segmenter names others) and the summary is written
to the card's `metrics.av_calibre`: the default segmenter (`retsam_core/hybrid.py`) releases artery/vein only where
this check passes.

Per test image: the pipeline's canvas (decode + preprocess at 1024 px), the segmenter's masks, and the expert A/V
labels mapped onto the same canvas. Both sets of biomarkers use the segmenter's optic disc and fovea (HRF-AV has no
disc labels), so zone B is the same for both and only the vessel classification differs. Prints CRAE, CRVE and
Knudtson AVR from each, their median absolute difference and the correlation over the images where both exist.

`--decompose` says where a disagreement comes from, with two hybrids scored against the expert as well: the model's
vessel map labelled by the expert (each model vessel pixel takes the class of the nearest expert-labelled pixel:
the model's widths, perfect labels) and the expert's vessel map labelled by the model (the expert's widths, the
model's labels).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

KEYS = ("crae_knudtson_um_zone_b", "crve_knudtson_um_zone_b", "avr_knudtson_zone_b")


def hrf_av_images(seg, split: str = "test", data_root: str | None = None, canvas: int = 1024):
    """Per HRF-AV image of `split`: (id, canvas, the segmenter's masks, the expert vessel/artery/vein masks on that
    canvas, the field angle)."""
    from retsam_core.datasets.cache import load_canvas
    from retsam_core.datasets.readers import get_reader, label_to_canvas

    reader = get_reader("hrf_av", data_root)
    canvas = seg.info.canvas_side(reader.field_angle_deg, canvas)  # an angular-scale model's own canvas for HRF
    for id_ in reader.ids(split):
        sample = reader.load(split, id_)
        pre = load_canvas(sample.image_path, canvas)
        pred = seg.segment(pre.image[None], pre.fov[None])[0]
        expert = {t: label_to_canvas(sample.masks[t], pre.geometry) >= 0.5 for t in ("vessel", "artery", "vein")}
        yield id_, pre, pred, expert, reader.field_angle_deg


def agreement(pairs: list[tuple[float, float]]) -> dict | None:
    """Model-vs-expert agreement over the images where both exist (None under three images)."""
    if len(pairs) < 3:
        return None
    m, e = np.array(pairs, float).T
    return {"both": len(pairs), "median_abs_diff": round(float(np.median(np.abs(m - e))), 3),
            "pearson_r": round(float(np.corrcoef(m, e)[0, 1]), 3),
            "model_median": round(float(np.median(m)), 3), "expert_median": round(float(np.median(e)), 3)}


def labelled_by(support: np.ndarray, artery: np.ndarray, vein: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(artery, vein) partition of `support`: each pixel takes the class of the nearest pixel of `artery | vein`."""
    from scipy import ndimage

    label = np.zeros(support.shape, np.int8)
    label[vein] = 2
    label[artery] = 1
    _, (iy, ix) = ndimage.distance_transform_edt(label == 0, return_indices=True)
    nearest = label[iy, ix]
    return support & (nearest == 1), support & (nearest == 2)


def run(segmenter: str = "learned", data_root: str | None = None, canvas: int = 1024, split: str = "test",
        decompose: bool = False) -> dict:
    from retsam_core.biomarkers import compute_biomarkers
    from retsam_core.biomarkers.scale import estimate_scale
    from retsam_core.segmenter import load_segmenter

    seg = load_segmenter(segmenter)
    rows = []
    for id_, pre, pred, expert, field_angle in hrf_av_images(seg, split, data_root, canvas):
        context = {t: pred[t] for t in ("optic_disc", "fovea") if t in pred}
        expert |= context
        variants = {"model": pred, "expert": expert}
        if decompose:
            a, v = labelled_by(pred["vessel"], expert["artery"], expert["vein"])
            variants["model_widths_expert_labels"] = {**context, "vessel": pred["vessel"], "artery": a, "vein": v}
            a, v = labelled_by(expert["vessel"], pred["artery"], pred["vein"])
            variants["expert_widths_model_labels"] = {**context, "vessel": expert["vessel"], "artery": a, "vein": v}
        row = {"id": id_}
        for name, masks in variants.items():
            scale = estimate_scale(pre.fov, masks, field_angle_deg=field_angle)
            res = compute_biomarkers(masks, pre.fov, scale, image=pre.image, provided=list(masks))
            row |= {f"{name}_{k}": res.values.get(k) for k in KEYS}
        rows.append(row)
    summary = {"segmenter": seg.info.name, "weights": seg.info.weights_hash[:12], "split": split, "images": len(rows)}
    for name in ["model"] + (["model_widths_expert_labels", "expert_widths_model_labels"] if decompose else []):
        for k in KEYS:
            pairs = [(r[f"{name}_{k}"], r[f"expert_{k}"]) for r in rows
                     if r[f"{name}_{k}"] is not None and r[f"expert_{k}"] is not None]
            if (agree := agreement(pairs)) is not None:
                summary[k if name == "model" else f"{name}:{k}"] = agree
    ok = [r for r in rows if r["model_crae_knudtson_um_zone_b"] and r["model_crve_knudtson_um_zone_b"]]
    summary["model_crae_below_crve"] = f"{sum(r['model_crae_knudtson_um_zone_b'] < r['model_crve_knudtson_um_zone_b'] for r in ok)} of {len(ok)}"
    return {"summary": summary, "rows": rows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segmenter", help="default: the weights beside --card, else the shipped ones ('learned')")
    ap.add_argument("--card", help="record the summary in this model card (metrics.av_calibre)")
    ap.add_argument("--data-root")
    ap.add_argument("--split", default="test")
    ap.add_argument("--decompose", action="store_true", help="also score the model's widths and labels separately")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    if a.card and (a.split != "test" or a.decompose):
        raise SystemExit("--card records the plain test-split check only")
    segmenter = a.segmenter or (str(Path(a.card).with_suffix(".safetensors")) if a.card else "learned")
    out = run(segmenter, a.data_root, split=a.split, decompose=a.decompose)
    for r in out["rows"]:
        print(r["id"], " ".join(f"{k.split('_')[0]}={r['model_' + k]!s:.6}/{r['expert_' + k]!s:.6}" for k in KEYS))
    print(json.dumps(out["summary"], indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1, default=str))
    if a.card:
        card = json.loads(Path(a.card).read_text())
        if not card.get("sha256", "").startswith(out["summary"]["weights"]):
            raise SystemExit(f"{a.card} describes other weights than the segmenter that was measured")
        card.setdefault("metrics", {})["av_calibre"] = out["summary"]
        Path(a.card).write_text(json.dumps(card, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
