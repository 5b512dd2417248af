"""Intensity standardisation: a darker, flatter exposure of the same eye reaches the network as nearly the same
canvas, in training records and at inference alike."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from retsam_core.intensity import REFERENCE_CONTRAST, REFERENCE_MEAN, standardise_intensity
from retsam_core.model.loading import LearnedSegmenter
from retsam_core.model.network import ModelConfig, RetSAMNet
from retsam_core.preprocess import preprocess

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def canvas():
    p = preprocess(skimage.data.retina(), 256)
    return p.image, p.fov


def _darker(image, fov, gain=0.55, offset=-12.0):
    """The same eye through a darker, lower-contrast camera (outside the FOV stays black)."""
    x = image.astype(np.float32) * gain + offset
    x[~fov] = 0
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def test_reference_means_and_contrast_inside_the_fov(canvas):
    image, fov = canvas
    out = standardise_intensity(image, fov)
    inside = out[fov].astype(np.float32)
    assert np.allclose(inside.mean(0)[:2], REFERENCE_MEAN[:2], atol=1.5)  # blue clips at 0 on some pixels
    assert abs(np.sqrt(((inside - inside.mean(0)) ** 2).mean()) - REFERENCE_CONTRAST) < 0.1 * REFERENCE_CONTRAST
    assert not out[~fov].any()
    assert standardise_intensity(image, np.zeros_like(fov)) is image


def test_a_darker_exposure_standardises_to_nearly_the_same_canvas(canvas):
    image, fov = canvas
    dark = _darker(image, fov)
    assert np.abs(dark.astype(int) - image.astype(int))[fov].mean() > 40  # the cameras differ a lot ...
    a, b = standardise_intensity(image, fov), standardise_intensity(dark, fov)
    assert np.abs(a.astype(int) - b.astype(int))[fov].mean() < 2.5  # ... and look alike after standardising


def test_segmenter_sees_exposure_only_when_the_model_does_not_standardise(canvas):
    image, fov = canvas
    dark = _darker(image, fov)
    diffs = {}
    for standardise in (True, False):
        torch.manual_seed(0)  # the same weights both times; only the input path differs
        cfg = ModelConfig(resolution=256, enc_channels=(8, 8, 16, 16, 24), enc_blocks=(1, 1, 1, 1, 1),
                          dec_channels=(16, 16, 8, 8), standardise_input=standardise)
        seg = LearnedSegmenter(RetSAMNet(cfg).eval(), {"name": "t", "untrained": []}, "cpu")
        p = seg.probabilities(image[None], fov[None]).astype(np.float32)
        q = seg.probabilities(dark[None], fov[None]).astype(np.float32)
        diffs[standardise] = float(np.abs(p - q)[:, :, fov].mean())
        if standardise:  # without a FOV, the canvas's non-black pixels stand in for it
            assert np.abs(seg.probabilities(image[None]).astype(np.float32) - p)[:, :, fov].mean() < 0.1 * diffs[True] + 1e-3
    assert diffs[False] > 5 * diffs[True], diffs


def test_training_records_are_standardised_like_inference(shared_data, tmp_path):
    from retsam_core.datasets.cache import build_one, cache_path
    from retsam_core.datasets.readers import get_reader
    from retsam_core.training.data import load_records

    r = get_reader("drishti_gs1", shared_data)
    id_ = r.ids("train")[0]
    build_one(r, "train", id_, 256, cache_path(tmp_path, 256, r.name, "train", id_))
    plain = load_records(tmp_path, ["drishti_gs1"], "train", 256, root=shared_data, cache_size=256, ids=[id_])[0]
    std = load_records(tmp_path, ["drishti_gs1"], "train", 256, root=shared_data, cache_size=256, ids=[id_], standardise=True)[0]
    assert np.array_equal(std.image, standardise_intensity(plain.image, plain.fov))
    assert not np.array_equal(std.image, plain.image) and np.array_equal(std.labels["optic_disc"], plain.labels["optic_disc"])
