"""The default segmenter picks each target from the segmenter that measured better, and withholds weak heads."""

from __future__ import annotations

import pytest
import skimage.data

from retsam_core.classical import ClassicalSegmenter
from retsam_core.hybrid import MIN_RELEASE_DSC, HybridSegmenter, choose_sources
from retsam_core.preprocess import preprocess
from retsam_core.segmenter import load_segmenter


def _card(vessel=(0.7, 0.6), disc=(0.8, 0.9), exudate=0.5, se_all=0.48, se_present=0.0):
    return {
        "metrics": {
            "learned": {
                "chase": {"vessel": {"dsc": vessel[0]}},
                "idrid": {
                    "optic_disc": {"dsc": disc[0]},
                    "hard_exudate": {"dsc": exudate, "dsc_present": exudate},
                    "soft_exudate": {"dsc": se_all, "dsc_present": se_present},
                },
            },
            "classical_baseline": {"chase": {"vessel": {"dsc": vessel[1]}}, "idrid": {"optic_disc": {"dsc": disc[1]}}},
        }
    }


LEARNED = ("vessel", "optic_disc", "hard_exudate", "soft_exudate", "hemorrhage")


def test_choice_follows_the_card_metrics():
    c = choose_sources(_card(), LEARNED, ClassicalSegmenter().info.provides)
    assert c["vessel"].source == "learned"
    assert c["optic_disc"].source == "classical"
    assert "optic_cup" not in c  # not offered by either segmenter here
    assert c["fovea"].source == "classical"
    assert c["hard_exudate"].source == "learned"
    # Lesion-free images inflate plain DSC (0.48); the lesion-present DSC (0.0) decides.
    assert c["soft_exudate"].source == "withheld" and "release bar" in c["soft_exudate"].reason
    assert c["hemorrhage"].source == "withheld" and "no test metric" in c["hemorrhage"].reason
    flipped = choose_sources(_card(vessel=(0.5, 0.6), disc=(0.95, 0.9)), LEARNED, ClassicalSegmenter().info.provides)
    assert flipped["vessel"].source == "classical" and flipped["optic_disc"].source == "learned"
    weak = choose_sources(_card(exudate=MIN_RELEASE_DSC - 0.01), LEARNED, ())
    assert weak["hard_exudate"].source == "withheld"


def test_artery_and_vein_are_released_together():
    card = _card()
    card["metrics"]["learned"]["hrf"] = {"artery": {"dsc": 0.01}, "vein": {"dsc": 0.55}}
    c = choose_sources(card, LEARNED + ("artery", "vein"), ())
    assert c["artery"].source == "withheld" and c["vein"].source == "withheld"
    assert "artery" in c["vein"].reason
    card["metrics"]["learned"]["hrf"]["artery"]["dsc"] = 0.6
    c = choose_sources(card, LEARNED + ("artery", "vein"), ())  # fair DSC, but no calibre evidence
    assert c["artery"].source == "withheld" and "AVR agreement" in c["vein"].reason
    card["metrics"]["av_calibre"] = {"images": 15, "avr_knudtson_zone_b": {"both": 4, "pearson_r": -0.53}}
    c = choose_sources(card, LEARNED + ("artery", "vein"), ())
    assert c["artery"].source == "withheld" and "r = -0.53 on 4 of 15" in c["artery"].reason
    card["metrics"]["av_calibre"]["avr_knudtson_zone_b"] = {"both": 12, "pearson_r": 0.8}
    c = choose_sources(card, LEARNED + ("artery", "vein"), ())
    assert c["artery"].source == "learned" and c["vein"].source == "learned"


