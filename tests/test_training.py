"""Training: partial-label masking, A/V consistency, a tiny real-data run, stage machinery + resume, Ray Train."""

from __future__ import annotations

import json
from pathlib import Path
import shutil

import numpy as np
import pytest
import torch

from retsam_core.model.network import ModelConfig, RetSAMNet
from retsam_core.training.data import AugConfig, PatchSampler, batch_to_float, load_records
from retsam_core.training.losses import av_consistency, partial_label_loss
from retsam_core.training.config import StageConfig, TrainConfig
from retsam_core.training.trainer import run_training, train_stage, training_records

torch.set_num_threads(1)
TINY = dict(enc_channels=(8, 8, 16, 16, 24), enc_blocks=(1, 1, 1, 1, 1), dec_channels=(16, 16, 8, 8))


def tiny_cfg(tmp_path, res=96, **kw) -> TrainConfig:
    st = StageConfig(steps=2, batch=2, patch=64, lr=3e-3)
    base = dict(out_dir=str(tmp_path / "run"), model=ModelConfig(resolution=res, **TINY), limit_images=1,
                experts=st, multitask=st, finetune=StageConfig(steps=2, batch=2, patch=64, lr=1e-3),
                ckpt_every_s=0.0, log_every=1, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_unannotated_channel_gets_no_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    y = (torch.rand(2, 4, 8, 8) > 0.5).float()
    w = torch.ones(2, 4, 8, 8)
    ann = torch.tensor([[True, False, True, False], [True, False, False, False]])
    loss, per = partial_label_loss(logits, y, w, ann)
    loss.backward()
    g = logits.grad
    assert g[:, 1].abs().sum() == 0 and g[:, 3].abs().sum() == 0  # never annotated
    assert g[1, 2].abs().sum() == 0 and g[0, 2].abs().sum() > 0  # annotated for sample 0 only
    assert set(per) == {0, 2}
    logits.grad = None  # positive weighting (rare lesions) keeps the masking
    partial_label_loss(logits, y, w, ann, pos_weight=torch.tensor([1.0, 10.0, 10.0, 10.0]))[0].backward()
    assert logits.grad[:, 1].abs().sum() == 0 and logits.grad[1, 2].abs().sum() == 0
    # ignored pixels (weight 0) give no gradient either
    logits.grad = None
    w2 = w.clone()
    w2[0, 0, :4] = 0
    partial_label_loss(logits, y, w2, ann)[0].backward()
    assert logits.grad[0, 0, :4].abs().sum() == 0


def test_av_consistency():
    big = torch.full((1, 3, 4, 4), 8.0)
    lg = big.clone()
    assert float(av_consistency(lg)) > 0.9  # a + v = 2 > vessel = 1
    lg[:, 2] = -8.0  # vein off: artery == vessel -> ~0
    assert float(av_consistency(lg)) < 1e-2


@pytest.fixture(scope="module")
def chase_records(shared_data):
    return load_records("runs/cache", ["chase_db1"], "train", 128, root=shared_data, limit=2)


def test_sampler_partial_labels(chase_records):
    s = PatchSampler(chase_records, RetSAMNet(ModelConfig(resolution=128, **TINY)).channels, patch=64, batch=3)
    x, y, w, ann, ds = s.next_batch()
    assert x.shape == (3, 3, 64, 64) and y.shape[1] == 14 and ann.shape == (3, 14)
    assert ann[:, 0].all() and not ann[:, 1:].any()  # CHASE annotates vessel only
    assert ds == ["chase_db1"] * 3


def test_tiny_training_reduces_loss_on_real_data(tmp_path, chase_records):
    cfg = tiny_cfg(tmp_path, res=128, av_weight=0.0)
    model = RetSAMNet(cfg.model)
    fixed = PatchSampler(chase_records, model.channels, patch=96, batch=4, aug=AugConfig(rotate=0, scale=(1, 1), flip=False,
                         gain=0, brightness=0, contrast=0, gamma=(1, 1), blur_p=0), seed=123).next_batch()
    fixed = (*batch_to_float(*fixed[:3]), fixed[3])

    def loss_of(state):
        m = RetSAMNet(cfg.model)
        m.load_state_dict(state)
        m.train()  # batch statistics: 30 steps are too few for settled BatchNorm running stats
        with torch.no_grad():
            return float(partial_label_loss(m(fixed[0])["seg"], fixed[1], fixed[2], fixed[3])[0])

    before = loss_of(model.state_dict())
    torch.manual_seed(0)
    state = train_stage(cfg, "multitask", StageConfig(steps=30, batch=4, patch=96, lr=3e-3), chase_records,
                        tmp_path / "mt", init_state=model.state_dict(), log=lambda m: None)
    after = loss_of(state)
    assert after < before - 0.05, (before, after)


def test_cpu_bf16_training_learns_and_says_so(tmp_path, chase_records):
    """`cpu_amp`: the same stage under bf16 autocast on the CPU lowers the loss, and its record says bf16."""
    cfg = tiny_cfg(tmp_path, res=128, av_weight=0.0, cpu_amp=True)
    logs: list[str] = []
    torch.manual_seed(0)
    train_stage(cfg, "multitask", StageConfig(steps=20, batch=4, patch=96, lr=3e-3), chase_records, tmp_path / "bf16",
                log=logs.append)
    done = json.loads((tmp_path / "bf16" / "done.json").read_text())
    assert done["bf16"] is True and done["steps"] == 20
    losses = [float(m.split(" loss ")[1].split()[0]) for m in logs if " loss " in m]
    assert len(losses) >= 2 and all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_stage_resume_from_checkpoint(tmp_path, chase_records):
    cfg = tiny_cfg(tmp_path)
    out = tmp_path / "stage"
    logs = []
    train_stage(cfg, "multitask", StageConfig(steps=2, batch=2, patch=64), chase_records, out, log=logs.append)
    (out / "done.json").unlink()  # as if interrupted after step 2 of 4
    train_stage(cfg, "multitask", StageConfig(steps=4, batch=2, patch=64), chase_records, out, log=logs.append)
    assert any("resumed from" in m and "at step 2" in m for m in logs)
    assert json.loads((out / "done.json").read_text())["steps"] == 4
    # a finished stage is skipped, not retrained
    logs.clear()
    train_stage(cfg, "multitask", StageConfig(steps=4, batch=2, patch=64), chase_records, out, log=logs.append)
    assert any("already done" in m for m in logs)


def test_job_configs_parse_and_augmentation_reaches_the_sampler(tmp_path, chase_records):
    """Every shipped training config names only known fields (a typo would silently train the default), and the
    augmentation a config asks for is the one the stage's patch sampler uses."""
    configs = sorted((Path(__file__).resolve().parents[1] / "jobs" / "configs").glob("*.json"))
    assert configs
    for path in configs:
        raw = json.loads(path.read_text())
        known = set(TrainConfig.__dataclass_fields__) | {"_comment"}
        assert set(raw) <= known, (path.name, set(raw) - known)
        cfg = TrainConfig.from_dict(raw)
        assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))).to_dict() == cfg.to_dict()
    wide = TrainConfig.from_dict(json.loads((configs[0].parent / "crosscam-hrf-only-wideaug-cpu.json").read_text())).aug
    assert wide.scale == (0.55, 1.6) and wide.rotate == AugConfig().rotate  # unnamed fields keep their defaults
    logs = []
    train_stage(tiny_cfg(tmp_path, aug=wide), "multitask", StageConfig(steps=1, batch=2, patch=64), chase_records,
                tmp_path / "aug", log=logs.append)
    assert any("scale=(0.55, 1.6)" in m for m in logs)


