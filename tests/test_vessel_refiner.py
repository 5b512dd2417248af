"""The IterNet-style vessel refiner: added to released weights it starts as the identity, and trained alone on a
frozen network it is the only thing that moves; its weights then load through the card like any other."""

from __future__ import annotations

from dataclasses import replace

import torch

from retsam_core.model.loading import load_model, save_weights
from retsam_core.model.network import ModelConfig, RetSAMNet
from retsam_core.training.export import export_weights
from retsam_core.training.trainer import run_training
from tests.test_training import TINY, tiny_cfg

torch.set_num_threads(1)


def test_a_refiner_added_to_trained_weights_changes_nothing_until_it_learns():
    torch.manual_seed(0)
    plain = RetSAMNet(ModelConfig(resolution=64, **TINY)).eval()
    grown = RetSAMNet(replace(plain.cfg, vessel_refiner=8)).eval()
    missing, unexpected = grown.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("vessel_refiner.") for k in missing)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(plain(x)["seg"], grown(x)["seg"])
        torch.nn.init.normal_(grown.vessel_refiner.head.weight, std=0.1)
        a, b = plain(x)["seg"], grown(x)["seg"]
    vessels = len(plain.cfg.task_groups["vessels"])
    assert not torch.allclose(a[:, :vessels], b[:, :vessels])  # the refiner corrects the vessel channels ...
    assert torch.equal(a[:, vessels:], b[:, vessels:])  # ... and nothing else


def test_refiner_trained_alone_on_released_weights(tmp_path, shared_data):
    """`frozen_decoders` + `train_groups` ("vessels",) + `model.vessel_refiner`: the encoder, every decoder and their
    BatchNorm statistics stay bit-identical; the exported card carries the refiner and loads."""
    torch.manual_seed(2)
    released = RetSAMNet(ModelConfig(resolution=96, **TINY))
    save_weights(released, tmp_path / "released.safetensors", {"name": "released", "trained_on": {"vessel": ["chase_db1"]}})
    cfg = tiny_cfg(tmp_path, data_root=str(shared_data), datasets=("chase_db1",), stages=("finetune",),
                   model=ModelConfig(vessel_refiner=8), init_weights=str(tmp_path / "released.safetensors"),
                   train_groups=("vessels",), frozen_decoders=("vessels",))
    tuned = torch.load(run_training(cfg), weights_only=False)["model"]
    before = released.state_dict()
    assert all(torch.equal(before[k], tuned[k]) for k in before)
    refiner = [k for k in tuned if k.startswith("vessel_refiner.")]
    assert refiner and set(tuned) == set(before) | set(refiner)
    assert not torch.equal(tuned["vessel_refiner.head.weight"], torch.zeros_like(tuned["vessel_refiner.head.weight"]))

    card = export_weights(tmp_path / "run", tmp_path / "refined.safetensors")
    assert card["architecture"]["vessel_refiner"] == 8 and card["architecture"]["resolution"] == 96
    from retsam_core.evaluation.card_doc import render

    assert "vessel refiner (width 8)" in render(card, None)
    model, _ = load_model(tmp_path / "refined.safetensors")
    assert model.vessel_refiner is not None
    assert torch.equal(model.state_dict()["vessel_refiner.head.weight"], tuned["vessel_refiner.head.weight"])
