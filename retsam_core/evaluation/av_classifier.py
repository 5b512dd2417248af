"""Fit the A/V segment classifier (`model.av_features`) for one weights file on HRF-AV TRAINING images, and record
it in that file's card.

HRF-AV is the only public set here with artery/vein labels, so the fit and its check share its 30 training images:
the check is a cross-validation by image (each fold's images scored by a classifier fitted without them), against
the margin-only vote on the same images. The test split is never read. The classifier is written to the card only
when it beats the margin on both artery and vein DSC in that check; otherwise the card keeps voting by the margin.

    python -m retsam_core.evaluation.av_classifier --card retsam_core/weights/retsam-small.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retsam_core.biomarkers.skeleton import VesselGraph, build_graph
from retsam_core.datasets.readers import get_reader
from retsam_core.evaluation.evaluate import dataset_items
from retsam_core.evaluation.metrics import dice
from retsam_core.model.av_features import AVSegmentClassifier, fit_classifier, segment_features, segment_labels
from retsam_core.model.av_voting import centrelines, label_segments, margin_votes
from retsam_core.model.loading import LearnedSegmenter

DATASET = "hrf_av"


@dataclass
class TrainingImage:
    """One training image's segments: features, expert labels, the graph they came from and its ground truth."""

    id: str
    graph: VesselGraph
    centrelines: list[np.ndarray]
    features: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    margin_votes: np.ndarray
    gt_artery: np.ndarray
    gt_vein: np.ndarray
    fov: np.ndarray


def training_images(seg: LearnedSegmenter, root=None, cache_dir="runs/cache", limit=None, log=print) -> list[TrainingImage]:
    """The segments of every HRF-AV training image, from the segmenter's own vessel support and probabilities."""
    if seg.model.cfg.px_per_degree:
        raise ValueError("fit the A/V classifier on a fixed-canvas model (an angular-scale canvas is not scored here)")
    ch = list(seg.model.channels)
    out = []
    for id_, image, fov, gts, _ in dataset_items(DATASET, "train", cache_dir=cache_dir, root=root, limit=limit):
        probs = seg.probabilities(image[None], fov[None])[0].astype(np.float32)
        if probs.shape[-1] != image.shape[0]:
            raise ValueError(f"model resolution {probs.shape[-1]} differs from the canvas {image.shape[0]}")
        pa, pv = probs[ch.index("artery")], probs[ch.index("vein")]
        vessel = ((pa >= seg.thresholds["artery"]) | (pv >= seg.thresholds["vein"])) & fov
        g = build_graph(vessel)
        pix = centrelines(g)
        lengths = np.array([len(r) for r in pix], np.float64)
        out.append(TrainingImage(id_, g, pix, segment_features(image, fov, vessel, pa, pv, pix, g.width),
                                 segment_labels(pix, gts["artery"], gts["vein"]), lengths,
                                 margin_votes(pa - pv, pix), gts["artery"], gts["vein"], fov))
        log(f"  {id_}: {len(pix)} segments")
    return out


def fit_on(images: list[TrainingImage], l2: float, vote_scale: float) -> AVSegmentClassifier:
    """The classifier fitted on every segment of `images`, weighted by centreline length."""
    return fit_classifier(np.concatenate([im.features for im in images]), np.concatenate([im.labels for im in images]),
                          np.concatenate([im.lengths for im in images]), l2, vote_scale)


def artery_vein_dsc(img: TrainingImage, votes: np.ndarray) -> tuple[float, float]:
    artery, vein = label_segments(img.graph, img.centrelines, votes)
    return (dice(artery, img.gt_artery, img.fov | img.gt_artery), dice(vein, img.gt_vein, img.fov | img.gt_vein))


def cross_validate(images: list[TrainingImage], folds: int = 5, l2: float = 1.0, vote_scale: float = 0.3) -> dict:
    """Mean artery/vein DSC over the images, each scored by a classifier fitted on the other folds, beside the
    margin-only vote."""
    fitted, margin = [], []
    for k in range(folds):
        held = images[k::folds]
        rest = [im for i, im in enumerate(images) if i % folds != k]
        clf = fit_on(rest, l2, vote_scale)
        for im in held:
            fitted.append(artery_vein_dsc(im, clf.votes(im.features, im.lengths)))
            margin.append(artery_vein_dsc(im, im.margin_votes))
    f, m = np.mean(fitted, 0), np.mean(margin, 0)
    return {"folds": folds, "images": len(images), "artery_dsc": {"margin": round(float(m[0]), 4), "classifier": round(float(f[0]), 4)},
            "vein_dsc": {"margin": round(float(m[1]), 4), "classifier": round(float(f[1]), 4)}}


def fit_for_card(seg: LearnedSegmenter, root=None, l2: float = 1.0, vote_scale: float = 0.3, folds: int = 5,
                 limit=None, log=print) -> dict:
    images = training_images(seg, root, limit=limit, log=log)
    check = cross_validate(images, folds, l2, vote_scale)
    clf = fit_on(images, l2, vote_scale)
    better = all(check[k]["classifier"] > check[k]["margin"] for k in ("artery_dsc", "vein_dsc"))
    log(f"cross-validated on {len(images)} {DATASET} training images: {check}; applied: {better}")
    return {"classifier": clf.to_dict(), "fitted_on": f"{get_reader(DATASET, root).name} train ({len(images)} images)",
            "l2": l2, "cross_validation": check, "applied": better}


def record_in_card(card_path: Path, result: dict) -> None:
    card = json.loads(card_path.read_text())
    card.pop("av_segment_classifier", None)
    card.pop("av_segment_classifier_rejected", None)
    card["av_segment_classifier" if result["applied"] else "av_segment_classifier_rejected"] = result
    card_path.write_text(json.dumps(card, indent=1))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--card", required=True, help="model card JSON beside the .safetensors weights")
    ap.add_argument("--data-root")
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument("--vote-scale", type=float, default=0.3, help="log-odds -> vote per centreline pixel")
    a = ap.parse_args(argv)
    card_path = Path(a.card)
    seg = LearnedSegmenter.from_uri(str(card_path.with_suffix(".safetensors")), device="cpu")
    record_in_card(card_path, fit_for_card(seg, a.data_root, a.l2, a.vote_scale))


if __name__ == "__main__":
    main()