def test_all_stages_tiny(tmp_path, shared_data):
    cfg = tiny_cfg(tmp_path, data_root=str(shared_data), datasets=("chase_db1", "idrid"),
                   stages=("experts", "pseudo", "multitask", "finetune"))
    last = run_training(cfg)
    out = tmp_path / "run"
    assert last == out / "finetune" / "final.pt"
    for p in ("experts/vessels", "experts/lesions", "experts/disc_cup", "multitask", "finetune"):
        assert (out / p / "done.json").exists(), p
    # pseudo-labels: the vessel expert labelled the IDRiD image, the lesion expert the CHASE image
    z = np.load(next((out / "pseudo" / "idrid").glob("*.npz")))
    assert "m_vessel" in z.files and "i_vessel" in z.files
    assert "m_hard_exudate" in np.load(next((out / "pseudo" / "chase_db1").glob("*.npz"))).files
    # stage 3 froze the encoder
    mt = torch.load(out / "multitask" / "final.pt", weights_only=False)["model"]
    ft = torch.load(out / "finetune" / "final.pt", weights_only=False)["model"]
    enc = [k for k in mt if k.startswith("encoder.")]
    assert enc and all(torch.equal(mt[k], ft[k]) for k in enc)
    dec = [k for k in mt if k.startswith("decoders.lesions") and k.endswith("weight")]
    assert any(not torch.equal(mt[k], ft[k]) for k in dec)
    # the card lists every stage the weights went through; the export takes the last stage that made weights
    from retsam_core.training.export import export_weights

    card = export_weights(out, tmp_path / "w.safetensors")
    assert {"experts/vessels", "experts/lesions", "multitask", "finetune"} <= set(card["training"]["stages"])
    assert card["exported_from"].endswith("finetune/final.pt")
    shutil.rmtree(out / "finetune")  # as if the last stage never ran: pseudo-labels are not weights
    assert export_weights(out, tmp_path / "w2.safetensors")["exported_from"].endswith("multitask/final.pt")
    # experts only: each expert is its own model, trained for its own group; the rest of it is untrained noise
    shutil.rmtree(out / "multitask")
    with pytest.raises(ValueError, match="expert models"):
        export_weights(out, tmp_path / "w3.safetensors")
    expert = export_weights(out, tmp_path / "w3.safetensors", checkpoint=str(out / "experts" / "vessels" / "final.pt"))
    assert expert["trained_on"] == {"vessel": ["chase_db1"]}
    assert {"optic_disc", "hemorrhage", "artery"} <= set(expert["untrained"])


