"""Render docs/model_card.md from the weights card (JSON) and the evaluation summary, so the two never disagree.

  python -m retsam_core.evaluation.card_doc --card retsam_core/weights/retsam-small.json --summary docs/model_eval/summary.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from retsam_core.evaluation.published import sources_markdown
from retsam_core.evaluation.report import summary_markdown

CITATIONS = {
    "chase_db1": "Fraz et al., IEEE TBME 59(9):2538–2548, 2012 (CHASE_DB1)",
    "hrf_av": "Budai et al., IJBI 2013 (HRF); A/V labels likely Hemelings et al., CMIG 76:101636, 2019",
    "drishti_gs1": "Sivaswamy et al., ISBI 2014 and JSM Biomed Imaging Data Papers 2(1):1004, 2015 (Drishti-GS)",
    "idrid": "Porwal et al., Data 3(3):25, 2018 and MedIA 59:101561, 2020 (IDRiD)",
}
SPLITS = {
    "chase_db1": "train children 01–10 (20 images) / test 11–14 (8), 1st observer",
    "hrf_av": "lwnet protocol: test images 01–05 of each group (15) / train 06–15 (30)",
    "drishti_gs1": "official 50 train / 51 test, soft maps ≥ 128 (majority of 4 experts)",
    "idrid": "official 54 train / 27 test (split.csv); missing mask = absent lesion",
}


def training_lines(tr: dict) -> list[str]:
    """One line per stage, oldest first: the stages of the weights a run started from (`initialised_from`,
    nested when those were themselves a fine-tune), then the run's own."""
    origin = tr.get("initialised_from")
    L = training_lines(origin) if origin else []
    if origin:
        groups = ", ".join(tr["initialised_from"].get("trained_groups") or []) or "all decoders"
        L.append(f"- then, from those weights (sha256 `{str(origin.get('sha256'))[:12]}`), trained: {groups}")
    for s, info in tr.get("stages", {}).items():
        L.append(f"- **{s}**: {info.get('steps')} steps in {info.get('minutes')} min on {info.get('hardware', '?')}, batch "
                 f"{info.get('batch')} × {info.get('patch')} px patches, lr {info.get('lr')}, frozen encoder: "
                 f"{info.get('frozen_encoder')}, loss {info.get('first_loss')} → {info.get('final_loss')} (running mean of "
                 f"the logged window), channels: {', '.join(info.get('channels', []))}"
                 + (f"; decoders kept as given: {', '.join(info['frozen_decoders'])}" if info.get("frozen_decoders") else "")
                 + (f"; outputs held to the starting weights' (learning without forgetting): {', '.join(info['distilled'])}"
                    if info.get("distilled") else ""))
    return L


def av_classifier_lines(card: dict) -> list[str]:
    """How artery and vein are split: the margin alone, or the fitted segment classifier and its check."""
    fitted = card.get("av_segment_classifier") or card.get("av_segment_classifier_rejected")
    if not fitted:
        return []
    cv = fitted["cross_validation"]
    clf = fitted["classifier"]
    L = ["## Artery or vein per segment (fitted on training images)", "",
         f"Each centreline segment votes with {'the log-odds of a logistic model' if card.get('av_segment_classifier') else 'the network margin; a logistic model was fitted but not applied'}"
         f" (`retsam_core/model/av_features.py`) on {', '.join(clf['features'])}, fitted on {fitted['fitted_on']}. "
         f"Cross-validated by image ({cv['folds']} folds, {cv['images']} images): artery DSC {cv['artery_dsc']['margin']:.3f} "
         f"with the margin alone, {cv['artery_dsc']['classifier']:.3f} with the classifier; vein "
         f"{cv['vein_dsc']['margin']:.3f}, {cv['vein_dsc']['classifier']:.3f}.", "",
         "| feature | weight (per standard deviation; > 0: artery) |", "|---|---|"]
    L += [f"| {f} | {c:+.3f} |" for f, c in zip(clf["features"], clf["coef"])]
    return L + [""]


