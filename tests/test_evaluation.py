"""Metrics on hand-made arrays, evaluation outputs, folder-pair mode and CLI registration."""

from __future__ import annotations

import argparse
import json
import math

import cv2
import numpy as np
import pytest
import skimage.data

from retsam_core.evaluation.evaluate import evaluate_items, folder_items
from retsam_core.evaluation.metrics import aupr, binary_metrics, cldice, dice
from retsam_core.preprocess import mask_to_original, preprocess
from retsam_core.segmenter import SegmenterInfo


def test_binary_metrics_hand_made():
    gt = np.zeros((4, 4), bool)
    gt[0, :4] = True  # 4 positives
    pred = np.zeros((4, 4), bool)
    pred[0, :2] = True  # 2 TP
    pred[3, 0] = True  # 1 FP
    m = binary_metrics(pred, gt)
    assert m["dsc"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    assert m["iou"] == pytest.approx(2 / 5)
    assert m["sensitivity"] == pytest.approx(0.5)
    assert m["specificity"] == pytest.approx(11 / 12)
    valid = np.ones((4, 4), bool)
    valid[3] = False  # the FP is outside the valid region
    assert dice(pred, gt, valid) == pytest.approx(2 * 2 / (2 * 2 + 2))


def test_empty_conventions():
    z = np.zeros((5, 5), bool)
    assert dice(z, z) == 1.0
    m = binary_metrics(z, z)
    assert math.isnan(m["sensitivity"]) and m["specificity"] == 1.0
    one = z.copy()
    one[2, 2] = True
    assert dice(one, z) == 0.0


def test_cldice():
    gt = np.zeros((40, 40), bool)
    gt[18:23, 5:35] = True  # a thick horizontal vessel (centreline on row 20)
    assert cldice(gt, gt) == pytest.approx(1.0)
    thin = np.zeros_like(gt)
    thin[20, 5:35] = True  # centreline only: perfect topology despite low DSC
    assert cldice(thin, gt) > 0.9 and dice(thin, gt) < 0.5
    broken = gt.copy()
    broken[:, 15:25] = False  # a gap lowers topology sensitivity
    assert cldice(broken, gt) < cldice(gt, gt)


def test_aupr():
    rng = np.random.default_rng(0)
    gt = rng.random((100, 100)) < 0.1
    assert aupr(gt.astype(np.float32), gt) == pytest.approx(1.0, abs=1e-6)
    assert aupr(rng.random((100, 100)).astype(np.float32), gt) == pytest.approx(gt.mean(), abs=0.03)


class FakeSeg:
    info = SegmenterInfo("fake", "1", "", 64, ("vessel",))

    def segment(self, images, fovs):
        return [{"vessel": img[..., 1] < 100} for img in images]


def _item(i):
    img = np.full((64, 64, 3), 200, np.uint8)
    img[30:34, :, 1] = 50
    gt = np.zeros((64, 64), bool)
    gt[30:35, :] = True
    return f"im{i}", img, np.ones((64, 64), bool), {"vessel": gt}, {}


def test_evaluate_items_writes_outputs(tmp_path):
    res = evaluate_items(FakeSeg(), [_item(0), _item(1)], ["vessel", "optic_disc"], tmp_path, title="t", log=lambda m: None)
    a = res["aggregate"]["vessel"]
    assert a["dsc"] == pytest.approx(2 * 4 / 9) and a["images"] == 2 and "cldice" in a
    assert res["targets_not_provided"] == ["optic_disc"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert len(saved["per_image"]) == 2
    assert "| vessel | 2 |" in (tmp_path / "metrics.md").read_text()


def test_folder_pair_mode(tmp_path):
    imgs, masks = tmp_path / "images", tmp_path / "masks"
    imgs.mkdir(), masks.mkdir()
    img = np.zeros((300, 320, 3), np.uint8)
    cv2.circle(img, (160, 150), 140, (180, 90, 40), -1)
    m = np.zeros((300, 320), np.uint8)
    cv2.line(m, (60, 150), (260, 150), 255, 5)
    img[m > 0] = (90, 40, 20)
    cv2.imwrite(str(imgs / "a.png"), img[..., ::-1])
    cv2.imwrite(str(masks / "a_manual.png"), m)
    items = list(folder_items(imgs, masks, "vessel", size=128))
    assert len(items) == 1
    id_, image, fov, gts, _ = items[0]
    assert id_ == "a" and image.shape == (128, 128, 3) and gts["vessel"].any()


def test_cli_registration():
    from retsam_core.evaluation import cli as ecli
    from retsam_core.training import cli as tcli

    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd")
    ecli.register(sub)
    tcli.register(sub)
    a = ap.parse_args(["evaluate", "--dataset", "chase_db1", "--out", "x"])
    assert a.func is ecli.handler and a.split == "test"
    a = ap.parse_args(["train", "--out-dir", "r", "--stages", "multitask", "finetune", "--minutes", "5", "1", "--num-workers", "2"])
    assert a.func is tcli.handler
    cfg = tcli.build_config(a)
    assert cfg.stages == ("multitask", "finetune") and cfg.multitask.max_minutes == 5 and cfg.finetune.max_minutes == 1


def test_model_card_render_flags_untrained():
    from retsam_core.evaluation.card_doc import render

    card = {"name": "m", "variant": "small", "resolution": 64, "weights_file": "m.safetensors", "sha256": "ab",
            "channels": ["vessel", "drusen"], "untrained": ["drusen", "fovea"], "trained_on": {"vessel": ["chase_db1"]},
            "untrained_reason": {"drusen": "no data", "fovea": "no data"},
            "comparison": {"vessel": {"dataset": "chase_db1", "learned_dsc": 0.7, "classical_dsc": 0.6}}}
    md = render(card, None)
    assert "| drusen | — | UNTRAINED" in md and "| vessel | chase_db1 | trained" in md and "uses these weights" in md
    assert "angular scale" not in md and "standardised" not in md
    card["architecture"] = {"px_per_degree": 1024 / 30, "standardise_input": True}
    md = render(card, None)
    assert "1536 for 45" in md and "standardised" in md  # how the model wants its canvas, said on the card


def test_a_canvas_of_another_side_is_scored_on_the_same_ground_truth(tmp_path):
    """An angular-scale model segments a canvas cut at its own side; its masks are averaged onto the ground truth's
    canvas and scored there, so models of any canvas are compared on the same pixels."""
    from retsam_core.segmenter import load_segmenter

    imgs, masks = tmp_path / "images", tmp_path / "masks"
    imgs.mkdir(), masks.mkdir()
    retina = skimage.data.retina()[..., :3]
    cv2.imwrite(str(imgs / "r.png"), retina[..., ::-1])
    seg = load_segmenter("classical")
    pre = preprocess(retina, 768)
    ref = seg.segment(pre.image[None], pre.fov[None])[0]["vessel"]
    cv2.imwrite(str(masks / "r_vessel.png"), mask_to_original(ref, pre.geometry).astype(np.uint8) * 255)
    items = list(folder_items(imgs, masks, "vessel", size=256, model_side=768))
    (_, image, fov, gts, _), = items
    assert image.shape == (768, 768, 3) and fov.shape == (768, 768) and gts["vessel"].shape == (256, 256)
    # a second target on the same item: every mask goes onto the ground truth's canvas, not only the first
    disc = seg.segment(pre.image[None], pre.fov[None])[0]["optic_disc"]
    gts["optic_disc"] = cv2.resize(disc.astype(np.float32), (256, 256), interpolation=cv2.INTER_AREA) >= 0.5
    res = evaluate_items(seg, items, ["vessel", "optic_disc"], log=lambda *_: None)
    row = res["per_image"][0]
    assert row["vessel"]["gt_pixels"] == int(gts["vessel"].sum())  # scored on the 256 px ground truth
    assert row["vessel"]["dsc"] > 0.9  # the same segmenter on the same 768 px canvas: only the averaging differs
    assert row["optic_disc"]["dsc"] > 0.9


def test_published_figures_sit_beside_our_own_with_their_metric_and_source():
    """Every published figure names a dataset and target the summary reports, a metric and a source; the summary
    table and the card show them beside our figures, and a target without one says why rather than borrowing another
    metric's figure."""
    from retsam_core.evaluation.published import NOT_FOUND, PUBLISHED, sources_markdown
    from retsam_core.evaluation.report import TARGET_GOALS, summary_markdown
    from retsam_core.targets import TARGETS

    for f in PUBLISHED:
        assert f.target in TARGETS and f.metric in ("DSC", "F1", "AUPR") and 0 < f.value < 1 and f.source
    assert {(f.dataset, f.target) for f in PUBLISHED} | {("hrf_av", "artery"), ("hrf_av", "vein")} >= set(TARGET_GOALS)
    summary = {"datasets": ["chase_db1", "hrf_av"], "classical": {},
               "learned": {"chase_db1": {"vessel": {"dsc": 0.77, "images": 8}},
                           "hrf_av": {"artery": {"dsc": 0.6, "images": 15}}}}
    rows = summary_markdown(summary).splitlines()
    assert rows[0].endswith("| published (reference) |")
    assert rows[2].endswith("| 0.778 F1 (U-Net); 0.807 F1 (IterNet) |") and rows[3].endswith("|  |")
    md = sources_markdown()
    assert "IterNet: Li et al." in md and all(why in md for why in NOT_FOUND.values())


def test_native_resolution_scores_the_masks_retsam_segment_writes(tmp_path):
    """With resolution "native" the masks go back onto the photograph's grid by the same mapping `retsam segment`
    uses: a ground truth that IS that mapped mask scores exactly 1 with every labelled pixel of the photograph
    counted (a mapping off by one pixel would not); a mask of another size is refused with both sizes named."""
    from retsam_core.segmenter import load_segmenter

    imgs, masks = tmp_path / "images", tmp_path / "masks"
    imgs.mkdir(), masks.mkdir()
    retina = skimage.data.retina()[..., :3][40:-10]  # not square: the box pads, the mapping must place it
    cv2.imwrite(str(imgs / "r.png"), retina[..., ::-1])
    seg = load_segmenter("classical")
    pre = preprocess(retina, 256)
    ref = seg.segment(pre.image[None], pre.fov[None])[0]["vessel"]
    truth = mask_to_original(ref, pre.geometry)
    cv2.imwrite(str(masks / "r_vessel.png"), truth.astype(np.uint8) * 255)

    native = evaluate_items(seg, folder_items(imgs, masks, "vessel", size=256, resolution="native"), ["vessel"],
                            tmp_path / "native", log=lambda *_: None)
    canvas = evaluate_items(seg, folder_items(imgs, masks, "vessel", size=256), ["vessel"], log=lambda *_: None)
    row = native["per_image"][0]["vessel"]
    assert native["resolution"] == "native" and canvas["resolution"] == "canvas"
    assert row["dsc"] == 1.0 and row["gt_pixels"] == int(truth.sum())  # every labelled pixel, on the original grid
    assert canvas["per_image"][0]["vessel"]["gt_pixels"] == int(ref.sum()) < int(truth.sum())  # the canvas grid
    assert "at native resolution" in (tmp_path / "native" / "metrics.md").read_text()

    cv2.imwrite(str(masks / "r_vessel.png"), cv2.resize(truth.astype(np.uint8) * 255, (200, 150)))
    with pytest.raises(ValueError, match="not the size of r.png"):
        list(folder_items(imgs, masks, "vessel", size=256, resolution="native"))
    with pytest.raises(ValueError, match="resolution must be one of"):
        list(folder_items(imgs, masks, "vessel", size=256, resolution="full"))


def test_native_resolution_on_a_real_dataset_uses_its_own_label_files(shared_data, tmp_path):
    """CHASE_DB1 at native resolution: scored against the 1stHO label file itself (its pixel count, all of it inside
    the scored region), and close to the canvas score of the same masks."""
    from retsam_core.datasets.readers import get_reader
    from retsam_core.evaluation.evaluate import evaluate_dataset
    from retsam_core.segmenter import load_segmenter

    seg = load_segmenter("classical")
    kw = dict(split="test", size=512, cache_dir=tmp_path / "cache", root=shared_data, limit=1, log=lambda *_: None)
    native = evaluate_dataset(seg, "chase_db1", resolution="native", **kw)
    canvas = evaluate_dataset(seg, "chase_db1", **kw)
    r = get_reader("chase_db1", shared_data)
    id_ = r.ids("test")[0]
    label = r.load("test", id_).masks["vessel"]
    n, c = native["per_image"][0]["vessel"], canvas["per_image"][0]["vessel"]
    assert native["per_image"][0]["id"] == id_ and native["title"].endswith("(native resolution)")
    assert n["gt_pixels"] == int(label.sum()) != c["gt_pixels"]
    assert n["pred_pixels"] > c["pred_pixels"]  # 999 x 960 photograph against a 512 px canvas
    assert abs(n["dsc"] - c["dsc"]) < 0.05 and n["dsc"] > 0.5


def test_the_default_segmenter_reports_aupr_from_its_learned_heads(shared_data, tmp_path):
    """`retsam evaluate --dataset idrid` with the default (learned + classical) segmenter reports the AUPR the issue
    asks for, from the learned probabilities of the lesion heads it releases (it reported none before), on the
    canvas and at native resolution; a target the default takes from the classical segmenter gets none."""
    from retsam_core.evaluation.evaluate import evaluate_dataset
    from retsam_core.segmenter import load_segmenter

    hybrid, learned = load_segmenter("default"), load_segmenter("learned")
    kw = dict(split="test", cache_dir=tmp_path / "cache", root=shared_data, limit=1, log=lambda *_: None)
    h = evaluate_dataset(hybrid, "idrid", **kw)["aggregate"]
    lone = evaluate_dataset(learned, "idrid", **kw)["aggregate"]
    released = [t for t in ("microaneurysm", "hemorrhage", "hard_exudate", "soft_exudate") if t in h]
    assert released, "the shipped default releases lesion heads"
    for t in released:
        assert h[t]["aupr"] == pytest.approx(lone[t]["aupr"]) and 0 < h[t]["aupr"] <= 1
    from_classical = [t for t, c in hybrid.choices.items() if c.source == "classical" and t in h]
    assert all("aupr" not in h[t] for t in from_classical)
    native = evaluate_dataset(hybrid, "idrid", resolution="native", **kw)["aggregate"]
    for t in released:
        assert 0 < native[t]["aupr"] <= 1 and native[t]["images"] == 1