def test_from_scratch_run_of_one_group_flags_the_rest_untrained(tmp_path, shared_data):
    """A held-out-camera run trains one decoder (and the encoder) from scratch: the card must not claim the other
    decoders, which stay at their random initialisation, were trained by the dataset's other labels."""
    from retsam_core.model.loading import LearnedSegmenter
    from retsam_core.training.export import export_weights

    cfg = tiny_cfg(tmp_path, data_root=str(shared_data), datasets=("idrid",), stages=("multitask",), train_groups=("disc_cup",))
    run_training(cfg)
    card = export_weights(tmp_path / "run", tmp_path / "disc.safetensors")
    assert card["trained_on"] == {"optic_disc": ["idrid"]}
    seg = LearnedSegmenter.from_uri(str(tmp_path / "disc.safetensors"), device="cpu")
    assert "optic_disc" in seg.info.provides and not {"hard_exudate", "optic_cup", "vessel"} & set(seg.info.provides)


def test_ray_train_two_workers(tmp_path, shared_data, ray_local):
    from retsam_core.training.ray_train import train_with_ray

    cfg = tiny_cfg(tmp_path, data_root=str(shared_data), datasets=("chase_db1",), stages=("multitask",))
    res = train_with_ray(cfg, num_workers=2, num_gpus=0)
    assert res.error is None
    done = json.loads((tmp_path / "run" / "multitask" / "done.json").read_text())
    assert done["world_size"] == 2 and done["steps"] == 2


