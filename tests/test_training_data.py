"""Training data paths: the portable bundle, threaded patch cutting, uint8 batches and the LUT colour jitter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from retsam_core.datasets.bundle import read_bundle, write_bundle
from retsam_core.datasets.cache import build_one, cache_path
from retsam_core.datasets.readers import get_reader
from retsam_core.model.network import SEG_CHANNELS
from retsam_core.training.data import (
    AugConfig,
    PatchSampler,
    batch_stream,
    batch_to_float,
    load_records,
)


@pytest.fixture(scope="module")
def small_cache(shared_data, tmp_path_factory):
    """A canvas cache at 256 px holding one CHASE_DB1 and one IDRiD training image, built from the real files."""
    cache = tmp_path_factory.mktemp("cache")
    for name in ("chase_db1", "idrid"):
        r = get_reader(name, shared_data)
        id_ = r.ids("train")[0]
        build_one(r, "train", id_, 256, cache_path(cache, 256, r.name, "train", id_))
    return cache


def test_bundle_matches_the_cache(small_cache, shared_data, tmp_path):
    index = write_bundle(small_cache, tmp_path / "bundle", ["chase_db1", "idrid"], ("train",), size=256)
    assert [r["dataset"] for r in index["records"]] == ["chase_db1", "idrid"]
    assert json.loads((tmp_path / "bundle" / "index.json").read_text()) == index
    ids = {r["id"] for r in index["records"]}
    from_cache = load_records(small_cache, ["chase_db1", "idrid"], "train", 256, root=shared_data, cache_size=256, ids=ids)
    from_bundle = load_records(None, ["chase_db1", "idrid"], "train", 256, bundle_dir=tmp_path / "bundle")
    assert [(r.dataset, r.id) for r in from_bundle] == [(r.dataset, r.id) for r in from_cache]
    for a, b in zip(from_cache, from_bundle):
        assert set(a.labels) == set(b.labels) and set(a.ignore) == set(b.ignore)
        for ch in a.labels:  # labels are lossless
            assert np.array_equal(a.labels[ch], b.labels[ch]), ch
        assert np.array_equal(a.fov, b.fov)
        diff = np.abs(a.image.astype(int) - b.image.astype(int))[a.fov]
        assert diff.mean() < 2.0, diff.mean()  # JPEG q92: about one grey level on average
    assert "hard_exudate" in from_bundle[1].labels and "vessel" in from_bundle[0].labels


def test_bundle_keeps_each_datasets_own_canvas_side(small_cache, shared_data, tmp_path):
    """An angular-scale model's bundle: each dataset at its camera's side, as the trainer will ask for it."""
    r = get_reader("idrid", shared_data)
    id_ = r.ids("train")[0]
    build_one(r, "train", id_, 384, cache_path(small_cache, 384, r.name, "train", id_))
    index = write_bundle(small_cache, tmp_path / "b", ["chase_db1", "idrid"], ("train",), size=256, sizes={"idrid": 384})
    assert index["sizes"] == {"chase_db1": 256, "idrid": 384}
    got = {d: rec["image"].shape[0] for d, _, rec in read_bundle(tmp_path / "b", ["chase_db1", "idrid"], "train")}
    assert got == {"chase_db1": 256, "idrid": 384}


def test_threaded_batches_are_uint8_and_independent(small_cache, shared_data):
    recs = load_records(small_cache, ["chase_db1", "idrid"], "train", 256, root=shared_data, cache_size=256, limit=1)
    sampler = PatchSampler(recs, SEG_CHANNELS, patch=64, batch=3, seed=1)
    stream = batch_stream(sampler, workers=2)
    batches = [next(stream) for _ in range(4)]
    stream.close()
    for x, y, w, ann, ds in batches:
        assert x.dtype == y.dtype == w.dtype == torch.uint8
        assert x.shape == (3, 3, 64, 64) and y.shape == w.shape == (3, len(SEG_CHANNELS), 64, 64)
        for i, d in enumerate(ds):  # weights are 255 exactly where the sample's dataset annotates a channel
            annotated = {SEG_CHANNELS[c] for c in np.flatnonzero(ann[i].numpy())}
            assert annotated == {"vessel"} if d == "chase_db1" else "hard_exudate" in annotated
            assert w[i, ~ann[i]].max() == 0
    # each thread has its own random stream: no two batches repeat
    assert len({b[0].numpy().tobytes() for b in batches}) == 4
    xf, yf, wf = batch_to_float(*batches[0][:3])
    assert xf.dtype == torch.float32 and float(yf.max()) <= 1.0 and float(wf.max()) == 1.0


def test_lut_colour_jitter_equals_float_arithmetic(small_cache, shared_data):
    """The per-channel tables give what the float formula gives (gain, contrast about the FOV mean, brightness,
    gamma), to within one grey level."""
    rec = load_records(small_cache, ["chase_db1"], "train", 256, root=shared_data, cache_size=256, limit=1)[0]
    sampler = PatchSampler([rec], SEG_CHANNELS, patch=64, batch=1, aug=AugConfig(), seed=5)
    draws = np.random.default_rng(11)
    sampler.rng = np.random.default_rng(11)
    luts = sampler._colour_luts(rec.image, rec.fov)
    a = sampler.aug
    gain = 1 + draws.uniform(-a.gain, a.gain, 3)
    img = rec.image.astype(np.float64) / 255 * gain
    m = img[rec.fov].mean(0)
    img = (img - m) * (1 + draws.uniform(-a.contrast, a.contrast)) + m + draws.uniform(-a.brightness, a.brightness)
    want = np.clip(img, 0, 1) ** draws.uniform(*a.gamma) * 255
    got = np.stack([luts[c][rec.image[..., c]] for c in range(3)], -1).astype(float)
    assert np.abs(got - want)[rec.fov].max() <= 1.0


def test_device_sampler_cuts_the_patch_the_cpu_sampler_cuts(small_cache, shared_data):
    """Same seed, same draws: the grid_sample patch matches the OpenCV one (bilinear rounding aside)."""
    from retsam_core.training.device_sampler import DevicePatchSampler

    recs = load_records(small_cache, ["chase_db1", "idrid"], "train", 256, root=shared_data, cache_size=256, limit=1)
    still = AugConfig(gain=0, brightness=0, contrast=0, gamma=(1, 1), blur_p=0)
    for seed in range(4):
        cpu = PatchSampler(recs, SEG_CHANNELS, patch=96, batch=1, aug=still, seed=seed).next_batch()
        dev = DevicePatchSampler(PatchSampler(recs, SEG_CHANNELS, patch=96, batch=1, aug=still, seed=seed), "cpu").next_batch()
        assert dev[4] == cpu[4] and torch.equal(dev[3], cpu[3])
        for a, b in zip(cpu[:3], dev[:3]):
            assert a.dtype == b.dtype == torch.uint8 and a.shape == b.shape
        inside = cpu[0][0].bool().any(0)  # (P, P): the warped FOV of the one sample
        assert (cpu[0][0].int() - dev[0][0].int()).abs()[:, inside].float().mean() < 1.0  # 2 px off: 3.6
        assert (cpu[1].int() - dev[1].int()).abs().float().mean() < 1.0
        # weights: the same inside the field of view (outside the canvas the device gives 0, OpenCV 255)
        assert (cpu[2][0][:, inside] != dev[2][0][:, inside]).float().mean() < 0.01
    # with colour jitter and blur on, batches stay in range and differ from the still ones
    s = DevicePatchSampler(PatchSampler(recs, SEG_CHANNELS, patch=64, batch=4, aug=AugConfig(blur_p=1.0), seed=0), "cpu")
    x, y, w, ann, ds = s.next_batch()
    assert x.shape == (4, 3, 64, 64) and y.shape == w.shape == (4, len(SEG_CHANNELS), 64, 64) and len(ds) == 4


def test_healthy_eyes_train_lesions_as_background():
    from retsam_core.training.data import Record, add_healthy_negatives

    def rec(ds, id_, labels):
        return Record(ds, id_, np.zeros((32, 32, 3), np.uint8), np.ones((32, 32), bool), labels)

    vessel = np.full((32, 32), 200, np.uint8)
    healthy, diabetic, child = rec("hrf_av", "06_h", {"vessel": vessel}), rec("hrf_av", "06_dr", {}), rec("chase_db1", "Image_01L", {})
    lesion = np.full((32, 32), 255, np.uint8)
    idrid = rec("idrid", "IDRiD_01", {"hemorrhage": lesion})
    n = add_healthy_negatives([healthy, diabetic, child, idrid], ["hemorrhage", "hard_exudate"])
    assert n == 4 and set(healthy.labels) == {"vessel", "hemorrhage", "hard_exudate"}
    assert not healthy.labels["hemorrhage"].any() and healthy.labels["vessel"] is vessel
    assert diabetic.labels == {} and set(child.labels) == {"hemorrhage", "hard_exudate"}
    assert idrid.labels["hemorrhage"] is lesion and "hard_exudate" not in idrid.labels  # IDRiD's own labels rule
    # the sampler trains them at full weight (curated, not pseudo)
    sampler = PatchSampler([healthy], ("vessel", "hemorrhage", "hard_exudate"), patch=16, batch=1)
    assert [w for _, _, w, _ in sampler.trained_labels(healthy)] == [255, 255, 255]


def test_device_sampler_takes_canvases_of_different_sides(small_cache, shared_data):
    """An angular-scale model trains on each camera's own canvas side: the device keeps them in one padded tensor,
    and still cuts the patch OpenCV cuts from each record."""
    from retsam_core.training.device_sampler import DevicePatchSampler

    recs = (load_records(small_cache, ["chase_db1"], "train", 256, root=shared_data, cache_size=256, limit=1)
            + load_records(small_cache, ["idrid"], "train", 384, root=shared_data, cache_size=256, limit=1))
    assert [r.image.shape[0] for r in recs] == [256, 384]
    still = AugConfig(gain=0, brightness=0, contrast=0, gamma=(1, 1), blur_p=0)
    seen = set()
    for seed in range(8):
        cpu = PatchSampler(recs, SEG_CHANNELS, patch=96, batch=1, aug=still, seed=seed).next_batch()
        dev = DevicePatchSampler(PatchSampler(recs, SEG_CHANNELS, patch=96, batch=1, aug=still, seed=seed), "cpu").next_batch()
        seen.add(cpu[4][0])
        inside = cpu[0][0].bool().any(0)
        assert inside.any()
        assert (cpu[0][0].int() - dev[0][0].int()).abs()[:, inside].float().mean() < 1.0
        assert (cpu[1].int() - dev[1].int()).abs().float().mean() < 1.0
    assert seen == {"chase_db1", "idrid"}  # both sides were sampled


@pytest.mark.parametrize("name", ["chase_db1", "hrf_av", "drishti_gs1", "idrid"])
def test_reader_image_path_is_the_photograph_load_reads(shared_data, name):
    """Evaluation asks for the photograph alone (no mask decoding); it must be the one `load` pairs with the masks."""
    r = get_reader(name, shared_data)
    for split in ("train", "test"):
        id_ = r.ids(split)[-1]
        path = r.image_path(split, id_)
        assert path == r.load(split, id_).image_path and path.is_file() and path.stem == id_
