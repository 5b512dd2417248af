"""Field-of-view crop and the geometry that maps masks back onto original pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from retsam_core.errors import UngradableImage
from retsam_core.mask_codec import decode_mask, encode_mask
from retsam_core.preprocess import (
    angular_canvas_side,
    canvas_from_geometry,
    canvas_mm_per_px,
    detect_fov,
    mask_to_original,
    preprocess,
)


@pytest.fixture(scope="module")
def retina() -> np.ndarray:
    return skimage.data.retina()


def test_fov_of_real_fundus_is_the_round_retina(retina):
    fov = detect_fov(retina)
    h, w = fov.shape
    assert 0.6 < fov.mean() < 0.8  # a circle inscribed in a square covers pi/4 = 0.785
    assert fov[h // 2, w // 2] and not fov[2, 2] and not fov[-3, -3]


def test_black_image_has_no_fov():
    with pytest.raises(UngradableImage, match="no field of view"):
        detect_fov(np.zeros((300, 300, 3), np.uint8))


def test_canvas_is_square_and_masked(retina):
    p = preprocess(retina, 512)
    assert p.image.shape == (512, 512, 3) and p.fov.shape == (512, 512)
    assert p.image[~p.fov].max() == 0
    assert p.geometry.original_height == retina.shape[0]


def test_mask_round_trip_through_geometry_on_padded_crop(retina):
    # A macula-style crop cut at top and bottom: the canvas must pad, and masks must map back exactly.
    cut = retina[250:1150]
    p = preprocess(cut, 512)
    assert p.geometry.box_y0 < 0  # the square box extends above the image
    # Draw a known blob in original coordinates, push it to the canvas, then back.
    blob = np.zeros(cut.shape[:2], np.uint8)
    cv2.circle(blob, (700, 450), 120, 1, -1)
    g = p.geometry
    s = g.size / g.box_side
    canvas = np.zeros((512, 512), np.uint8)
    cv2.circle(canvas, (round((700 - g.box_x0) * s), round((450 - g.box_y0) * s)), round(120 * s), 1, -1)
    back = mask_to_original(canvas.astype(bool), g)
    assert back.shape == cut.shape[:2]
    dice = 2 * (back & blob.astype(bool)).sum() / (back.sum() + blob.sum())
    assert dice > 0.97


def test_smooth_mapping_follows_the_true_outline_better_than_blocks(retina):
    """Masks go back to the photograph bilinearly (the default): in the same place as the nearest-neighbour blocks
    (same geometry, padding included), following a round outline closer: a 128 px canvas over a 900 px tall crop is
    7 px blocks."""
    cut = retina[250:1150]
    g = preprocess(cut, 128).geometry
    s = g.size / g.box_side
    truth = np.zeros(cut.shape[:2], np.uint8)
    cv2.circle(truth, (700, 450), 150, 1, -1)
    yy, xx = np.mgrid[:128, :128]
    cx, cy, r = (700 + 0.5 - g.box_x0) * s - 0.5, (450 + 0.5 - g.box_y0) * s - 0.5, 150 * s
    canvas = (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2
    blocks, smooth = mask_to_original(canvas, g, smooth=False), mask_to_original(canvas, g)

    def dice(a):
        return 2 * (a & truth.astype(bool)).sum() / (a.sum() + truth.sum())

    assert smooth.shape == blocks.shape == cut.shape[:2]
    assert dice(smooth) > dice(blocks) > 0.95
    centroid = [np.argwhere(m).mean(axis=0) for m in (blocks, smooth)]
    assert np.abs(centroid[0] - centroid[1]).max() < 1.0  # same place, to under one original pixel
    assert not mask_to_original(np.zeros((128, 128), bool), g).any()


def test_pixel_size_scales_with_the_crop(retina):
    p = preprocess(retina, 1024)
    mm = canvas_mm_per_px(0.01, p.geometry)
    assert mm == pytest.approx(0.01 * p.geometry.box_side / 1024)
    assert canvas_mm_per_px(None, p.geometry) is None


def test_mask_codec_is_lossless_and_compact():
    rng = np.random.default_rng(0)
    mask = np.zeros((1024, 1024), bool)
    for _ in range(30):
        cv2.line(mask.view(np.uint8), tuple(rng.integers(0, 1024, 2).tolist()), tuple(rng.integers(0, 1024, 2).tolist()), 1, 4)
    blob = encode_mask(mask)
    assert np.array_equal(decode_mask(blob), mask)
    assert len(blob) < mask.size / 20
    stored = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_UNCHANGED)  # what a user's reader sees
    assert stored.dtype == np.uint8 and set(np.unique(stored)) == {0, 255}
    plain = cv2.imencode(".png", stored)[1]  # OpenCV's default PNG of the same 0/255 mask
    assert len(blob) < len(plain)  # unfiltered run-length deflate: smaller (and faster, see mask_codec)
    fast = encode_mask(mask, transport=True)  # between pipeline stages: 1-bit, same pixels, as compact
    assert np.array_equal(decode_mask(fast), mask) and len(fast) < mask.size / 20
    assert cv2.imdecode(np.frombuffer(fast, np.uint8), cv2.IMREAD_UNCHANGED).dtype == np.uint8


def test_canvas_cut_again_at_another_side_is_the_same_retina(retina):
    """An angular-scale model's canvas is cut from the original over the box of the pipeline's canvas: at the same
    side it is that canvas; at 1.5x, averaged back down, it lands on the same pixels (a one-pixel shift does not)."""
    p = preprocess(retina, 512)
    same, fov = canvas_from_geometry(retina, p.geometry, 512)
    assert np.array_equal(fov, p.fov) and np.abs(same.astype(int) - p.image).mean() < 0.5
    fine, fine_fov = canvas_from_geometry(retina, p.geometry, 768)
    assert fine.shape == (768, 768, 3) and fine[~fine_fov].max() == 0
    back = cv2.resize(fine, (512, 512), interpolation=cv2.INTER_AREA).astype(int)
    err = np.abs(back - p.image)[p.fov].mean()
    shifted = np.abs(np.roll(back, 1, axis=1) - p.image)[p.fov].mean()
    assert err < 2.0 and err < 0.5 * shifted


def test_angular_canvas_side_puts_the_same_pixels_on_a_degree():
    ppd = 1024 / 30  # CHASE_DB1's canvas: 30 degrees on 1024 px
    assert [angular_canvas_side(ppd, a) for a in (30, 45, 50)] == [1024, 1536, 1696]
    assert all(angular_canvas_side(ppd, a) % 32 == 0 for a in range(20, 61))
