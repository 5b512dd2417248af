"""Learned segmenter: network shapes/heads, weights + card round trip (local and s3://), untrained heads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from retsam_core.finishing import PendingMasks, quantise
from retsam_core.model import loading
from retsam_core.model.loading import LearnedSegmenter, card_beats_classical, load_model, save_weights
from retsam_core.model.network import SEG_CHANNELS, TASK_GROUPS, ModelConfig, RetSAMNet
from retsam_core.segmenter import Segmenter, load_segmenter
from retsam_core.targets import TARGETS

torch.set_num_threads(1)
TINY = dict(resolution=64, enc_channels=(8, 8, 16, 16, 24), enc_blocks=(1, 1, 1, 1, 1), dec_channels=(16, 16, 8, 8))


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return RetSAMNet(ModelConfig(**TINY)).eval()


def test_shapes_and_heads():
    m = tiny_model()
    with torch.no_grad():
        out = m(m.normalise(torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)))
    assert out["seg"].shape == (2, len(SEG_CHANNELS), 64, 64)
    assert out["fovea"].shape == (2, 2) and float(out["fovea"].min()) >= 0 and float(out["fovea"].max()) <= 1
    assert m.channels == SEG_CHANNELS
    assert set(SEG_CHANNELS) | {"fovea"} == set(TARGETS)
    assert set(m.decoders) == set(TASK_GROUPS)  # one full decoder per task group (task-decoupled)
    assert TASK_GROUPS["vessels"] == ("vessel", "artery", "vein")


def test_config_round_trip():
    cfg = ModelConfig(**TINY)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_base_variant_needs_timm():
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="timm"):
            RetSAMNet(ModelConfig(variant="base", resolution=64))
    else:  # pragma: no cover - only where the gpu extra is installed
        m = RetSAMNet(ModelConfig(variant="base", resolution=64))
        assert m(torch.zeros(1, 3, 64, 64))["seg"].shape[1] == len(SEG_CHANNELS)


def _card(untrained=("drusen", "tessellation", "peripapillary_atrophy", "diffuse_atrophy", "patchy_atrophy", "fovea"), beats=True):
    return {"name": "retsam-test", "version": "t", "untrained": list(untrained),
            "comparison": {"vessel": {"learned_dsc": 0.8 if beats else 0.5, "classical_dsc": 0.6}}}


def test_save_load_round_trip_and_hash(tmp_path):
    m = tiny_model()
    p = tmp_path / "w.safetensors"
    card = save_weights(m, p, _card())
    assert len(card["sha256"]) == 64 and json.loads((tmp_path / "w.json").read_text())["sha256"] == card["sha256"]
    m2, card2 = load_model(str(p))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(m(x)["seg"], m2(x)["seg"], atol=1e-6)
    # a tampered file is refused
    data = bytearray(p.read_bytes())
    data[-1] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="hash mismatch"):
        load_model(str(p))


def test_untrained_heads_absent_and_canvas_size(tmp_path):
    p = tmp_path / "w.safetensors"
    save_weights(tiny_model(), p, _card())
    seg = load_segmenter(str(p))
    assert isinstance(seg, LearnedSegmenter) and isinstance(seg, Segmenter)
    for t in ("drusen", "tessellation", "fovea"):
        assert t not in seg.info.provides and t in seg.info.untrained
    assert "phenotypes" in seg.model.skip_groups  # all its channels untrained: not even computed
    S = 96  # canvas != model resolution (64)
    imgs = np.random.default_rng(0).integers(0, 255, (2, S, S, 3), dtype=np.uint8)
    fovs = np.ones((2, S, S), bool)
    fovs[:, :5] = False
    out = seg.segment(imgs, fovs)
    assert len(out) == 2
    assert set(out[0]) == set(seg.info.provides)
    for m in out[0].values():
        assert m.shape == (S, S) and m.dtype == bool and not m[:5].any()


def test_fovea_emitted_as_disc_when_trained(tmp_path):
    p = tmp_path / "w.safetensors"
    save_weights(tiny_model(), p, _card(untrained=()))
    seg = LearnedSegmenter.from_uri(str(p))
    assert "fovea" in seg.info.provides
    f = seg.segment(np.full((1, 64, 64, 3), 120, np.uint8), np.ones((1, 64, 64), bool))[0]["fovea"]
    assert 0 < f.sum() < 64 * 64 * 0.05


def test_default_weights_gate(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "WEIGHTS_DIR", tmp_path)
    assert loading.default_weights_path() is None
    save_weights(tiny_model(), tmp_path / "retsam-small.safetensors", _card(beats=False))
    assert loading.default_weights_path() is None
    assert load_segmenter("default").info.name == "classical"
    save_weights(tiny_model(), tmp_path / "retsam-small.safetensors", _card(beats=True))
    assert loading.default_weights_path() == tmp_path / "retsam-small.safetensors"
    assert card_beats_classical(_card()) and not card_beats_classical({})


def test_load_from_s3(tmp_path, s3_bucket, s3_endpoint):
    import boto3

    p = tmp_path / "w.safetensors"
    card = save_weights(tiny_model(), p, _card())
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.upload_file(str(p), s3_bucket, "models/w.safetensors")
    s3.upload_file(str(tmp_path / "w.json"), s3_bucket, "models/w.json")
    seg = load_segmenter(f"s3://{s3_bucket}/models/w.safetensors")
    assert seg.info.weights_hash == card["sha256"]


def test_disc_cup_postprocess(tmp_path):
    p = tmp_path / "w.safetensors"
    save_weights(tiny_model(), p, _card() | {"postprocess": {"largest_component": ["optic_disc"], "cup_inside_disc": True}})
    seg = load_segmenter(str(p))
    disc = np.zeros((32, 32), bool)
    disc[5:15, 5:15] = True
    disc[25:27, 25:27] = True  # a speck
    cup = np.zeros((32, 32), bool)
    cup[8:12, 8:20] = True  # leaks outside the disc
    masks = {"optic_disc": disc, "optic_cup": cup}
    masks = seg.finisher()(PendingMasks(masks), np.zeros((32, 32, 3), np.uint8), np.ones((32, 32), bool))
    assert masks["optic_disc"].sum() == 100 and not masks["optic_cup"][:, 15:].any()


def test_card_operating_point_drops_lesion_specks_and_sets_thresholds(tmp_path):
    p = tmp_path / "w.safetensors"
    card = _card() | {"thresholds": {"hard_exudate": 0.8},
                      "postprocess": {"min_component_px": {"hard_exudate": 4}, "largest_component": []}}
    save_weights(tiny_model(), p, card)
    seg = load_segmenter(str(p))
    assert seg.thresholds["hard_exudate"] == 0.8 and seg.thresholds["hemorrhage"] == 0.5
    ex = np.zeros((32, 32), bool)
    ex[2:5, 2:5] = True  # 9 px: kept
    ex[20, 20] = ex[25:27, 10] = True  # 1 px and 2 px: dropped
    he = ex.copy()  # no operating point for haemorrhage: untouched
    masks = {"hard_exudate": ex, "hemorrhage": he}
    masks = seg.finisher()(PendingMasks(masks), np.zeros((32, 32, 3), np.uint8), np.ones((32, 32), bool))
    assert masks["hard_exudate"].sum() == 9 and masks["hemorrhage"].sum() == 12


def test_lesion_operating_point_applies_only_points_within_the_bar(tmp_path):
    from retsam_core.evaluation.lesion_operating_point import record_in_card

    cp = tmp_path / "w.json"
    cp.write_text(json.dumps({"thresholds": {"hemorrhage": 0.6}, "postprocess": {"cup_inside_disc": True}}))
    result = {"per_target": {
        "microaneurysm": {"threshold": 0.7, "min_component_px": 4, "meets_bar": True},
        "hemorrhage": {"threshold": 0.9, "min_component_px": 32, "meets_bar": False},
    }}
    record_in_card(cp, result)
    card = json.loads(cp.read_text())
    assert card["thresholds"] == {"microaneurysm": 0.7}  # the failing head is back to the plain threshold
    assert card["postprocess"] == {"cup_inside_disc": True, "min_component_px": {"microaneurysm": 4}}
    assert card["lesion_operating_point"]["per_target"]["hemorrhage"]["applied"] is False


def test_flip_tta_is_flip_equivariant_and_named(tmp_path):
    """Flip averaging makes the output commute with flips (a plain random network does not), the fovea point is
    mirrored back, and the spec suffix reaches the segmenter's name (every row's provenance)."""
    p = tmp_path / "w.safetensors"
    save_weights(tiny_model(), p, _card(untrained=()))
    plain = load_segmenter(str(p))
    tta = load_segmenter(f"{p}+flip")
    assert tta.tta == "flip" and tta.info.name == "retsam-test+flip" and plain.info.name == "retsam-test"
    x = np.random.default_rng(1).integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    xh = x[:, :, ::-1].copy()
    for seg, equivariant in ((tta, True), (plain, False)):
        a, b = seg.probabilities(x).astype(np.float32), seg.probabilities(xh).astype(np.float32)
        assert np.allclose(a[..., ::-1], b, atol=2e-3) == equivariant
    tta.probabilities(x)
    fx = tta._last_fovea.clone()
    tta.probabilities(xh)
    assert torch.allclose(tta._last_fovea[:, 0], 1 - fx[:, 0], atol=1e-4)
    assert torch.allclose(tta._last_fovea[:, 1], fx[:, 1], atol=1e-4)
    with pytest.raises(ValueError, match="learned"):
        load_segmenter("classical+flip")
    with pytest.raises(ValueError, match="test-time"):
        LearnedSegmenter(tiny_model(), _card(), tta="rotate")


def test_cpu_bf16_is_asked_for_named_and_close_to_fp32(tmp_path):
    """"+bf16" runs the network under bf16 autocast on the CPU (the shipped weights: probabilities within a few
    hundredths of fp32 on a real photograph, masks nearly identical); it combines with "+flip" in either order and
    reaches the name; plain specs stay fp32."""
    from skimage import data

    from retsam_core.model.loading import default_weights_path
    from retsam_core.preprocess import preprocess

    p = tmp_path / "w.safetensors"
    save_weights(tiny_model(), p, _card(untrained=()))
    both = load_segmenter(f"{p}+bf16+flip")
    assert both.bf16 and both.tta == "flip" and both.info.name == "retsam-test+flip+bf16"
    assert load_segmenter(f"{p}+flip+bf16").info.name == "retsam-test+flip+bf16" and not load_segmenter(str(p)).bf16
    with pytest.raises(ValueError, match="learned"):
        load_segmenter("classical+bf16")
    import retsam_core.model.loading as loading

    with pytest.MonkeyPatch.context() as mp:  # a CPU without bf16 instructions: said, since it would be slower
        mp.setattr(loading, "cpu_bf16_instructions", lambda: [])
        with pytest.warns(RuntimeWarning, match="without bf16 instructions"):
            load_segmenter(f"{p}+bf16")
    if default_weights_path() is None:
        pytest.skip("no shipped weights")
    pre = preprocess(data.retina()[..., :3], 1024)
    fp32, bf16 = load_segmenter("learned"), load_segmenter("learned+bf16")
    assert bf16.info.name == fp32.info.name + "+bf16" and bf16.info.weights_hash == fp32.info.weights_hash
    a = fp32.probabilities(pre.image[None], pre.fov[None]).astype(np.float32)
    b = bf16.probabilities(pre.image[None], pre.fov[None]).astype(np.float32)
    diff = np.abs(a - b)
    assert diff.max() > 0 and np.quantile(diff, 0.999) < 0.05  # bf16 really ran, and stayed close
    vessel = list(fp32.model.channels).index("vessel")
    assert ((a[0, vessel] >= 0.5) != (b[0, vessel] >= 0.5)).mean() < 0.005


def test_angular_scale_model_runs_on_its_cameras_canvas(tmp_path):
    """A model trained at a fixed number of pixels per degree asks for a canvas side per camera (field angle) and
    runs at the canvas it is given, never resampled to its nominal resolution; a fixed-size model does resample."""
    cfg = ModelConfig(**TINY | {"px_per_degree": 64 / 30})
    assert (cfg.canvas_side(30), cfg.canvas_side(45), cfg.canvas_side(None)) == (64, 96, 64)
    torch.manual_seed(0)
    p = tmp_path / "angular.safetensors"
    save_weights(RetSAMNet(cfg).eval(), p, _card())
    seg = load_segmenter(str(p))
    assert seg.info.px_per_degree == pytest.approx(64 / 30)
    assert seg.info.canvas_side(45, default=1024) == 96 and seg.info.canvas_side(None, default=1024) == 1024
    imgs = np.random.default_rng(0).integers(0, 255, (1, 96, 96, 3), dtype=np.uint8)
    assert seg.probabilities(imgs).shape[-2:] == (96, 96)  # at the canvas, not at the nominal 64
    assert all(m.shape == (96, 96) for m in seg.segment(imgs, np.ones((1, 96, 96), bool))[0].values())
    fixed = tmp_path / "fixed.safetensors"
    save_weights(tiny_model(), fixed, _card())
    seg = load_segmenter(str(fixed))
    assert seg.info.px_per_degree is None and seg.info.canvas_side(45, default=1024) == 1024
    assert seg.probabilities(imgs).shape[-2:] == (64, 64)


def test_quantise_on_the_device_gives_the_bytes_the_host_gives():
    """The segmentation actor quantises the A/V evidence where the network ran (torch); torch-free callers quantise
    numpy arrays. Both must give the same bytes, rounding ties and out-of-range values included."""
    rng = np.random.default_rng(0)
    ties = (np.arange(256, dtype=np.float32) + 0.5) / 255.0  # k + 0.5 after scaling: round-half-to-even decides
    p = np.concatenate([rng.random(4096, dtype=np.float32), ties, np.float32([-0.2, 0.0, 1.0, 1.3])])
    p = np.tile(p, (2, 1))
    support = rng.random(p.shape) < 0.7
    got = quantise(torch.from_numpy(p.copy()), torch.from_numpy(support)).numpy()
    want = np.where(support, np.rint(np.clip(p, 0.0, 1.0) * np.float32(255.0)), 0).astype(np.uint8)  # the format
    assert got.dtype == np.uint8 and np.array_equal(got, want)
    host = quantise(p, support)
    assert host.dtype == np.uint8 and np.array_equal(host, want)
    assert not got[~support].any() and got[support].any()