def test_stage_trains_from_device_cut_patches(tmp_path, chase_records):
    cfg = tiny_cfg(tmp_path, res=128, device_sampler=True)
    out = tmp_path / "dev"
    state = train_stage(cfg, "multitask", StageConfig(steps=3, batch=2, patch=64), chase_records, out, log=lambda m: None)
    assert json.loads((out / "done.json").read_text())["steps"] == 3
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_finetune_one_decoder_from_released_weights(tmp_path, shared_data):
    """Stage 3 alone on released weights: only the chosen decoder moves, and the card keeps the history of the rest."""
    from retsam_core.model.loading import save_weights
    from retsam_core.training.export import export_weights

    torch.manual_seed(1)
    released = RetSAMNet(ModelConfig(resolution=96, **TINY))
    init_card = save_weights(released, tmp_path / "released.safetensors", {
        "name": "released", "trained_on": {"vessel": ["chase_db1"], "optic_disc": ["drishti_gs1"], "microaneurysm": ["idrid"]},
        "thresholds": {"microaneurysm": 0.7, "vessel": 0.45}, "lesion_operating_point": {"per_target": {"microaneurysm": {}}},
        "postprocess": {"min_component_px": {"microaneurysm": 4}},
        "training": {"stages": {"multitask": {"minutes": 5.0}}, "total_minutes": 5.0, "hardware": ["1 x GPU"]}})
    # the run's own model config differs on purpose: the released card's architecture must win
    cfg = tiny_cfg(tmp_path, data_root=str(shared_data), datasets=("chase_db1",), stages=("finetune",),
                   model=ModelConfig(resolution=64), init_weights=str(tmp_path / "released.safetensors"),
                   train_groups=("vessels",))
    last = run_training(cfg)
    tuned = torch.load(last, weights_only=False)["model"]
    before = released.state_dict()
    moved = [k for k in before if not torch.equal(before[k], tuned[k])]
    assert moved and all(k.startswith("decoders.vessels.") for k in moved)
    assert any(k.startswith("decoders.vessels.") and k.endswith("weight") for k in moved)

    card = export_weights(tmp_path / "run", tmp_path / "tuned.safetensors")
    assert card["architecture"]["resolution"] == 96
    assert card["trained_on"]["optic_disc"] == ["drishti_gs1"] and card["trained_on"]["vessel"] == ["chase_db1"]
    assert card["thresholds"] == {"microaneurysm": 0.7}  # the vessel threshold belonged to the old vessel decoder
    assert card["postprocess"]["min_component_px"] == {"microaneurysm": 4} and "lesion_operating_point" in card
    origin = card["training"]["initialised_from"]
    assert origin["sha256"] == init_card["sha256"] and origin["trained_groups"] == ["vessels"]
    assert card["training"]["total_minutes"] >= 5.0 and "1 x GPU" in card["training"]["hardware"]
    with pytest.raises(ValueError, match="unknown task group"):
        run_training(tiny_cfg(tmp_path / "bad", data_root=str(shared_data), datasets=("chase_db1",), stages=("finetune",),
                              init_weights=str(tmp_path / "released.safetensors"), train_groups=("vessel",)))


def test_operating_point_knows_when_healthy_eyes_were_trained_on():
    from retsam_core.evaluation.lesion_operating_point import healthy_eyes_in_training

    plain = {"config": {"healthy_negatives": False}, "stages": {}}
    assert not healthy_eyes_in_training(plain)
    assert healthy_eyes_in_training({"config": {"healthy_negatives": True}})
    assert healthy_eyes_in_training({"config": {}, "initialised_from": {"config": {"healthy_negatives": True}}})
    assert not healthy_eyes_in_training({"config": {}, "initialised_from": plain})


def test_angular_scale_training_cuts_each_camera_at_its_own_side(tmp_path, shared_data):
    """With `px_per_degree`, CHASE_DB1 (30 degrees) and HRF-AV (45 degrees) canvases are cut at sides in the ratio of
    their field angles, labels alongside, so a vessel of one angular size covers the same pixels on both."""
    cfg = tiny_cfg(tmp_path, data_root=str(shared_data), datasets=("chase_db1", "hrf_av"),
                   model=ModelConfig(resolution=64, px_per_degree=64 / 30, **TINY))
    records, sides = training_records(cfg)
    assert sides == {"chase_db1": 64, "hrf_av": 96}
    assert {r.dataset: r.image.shape[0] for r in records} == sides
    for r in records:
        assert r.fov.shape == r.image.shape[:2] and all(v.shape == r.fov.shape for v in r.labels.values())
    fixed, _ = training_records(tiny_cfg(tmp_path, data_root=str(shared_data), datasets=("chase_db1", "hrf_av")))
    assert {r.image.shape[0] for r in fixed} == {96}