def render(card: dict, summary: dict | None, notes: str = "", appendix: str = "") -> str:
    tr = card.get("training", {})
    L = []
    L += [f"# Model card: {card['name']} ({card.get('variant')}, {card.get('resolution')} px)", ""]
    L += [f"Weights: `retsam_core/weights/{card.get('weights_file')}` ({card.get('size_bytes', 0) / 1e6:.1f} MB, float32 safetensors), "
          f"sha256 `{card.get('sha256')}`. The JSON card beside it is the machine-readable version of this page.", ""]
    L += ["## Architecture", "",
          "One shared encoder, one full UNet-style decoder per task group (task-decoupled decoders, RetSAM design), "
          "independent sigmoid per channel (multi-label), optional fovea (x, y) regression head from the deepest features. "
          "`small` = compact residual CNN written in this repository (input pixel-unshuffled ×2 so every convolution runs at "
          "half resolution, output pixel-shuffled back: thin vessels keep full-resolution evidence at a quarter of the cost); "
          "`base` = timm Swin encoder (optional `gpu` extra, never pretrained-downloaded), same decoders.", ""]
    arch = card.get("architecture", {})
    L += [f"- config: `{json.dumps({k: arch.get(k) for k in ('variant', 'resolution', 'stem_unshuffle', 'enc_channels', 'enc_blocks', 'dec_channels', 'fovea_head')})}`"]
    if arch.get("vessel_refiner"):
        L.append(f"- vessel refiner (width {arch['vessel_refiner']}): a small U-Net after the vessel decoder reads the image, "
                 "the decoder's probabilities and last features and corrects the vessel/artery/vein logits (IterNet's "
                 "refinement, Li et al., WACV 2020); added to trained weights with its head at zero (training below)")
    if arch.get("standardise_input"):
        L.append("- input: each canvas's colour means and contrast inside the FOV standardised (`retsam_core/intensity.py`), "
                 "in training and inference alike")
    if arch.get("px_per_degree"):
        from retsam_core.preprocess import angular_canvas_side

        ppd = arch["px_per_degree"]
        L.append(f"- angular scale: {ppd:.2f} canvas px per degree of field; the canvas side is that times the camera's "
                 f"field angle (pipeline `field_angle_deg`): {angular_canvas_side(ppd, 30)} px for 30 degrees, "
                 f"{angular_canvas_side(ppd, 45)} for 45, {angular_canvas_side(ppd, 50)} for 50")
    for g, ch in card.get("task_groups", {}).items():
        L.append(f"- decoder `{g}`: {', '.join(ch)}")
    L += ["", "## What each channel was trained on", "", "| target | datasets (train split) | status |", "|---|---|---|"]
    for t in card.get("channels", []) + ["fovea"]:
        ds = card.get("trained_on", {}).get(t, [])
        status = "UNTRAINED — not emitted" if t in card.get("untrained", []) else "trained, emitted"
        L.append(f"| {t} | {', '.join(ds) or '—'} | {status} |")
    L += ["", "Untrained heads exist in the network (so the same file format serves later training) but are listed in "
          "`untrained`; `LearnedSegmenter` never emits them and does not even compute decoders whose channels are all "
          "untrained. Reason: " + "; ".join(sorted(set(card.get("untrained_reason", {}).values()))) + ".", ""]
    L += ["## Data, splits and terms", "", "| dataset | split used | licence / terms (as found) | cite |", "|---|---|---|---|"]
    for n, d in card.get("datasets", {}).items():
        L.append(f"| {n} | {SPLITS.get(n, '')} | {d.get('licence')} | {CITATIONS.get(n, '')} |")
    L += ["", "Test splits were used only for the numbers below: no threshold, checkpoint or hyper-parameter was chosen on them.", ""]
    L += ["## Training (what the shipped weights went through)", ""]
    L += training_lines(tr)
    hw = tr.get("hardware")
    L += [f"- total: {tr.get('total_minutes')} min on {'; '.join(hw) if isinstance(hw, list) else hw}", ""]
    if notes:
        L += [notes.strip(), ""]
    thr, min_px = card.get("thresholds", {}), card.get("postprocess", {}).get("min_component_px", {})
    if thr or min_px:
        L += ["## Operating points (chosen on training images)", "", "| target | threshold | smallest kept component (px) |",
              "|---|---|---|"]
        L += [f"| {t} | {thr.get(t, 0.5)} | {min_px.get(t, 1)} |" for t in sorted(set(thr) | set(min_px))]
        L += ["", "Every other channel: threshold 0.5, every component kept.", ""]
    L += av_classifier_lines(card)
    L += ["## Evaluation (test splits, 1024 px pipeline canvas, card operating points)", ""]
    if summary:
        L += [summary_markdown(summary), ""]
        L += ["DSC = mean over images. For lesions, 'DSC (lesion present)' is the IDRiD image-level mean over images whose "
              "ground truth contains the lesion; 'DSC' also counts lesion-free images (1 if nothing predicted, else 0); AUPR is "
              "pooled over all test pixels (IDRiD challenge style). Vessel metrics include clDice. Classical = "
              "`load_segmenter('classical')` on the same canvases (it provides vessel, optic disc, fovea only). "
              "Published figures are for reference, from models trained on that dataset alone, mostly at full resolution "
              "(`retsam_core/evaluation/published.py`):", "", sources_markdown()]
        sp = summary.get("seconds_per_image", {})
        if sp:
            L += ["Seconds per image during evaluation (shared 2-core CPU, 1 thread, includes resize/threshold): " +
                  ", ".join(f"{k} {v:.2f}" for k, v in sp.items()) + ".", ""]
    cmp = card.get("comparison", {}).get("vessel", {})
    if cmp:
        beats = cmp.get("learned_dsc", 0) > cmp.get("classical_dsc", 1)
        L += [f"**Default-model gate:** vessel DSC on {cmp.get('dataset')} test: learned {cmp.get('learned_dsc'):.3f} vs classical "
              f"{cmp.get('classical_dsc'):.3f} → `load_segmenter('default')` uses "
              f"{'these weights combined per target with the classical segmenter (retsam_core/hybrid.py)' if beats else 'the classical segmenter'}"
              f" (`default_weights_path()` {'returns the shipped file' if beats else 'returns None'}).", ""]
    if appendix:
        L += [appendix.strip(), ""]
    return "\n".join(L) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--card", required=True)
    ap.add_argument("--summary")
    ap.add_argument("--notes", help="markdown file appended to the training section")
    ap.add_argument("--appendix", help="markdown file appended at the end (known gaps)")
    ap.add_argument("--out", default="docs/model_card.md")
    a = ap.parse_args(argv)
    card = json.loads(Path(a.card).read_text())
    summary = json.loads(Path(a.summary).read_text()) if a.summary else None
    notes = Path(a.notes).read_text() if a.notes else ""
    appendix = Path(a.appendix).read_text() if a.appendix else ""
    Path(a.out).write_text(render(card, summary, notes, appendix))


if __name__ == "__main__":
    main()