def test_default_segmenter_emits_exactly_what_it_provides():
    seg = load_segmenter("default")
    if not isinstance(seg, HybridSegmenter):
        pytest.skip("no shipped learned weights that beat the classical segmenter")
    p = preprocess(skimage.data.retina(), 1024)
    masks = seg.segment(p.image[None], p.fov[None])[0]
    assert set(masks) == set(seg.info.provides)
    assert not set(masks) & set(seg.info.untrained)
    for m in masks.values():
        assert m.shape == (1024, 1024) and m.dtype == bool
    if "optic_cup" in masks:
        assert not (masks["optic_cup"] & ~masks["optic_disc"]).any()
    assert 0.03 < masks["vessel"][p.fov].mean() < 0.25
    # the learned half computes only what the hybrid takes from it: withheld heads cost no decoder
    learned = seg.learned
    assert learned.emit == {t for t, c in seg.choices.items() if c.source == "learned"}
    for group, channels in learned.model.cfg.task_groups.items():
        needed = learned.emit | ({"vessel"} if learned.emit & {"artery", "vein"} else set())
        assert (group in learned.model.skip_groups) == (not set(channels) & needed), group


def test_lesion_heads_that_fire_on_healthy_eyes_are_withheld():
    card = _card()
    card["metrics"]["healthy_false_positives"] = {"per_target": {"hard_exudate": {"mean_components": 40.0}}}
    c = choose_sources(card, LEARNED, ())
    assert c["hard_exudate"].source == "withheld" and "healthy" in c["hard_exudate"].reason
    card["metrics"]["healthy_false_positives"]["per_target"]["hard_exudate"]["mean_components"] = 0.2
    assert choose_sources(card, LEARNED, ())["hard_exudate"].source == "learned"


def test_shipped_card_false_lesion_counts_reproduce_on_the_unseen_camera_eye():
    """The healthy-eye figures that gate the lesion heads are what these weights do: recounted on the normal eye
    from a camera no training set used (the figure would go stale if the weights changed without a rerun)."""
    from retsam_core.evaluation.healthy_fp import count_false_lesions, unseen_camera_healthy_eyes
    from retsam_core.model.loading import LearnedSegmenter, default_weights_path

    weights = default_weights_path()
    if weights is None:
        pytest.skip("no shipped learned weights")
    seg = LearnedSegmenter.from_uri(str(weights), device="cpu")
    recorded = seg.card["metrics"]["healthy_false_positives"]
    eyes = unseen_camera_healthy_eyes()
    assert set(eyes) <= set(recorded["unseen_camera_images"]) and set(eyes) <= set(recorded["images"])
    fresh = count_false_lesions(seg, eyes)
    assert fresh, "the shipped weights provide lesion heads"
    for t, r in fresh.items():
        (name, n), = r["per_image"].items()
        assert r["images"] == 1 and r["mean_components"] == r["max_components"] == n >= 0
        assert recorded["per_target"][t]["per_image"][name] == n, t


def test_learned_cup_needs_the_learned_disc():
    card = _card(disc=(0.8, 0.9))
    card["metrics"]["learned"]["drishti"] = {"optic_cup": {"dsc": 0.8}}
    c = choose_sources(card, LEARNED + ("optic_cup",), ClassicalSegmenter().info.provides)
    assert c["optic_disc"].source == "classical" and c["optic_cup"].source == "withheld"
    card = _card(disc=(0.95, 0.9))
    card["metrics"]["learned"]["drishti"] = {"optic_cup": {"dsc": 0.8}}
    c = choose_sources(card, LEARNED + ("optic_cup",), ClassicalSegmenter().info.provides)
    assert c["optic_disc"].source == "learned" and c["optic_cup"].source == "learned"


def test_run_record_says_where_each_target_comes_from():
    from pipeline.config import PipelineConfig
    from pipeline.runner import segmenter_provenance

    prov = segmenter_provenance(PipelineConfig(segmenter="default"))
    seg = load_segmenter("default")
    if not isinstance(seg, HybridSegmenter):
        pytest.skip("no shipped learned weights that beat the classical segmenter")
    sources = prov["target_sources"]
    assert set(prov["provided_targets"]) == {t for t, c in sources.items() if c["source"] != "withheld"}
    assert all(c["reason"] for c in sources.values())
    assert set(prov["untrained"]).isdisjoint(prov["provided_targets"])
