"""Learning without forgetting: adapting the shared encoder for vessels while the disc/cup outputs are held to the
starting weights' on every patch, of every dataset."""

from __future__ import annotations

import json

import pytest
import torch

from retsam_core.model.loading import save_weights
from retsam_core.model.network import ModelConfig, RetSAMNet
from retsam_core.training.distill import distillation_loss, distilled_channels, make_teacher
from retsam_core.training.export import export_weights
from retsam_core.training.config import StageConfig
from retsam_core.training.trainer import run_training
from tests.test_training import TINY, tiny_cfg

torch.set_num_threads(1)


def test_distillation_loss_is_zero_only_for_a_student_that_matches():
    torch.manual_seed(0)
    teacher = torch.randn(2, 5, 8, 8) * 3
    kept = [1, 3]
    assert float(distillation_loss(teacher.clone(), teacher, kept)) == pytest.approx(0.0, abs=1e-6)
    moved = teacher.clone()
    moved[:, 0] += 5.0  # a channel that is not held may move freely
    assert float(distillation_loss(moved, teacher, kept)) == pytest.approx(0.0, abs=1e-6)
    moved[:, 3] -= 1.0
    assert float(distillation_loss(moved, teacher, kept)) > 1e-3


def test_positive_weight_holds_the_teachers_rare_positives_harder_and_keeps_the_minimum():
    """A lesion the teacher sees on 1 pixel of 64 barely registers in the plain mean; weighted by the teacher's
    probability it does, and the student that matches the teacher still scores zero."""
    teacher = torch.full((1, 1, 8, 8), -6.0)
    teacher[0, 0, 3, 3] = 4.0  # one confident lesion pixel
    assert float(distillation_loss(teacher.clone(), teacher, [0], positive_weight=20.0)) == pytest.approx(0.0, abs=1e-6)
    lost = teacher.clone()
    lost[0, 0, 3, 3] = -6.0  # the student forgets the lesion
    shifted = teacher.clone()
    shifted[0, 0, 0, 0] = -2.0  # ... or drifts on one background pixel
    plain_lost, plain_shift = (float(distillation_loss(x, teacher, [0])) for x in (lost, shifted))
    weighted_lost, weighted_shift = (float(distillation_loss(x, teacher, [0], positive_weight=20.0)) for x in (lost, shifted))
    assert weighted_lost / plain_lost > 15.0  # 1 + 20 x 0.98
    assert weighted_shift / plain_shift == pytest.approx(1.0 + 20.0 * float(torch.sigmoid(torch.tensor(-6.0))), rel=1e-3)  # ~1


def test_distilled_channels_name_whole_groups_and_reject_unknown_ones():
    cfg = ModelConfig(**TINY)
    idx = distilled_channels(cfg, ["disc_cup"])
    assert [cfg.channels[i] for i in idx] == ["optic_disc", "optic_cup"]
    with pytest.raises(ValueError, match="unknown task group"):
        distilled_channels(cfg, ["discs"])


def test_teacher_computes_only_the_distilled_groups():
    cfg = ModelConfig(resolution=64, **TINY)
    net = RetSAMNet(cfg)
    teacher = make_teacher(cfg, net.state_dict(), torch.device("cpu"), ["disc_cup"])
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        seg = teacher(torch.randn(1, 3, 64, 64))["seg"]
    disc = distilled_channels(cfg, ["disc_cup"])
    others = [i for i in range(len(cfg.channels)) if i not in disc]
    assert (seg[:, others] == -20.0).all() and (seg[:, disc] != -20.0).any()


def test_encoder_adapted_for_vessels_with_disc_outputs_held(tmp_path, shared_data):
    """A real run on CHASE_DB1 (vessel labels) and DRISHTI-GS1 (disc/cup, no vessel labels): the encoder and vessel
    decoder learn, the disc/cup decoder follows only the distillation term, BatchNorm statistics stay as released,
    every dataset is sampled, and the card records what was held."""
    torch.manual_seed(3)
    released = RetSAMNet(ModelConfig(resolution=96, **TINY))
    save_weights(released, tmp_path / "released.safetensors",
                 {"name": "released", "trained_on": {"vessel": ["chase_db1"], "optic_disc": ["drishti_gs1"]}})
    cfg = tiny_cfg(tmp_path, data_root=str(shared_data), datasets=("chase_db1", "drishti_gs1"), stages=("multitask",),
                   multitask=StageConfig(steps=4, batch=2, patch=64, lr=3e-3),
                   init_weights=str(tmp_path / "released.safetensors"), train_groups=("vessels",),
                   distill_groups=("disc_cup",), distill_weight=1.0, batchnorm_statistics_fixed=True)
    tuned = torch.load(run_training(cfg), weights_only=False)["model"]
    before = released.state_dict()
    changed = {k for k in before if not torch.equal(before[k], tuned[k])}
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("decoders.vessels.") for k in changed)
    assert not any(k.endswith(("running_mean", "running_var")) for k in changed)
    assert not any(k.startswith("decoders.lesions.") for k in changed)  # neither trained nor held: never computed
    done = json.loads((tmp_path / "run" / "multitask" / "done.json").read_text())
    assert done["distilled"] == ["disc_cup"] and set(done["data"]) == {"chase_db1", "drishti_gs1"}
    log = (tmp_path / "run" / "train.log").read_text()
    assert "distil=" in log

    card = export_weights(tmp_path / "run", tmp_path / "adapted.safetensors")
    assert card["training"]["stages"]["multitask"]["distilled"] == ["disc_cup"]
    assert card["trained_on"]["optic_disc"] == ["drishti_gs1"]  # inherited from the released card
    from retsam_core.evaluation.card_doc import render

    assert "learning without forgetting): disc_cup" in render(card, None)


def test_the_cli_flag_matches_the_session_10_config():
    """`retsam train --distill-groups` sets what `jobs/configs/encoder-vessels-distil-s10-cpu.json` sets."""
    import argparse
    from pathlib import Path

    from retsam_core.training.cli import add_arguments, build_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = Path(__file__).resolve().parents[1] / "jobs" / "configs" / "encoder-vessels-distil-s10-cpu.json"
    from_file = build_config(parser.parse_args(["--config", str(config)]))
    from_flags = build_config(parser.parse_args(["--train-groups", "vessels", "--distill-groups", "disc_cup", "lesions"]))
    for cfg in (from_file, from_flags):
        assert cfg.train_groups == ("vessels",) and cfg.distill_groups == ("disc_cup", "lesions")
        assert cfg.batchnorm_statistics_fixed
    assert not build_config(parser.parse_args([])).distill_groups