def test_training_and_export_import_without_skan():
    """The GPU training image has no skan (session 7's export failed on it): only the A/V vote may need it."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['skan'] = None\n"
            "import retsam_core.training.export, retsam_core.training.trainer, retsam_core.model.loading\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_calibration_eyes_are_a_fixed_half_of_the_healthy_training_eyes(shared_data):
    """Half the healthy training eyes can stay out of training, to choose lesion operating points on unseen eyes."""
    from retsam_core.datasets.readers import get_reader
    from retsam_core.evaluation.healthy_fp import healthy_images
    from retsam_core.training.data import add_healthy_negatives

    per_dataset = {}
    for name in ("chase_db1", "hrf_av"):
        r = get_reader(name, shared_data)
        healthy = [i for i in r.ids("train") if r.healthy(i)]
        per_dataset[name] = (len(healthy), sum(map(r.calibration_eye, healthy)))
        assert not any(r.calibration_eye(i) for i in r.ids("test"))
    assert per_dataset == {"chase_db1": (20, 10), "hrf_av": (10, 5)}
    calibration = healthy_images(shared_data, "train", calibration_only=True)
    assert len(calibration) == 15 and len(healthy_images(shared_data, "train")) == 30
    assert {p.stem for p, _ in calibration} >= {"Image_06L", "Image_10R", "11_h", "15_h"}

    recs = load_records("runs/cache", ["chase_db1"], "train", 128, root=shared_data, ids={"Image_01L", "Image_06L"})
    assert add_healthy_negatives(recs, ["hemorrhage"], hold_out_calibration=True) == 1
    assert {r.id for r in recs if "hemorrhage" in r.labels} == {"Image_01L"}
    assert add_healthy_negatives(recs, ["hemorrhage"]) == 1  # the calibration eye, now without the hold-out


def test_operating_point_knows_when_calibration_eyes_were_held_out():
    from retsam_core.evaluation.lesion_operating_point import healthy_eyes_in_training

    held = {"config": {"healthy_negatives": True, "hold_out_calibration_eyes": True}}
    assert healthy_eyes_in_training(held) and not healthy_eyes_in_training(held, calibration_only=True)
    earlier_all = {"config": held["config"], "initialised_from": {"config": {"healthy_negatives": True}}}
    assert healthy_eyes_in_training(earlier_all, calibration_only=True)  # an earlier run trained on every eye


def test_a_resumed_gpu_run_fits_the_configs_stage_minutes_into_the_time_left():
    """`--minutes-within` (the GPU script's fallback): experts and head fine-tuning keep the config's minutes while
    they fit, multi-task takes the rest; a config that skips the experts gives their share to multi-task."""
    import argparse

    from retsam_core.training.cli import add_arguments, build_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    configs = Path(__file__).resolve().parents[1] / "jobs" / "configs"
    scratch = build_config(parser.parse_args(["--config", str(configs / "retsam-small-gpu.json"), "--minutes-within", "330"]))
    assert (scratch.experts.max_minutes, scratch.finetune.max_minutes) == (0.5, 0.7)
    assert scratch.multitask.max_minutes == pytest.approx(5.5 - 1.5 - 0.7)
    short = build_config(parser.parse_args(["--config", str(configs / "retsam-small-gpu.json"), "--minutes-within", "60"]))
    assert short.experts.max_minutes == pytest.approx(0.2) and short.multitask.max_minutes == pytest.approx(0.2)
    for seconds in ("60", "20", "5"):  # however little time is left, the stages together fit into it
        tight = build_config(parser.parse_args(["--config", str(configs / "retsam-small-gpu.json"), "--minutes-within", seconds]))
        used = 3 * tight.experts.max_minutes + tight.finetune.max_minutes + tight.multitask.max_minutes
        assert 0 < tight.multitask.max_minutes and used <= int(seconds) / 60 + 1e-9
    cont = build_config(parser.parse_args(["--config", str(configs / "retsam-small-gpu-continue.json"), "--minutes-within", "330"]))
    assert cont.multitask.max_minutes == pytest.approx(5.5 - 0.7)


def test_lesion_operating_points_keep_a_margin_below_the_healthy_eye_bar():
    """With a confidence, the bar must hold at the Poisson upper bound of the rate the counted eyes show: 15
    haemorrhages on 15 calibration eyes sit exactly at a bar of 1 per eye and no longer pass; without one, the
    observed rate decides as before."""
    from retsam_core.evaluation.lesion_operating_point import false_lesion_bound

    counts = np.array([0, 9, 12, 15])
    assert np.allclose(false_lesion_bound(counts, 15, 0.0), counts / 15)
    bound = false_lesion_bound(counts, 15, 0.8)
    assert np.all(bound > counts / 15) and np.all(np.diff(bound) > 0)
    assert bound[0] == pytest.approx(-np.log(0.2) / 15)  # zero seen: exp(-15 r) = 0.2 at the bound
    assert list(bound <= 1.0) == [True, True, False, False]
    assert false_lesion_bound(np.array([24]), 30, 0.8)[0] < bound[2]  # more eyes, the same rate: a smaller margin
