"""The A/V segment classifier: segments vote with colour, contrast and calibre as well as the network margin, and the
classifier is fitted per weights file on HRF-AV training images only, then used by the segmenter from its card."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from retsam_core.model.av_features import SEGMENT_FEATURES, AVSegmentClassifier, fit_classifier
from retsam_core.model.av_voting import AVGraphConfig, segment_votes
from retsam_core.model.loading import LearnedSegmenter, default_weights_path

torch.set_num_threads(1)
ALONE = AVGraphConfig(coupling=0.0)


def _two_vessels():
    """A light, narrow vessel above a dark, wide one on a uniform fundus, a middling one between them (features are
    relative to the image's median vessel); the network margin says nothing."""
    image = np.full((128, 128, 3), (170, 90, 40), np.uint8)
    image[55:61, 10:118] = (135, 58, 30)
    light = np.zeros((128, 128), bool)
    light[30:34, 10:118] = True
    dark = np.zeros((128, 128), bool)
    dark[80:88, 10:118] = True
    image[light] = (160, 75, 35)
    image[dark] = (110, 40, 25)
    return image, light, dark


def _only(feature: str, weight: float) -> AVSegmentClassifier:
    n = len(SEGMENT_FEATURES)
    coef = [0.0] * n
    coef[SEGMENT_FEATURES.index(feature)] = weight
    return AVSegmentClassifier([0.0] * n, [1.0] * n, coef, 0.0)


def test_a_classifier_on_colour_separates_vessels_the_margin_cannot():
    image, light, dark = _two_vessels()
    vessel, fov = light | dark, np.ones((128, 128), bool)
    vessel[55:61, 10:118] = True
    even = np.full((128, 128), 0.5, np.float32)
    artery, vein = segment_votes(vessel, even, even, ALONE, classifier=_only("green_z", 1.0), image=image, fov=fov)
    assert artery[light].all() and vein[dark].all()
    # the contrast with the background says the same thing: the dark vessel stands out more
    artery, vein = segment_votes(vessel, even, even, ALONE, classifier=_only("contrast_green_z", -1.0), image=image, fov=fov)
    assert artery[light].all() and vein[dark].all()
    # and so does calibre: the narrow one is the artery
    artery, vein = segment_votes(vessel, even, even, ALONE, classifier=_only("width_z", -1.0), image=image, fov=fov)
    assert artery[light].all() and vein[dark].all()
    with pytest.raises(ValueError, match="needs the canvas image"):
        segment_votes(vessel, even, even, ALONE, classifier=_only("green_z", 1.0))


def test_fit_learns_the_cue_and_round_trips_through_a_card():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, len(SEGMENT_FEATURES)))
    y = (x[:, SEGMENT_FEATURES.index("contrast_green_z")] + 0.3 * rng.normal(size=400) < 0).astype(float)
    y[:5] = np.nan  # unlabelled segments are left out
    clf = fit_classifier(x, y, rng.uniform(5, 50, 400))
    ok = ~np.isnan(y)
    assert ((clf.log_odds(x[ok]) > 0) == (y[ok] == 1)).mean() > 0.9
    assert np.argmax(np.abs(clf.coef)) == SEGMENT_FEATURES.index("contrast_green_z") and clf.coef[SEGMENT_FEATURES.index("contrast_green_z")] < 0
    again = AVSegmentClassifier.from_dict(json.loads(json.dumps(clf.to_dict())))
    assert np.allclose(again.log_odds(x), clf.log_odds(x))
    with pytest.raises(ValueError, match="features"):
        AVSegmentClassifier.from_dict({**clf.to_dict(), "features": ["margin"]})


def test_fitted_on_hrf_av_training_images_and_used_by_the_segmenter(tmp_path, shared_data):
    """The shipped weights on four HRF-AV training images: cross-validated against the margin, recorded in a copy
    of the card, and applied by a segmenter loaded from it (the vessel support is unchanged, only its split)."""
    from retsam_core.evaluation.av_classifier import fit_for_card, record_in_card, training_images
    from retsam_core.evaluation.evaluate import dataset_items

    weights = default_weights_path()
    if weights is None:
        pytest.skip("no shipped weights")
    shutil.copy(weights, tmp_path / "w.safetensors")
    shutil.copy(weights.with_suffix(".json"), tmp_path / "w.json")
    seg = LearnedSegmenter.from_uri(str(tmp_path / "w.safetensors"), device="cpu")
    seg.card.pop("av_segment_classifier", None)  # the margin vote, which the fit is compared with
    result = fit_for_card(seg, shared_data, folds=2, limit=4, log=lambda *_: None)
    cv = result["cross_validation"]
    assert cv["images"] == 4 and all(0 < cv[k][v] < 1 for k in ("artery_dsc", "vein_dsc") for v in ("margin", "classifier"))
    assert np.isfinite(result["classifier"]["coef"]).all()
    result["applied"] = True  # four images decide nothing; the record and the segmenter's use are under test here
    record_in_card(tmp_path / "w.json", result)

    fitted = LearnedSegmenter.from_uri(str(tmp_path / "w.safetensors"), device="cpu")
    assert fitted.finisher().av_classifier["coef"] == result["classifier"]["coef"]
    _, image, fov, _, _ = next(dataset_items("hrf_av", "test", root=shared_data, limit=1))
    a0 = seg.segment(image[None], fov[None])[0]
    a1 = fitted.segment(image[None], fov[None])[0]
    assert np.array_equal(a0["artery"] | a0["vein"], a1["artery"] | a1["vein"])
    assert not (a1["artery"] & a1["vein"]).any()
    assert not np.array_equal(a0["artery"], a1["artery"])
    assert len(training_images(seg, shared_data, limit=1, log=lambda *_: None)[0].features[0]) == len(SEGMENT_FEATURES)
