"""The weights-free segmenter on real photographs and public ground truth (CHASE_DB1, IDRiD)."""

from __future__ import annotations

import numpy as np
import skimage.data
from PIL import Image

from retsam_core.classical import ClassicalSegmenter
from retsam_core.image_io import DecodeLimits, decode_image
from retsam_core.preprocess import mask_to_original, preprocess


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def _segment_file(path) -> tuple[dict, object]:
    d = decode_image(path.read_bytes(), DecodeLimits(target_side=1024))
    p = preprocess(d.rgb, 1024, d.decode_scale, (d.original_height, d.original_width))
    return ClassicalSegmenter().segment(p.image[None], p.fov[None])[0], p.geometry


def test_retina_photo_layout_is_anatomically_plausible():
    p = preprocess(skimage.data.retina(), 1024)
    masks = ClassicalSegmenter().segment(p.image[None], p.fov[None])[0]
    assert set(masks) == {"vessel", "optic_disc", "fovea"}
    vessel_fraction = masks["vessel"][p.fov].mean()
    assert 0.04 < vessel_fraction < 0.2
    ys, xs = np.nonzero(masks["optic_disc"])
    fy, fx = np.nonzero(masks["fovea"])
    # skimage's retina is a left-eye-style photo with the disc on the left, fovea near the centre.
    assert xs.mean() < 350 and 380 < ys.mean() < 600
    assert 400 < fx.mean() < 700 and abs(fy.mean() - ys.mean()) < 150
    disc_diameter = 2 * np.sqrt(masks["optic_disc"].sum() / np.pi)
    assert 60 < disc_diameter < 200


def test_vessel_dice_on_chase_db1_test_images(shared_data):
    root = shared_data / "CHASE_DB1"
    dices = []
    for stem in ("Image_11L", "Image_14R"):
        masks, geom = _segment_file(root / "images" / "test" / f"{stem}.jpg")
        gt = np.asarray(Image.open(root / "masks" / "vessel_1stHO" / "test" / f"{stem}_1stHO.png")) > 0
        dices.append(_dice(mask_to_original(masks["vessel"], geom), gt))
    assert min(dices) > 0.55, dices


def test_disc_dice_on_idrid_test_images(shared_data):
    """Every other official test image: the disc is found on most, and outlined well where found."""
    root = shared_data / "IDRiD"
    dices = []
    for path in sorted((root / "images" / "test").glob("IDRiD_*.jpg"))[::2]:
        masks, geom = _segment_file(path)
        gt = np.asarray(Image.open(root / "masks" / "OD" / "test" / f"{path.stem}_OD.png")) > 0
        dices.append(_dice(mask_to_original(masks["optic_disc"], geom), gt))
    dices = np.array(dices)
    assert np.mean(dices > 0.5) >= 0.75, dices.round(2)
    assert np.median(dices) > 0.85, dices.round(2)


def test_fovea_searched_from_a_given_disc(shared_data):
    """The default segmenter hands the classical fovea locator the learned disc. Given the true disc of an IDRiD
    test image, the fovea lies in the search band around that disc's centre (1.8-3.2 disc diameters of the
    FOV-relative estimate); given an empty disc, the classical segmenter runs in full and its fovea is returned."""
    from retsam_core.classical import classical_targets, disc_radius_estimate
    from retsam_core.datasets.readers import label_to_canvas

    root = shared_data / "IDRiD"
    path = sorted((root / "images" / "test").glob("IDRiD_*.jpg"))[0]
    d = decode_image(path.read_bytes(), DecodeLimits(target_side=1024))
    p = preprocess(d.rgb, 1024, d.decode_scale, (d.original_height, d.original_width))
    gt = np.asarray(Image.open(root / "masks" / "OD" / "test" / f"{path.stem}_OD.png")) > 0
    true_disc = label_to_canvas(gt, p.geometry) >= 0.5
    full = ClassicalSegmenter().segment(p.image[None], p.fov[None])[0]
    anchored = classical_targets(p.image, p.fov, ("fovea",), disc=true_disc)
    assert set(anchored) == {"fovea"} and anchored["fovea"].any()
    fy, fx = np.nonzero(anchored["fovea"])
    dy, dx = np.nonzero(true_disc)
    dd = 2 * disc_radius_estimate(p.fov)
    assert 1.7 < np.hypot(fx.mean() - dx.mean(), fy.mean() - dy.mean()) / dd < 3.3
    fallback = classical_targets(p.image, p.fov, ("fovea",), disc=np.zeros_like(true_disc))
    assert np.array_equal(fallback["fovea"], full["fovea"])


def test_fovea_search_blur_on_a_coarse_grid_is_the_full_blur():
    """The fovea search's large blur runs on a coarse grid (`smooth_field`). On a real photograph it must stay
    within a fraction of a grey level of the full-resolution blur, canvas edges included (where the FOV touches
    them, a coarse grid mirrored at its own edge was off by 3.5 levels), and be exact below the coarse-grid
    threshold. Odd sizes come back at their own size."""
    import cv2

    from retsam_core.classical import smooth_field

    p = preprocess(skimage.data.retina(), 1024)
    green = p.image[..., 1].astype(np.float32)
    assert p.fov[0].any()  # the FOV reaches the canvas edge: the mirror matters
    for sigma in (20.0, 57.0, 90.0):
        diff = np.abs(smooth_field(green, sigma) - cv2.GaussianBlur(green, (0, 0), sigma))
        assert diff.max() < 0.25, (sigma, diff.max())
    assert np.array_equal(smooth_field(green, 9.0), cv2.GaussianBlur(green, (0, 0), 9.0))
    odd = green[:1000, :777]
    assert smooth_field(odd, 57.0).shape == odd.shape
    assert np.abs(smooth_field(odd, 57.0) - cv2.GaussianBlur(odd, (0, 0), 57.0)).max() < 0.25
