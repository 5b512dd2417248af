"""Export a finished run's last stage to `.safetensors` + model card (metrics are added later by evaluation)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from retsam_core.datasets.readers import DATASETS
from retsam_core.model.loading import card_path_for, read_uri, save_weights
from retsam_core.model.network import RetSAMNet
from retsam_core.targets import TARGETS
from retsam_core.training.config import STAGE_ORDER, TrainConfig
from retsam_core.training.trainer import describe_hardware, trained_channels

NO_DATA_NOTE = "no pixel ground truth in the available public data (see shared/data/README.md)"


def last_stage(out_dir: Path, finished: dict[str, dict]) -> str:
    """The last of the `finished` stages (`finished_stages`) that made weights (pseudo-labelling makes labels):
    `finetune`, `multitask`, or `experts/<group>` when a run trained experts only (one group: each expert is a
    model of its own)."""
    done = [s for s in finished if s != "pseudo" and (out_dir / s / "final.pt").exists()]
    if not done:
        raise FileNotFoundError(f"no finished stage in {out_dir}")
    experts = [s for s in done if s.startswith("experts/")]
    if done[-1].startswith("experts/") and len(experts) > 1:
        raise ValueError(f"{out_dir} holds {len(experts)} expert models ({', '.join(experts)}): export one with "
                         "checkpoint=<out>/experts/<group>/final.pt")
    return done[-1]


def channels_trained(cfg: TrainConfig, stage: str) -> set[str]:
    """Channels the exported weights were trained for: an expert's own group, else `train_groups`, else all. Every
    other channel comes out of a decoder that never learned (random weights) and must be flagged untrained."""
    if stage.startswith("experts/"):
        return set(cfg.model.task_groups[stage.split("/", 1)[1]])
    return set(trained_channels(cfg) or cfg.model.channels)


def finished_stages(out_dir: Path) -> dict[str, dict]:
    """Every finished stage's record, in training order (`experts/<group>`, `pseudo`, `multitask`, `finetune`)."""
    found = {}
    for s in STAGE_ORDER:
        for done in sorted((out_dir / s).glob("*/done.json")) if s == "experts" else [out_dir / s / "done.json"]:
            if done.exists():
                found[str(done.parent.relative_to(out_dir))] = json.loads(done.read_text())
    return found


def export_weights(out_dir, weights_path, extra: dict | None = None, checkpoint: str | None = None) -> dict:
    """Last finished stage (or an explicit `checkpoint` .pt, e.g. a mid-run ckpt for a preview) -> weights + card."""
    out_dir = Path(out_dir)
    cfg = TrainConfig.from_dict(json.loads((out_dir / "config.json").read_text()))
    stages = finished_stages(out_dir)
    if checkpoint:
        src = Path(checkpoint)
        folder, root = src.resolve().parent, out_dir.resolve()
        stage = str(folder.relative_to(root)) if folder.is_relative_to(root) else ""
    else:
        stage = last_stage(out_dir, stages)
        src = out_dir / stage / "final.pt"
    state = torch.load(src, map_location="cpu", weights_only=False)["model"]
    model = RetSAMNet(cfg.model)
    model.load_state_dict(state)
    trained_on: dict[str, list[str]] = {}
    taught = channels_trained(cfg, stage)
    for name in cfg.datasets:
        for t in DATASETS[name].annotated:
            if t in taught:
                trained_on.setdefault(t, []).append(name)
    untrained = [t for t in TARGETS if t not in trained_on]
    card = {
        "name": cfg.name,
        "version": time.strftime("%Y%m%d"),
        "variant": cfg.model.variant,
        "resolution": cfg.model.resolution,
        "input": "RGB canvas from retsam_core.preprocess (FOV square crop), resized to `resolution`; "
                 "normalised with mean (0.426, 0.297, 0.213), std (0.277, 0.202, 0.169)",
        "output": "independent sigmoid per channel (multi-label); threshold 0.5 unless `thresholds` says otherwise",
        "task_groups": cfg.model.task_groups,
        "postprocess": {"largest_component": ["optic_disc", "optic_cup"], "cup_inside_disc": True},
        "trained_on": trained_on,
        "untrained": untrained,
        "untrained_reason": {t: NO_DATA_NOTE for t in untrained},
        "datasets": {n: {"licence": DATASETS[n].licence, "annotated": list(DATASETS[n].annotated), "split": "train"}
                     for n in cfg.datasets},
        "training": {
            "stages": stages,
            "total_minutes": round(sum(v.get("minutes", 0) for v in stages.values()), 1),
            "hardware": sorted({v["hardware"] for v in stages.values() if v.get("hardware")})
                        or describe_hardware(torch.device("cpu"), cfg.threads),  # runs from before stages recorded it
            "config": cfg.to_dict(),
        },
        "exported_from": str(src),
        "metrics": {},
        "comparison": {},
    }
    if cfg.init_weights:
        card = inherit_from_initial(card, cfg, taught)
    card.update(extra or {})
    return save_weights(model, weights_path, card)


def inherit_from_initial(card: dict, cfg: TrainConfig, touched: set[str]) -> dict:
    """A run that started from released weights keeps their history: what trained the channels it did not touch
    (`touched`: `channels_trained`), their training record (under `training.initialised_from`) and their
    operating points."""
    init = json.loads(read_uri(card_path_for(cfg.init_weights)))
    trained_on = {t: list(v) for t, v in init.get("trained_on", {}).items()}
    for t, names in card["trained_on"].items():
        if t in touched:
            trained_on[t] = sorted(set(trained_on.get(t, [])) | set(names))
    card["trained_on"] = trained_on
    card["untrained"] = [t for t in TARGETS if t not in trained_on]
    card["untrained_reason"] = {t: NO_DATA_NOTE for t in card["untrained"]}
    card["datasets"] = init.get("datasets", {}) | card["datasets"]
    before = init.get("training", {})
    tr = card["training"]
    # the released weights' whole training record (nested when they were themselves a fine-tune)
    tr["initialised_from"] = {"weights": cfg.init_weights, "sha256": init.get("sha256"),
                              "trained_groups": list(cfg.train_groups or []) or None, **before}
    tr["total_minutes"] = round(tr["total_minutes"] + (before.get("total_minutes") or 0), 1)
    as_list = lambda hw: hw if isinstance(hw, list) else [hw] if hw else []  # noqa: E731 (older cards: one string)
    tr["hardware"] = sorted(set(as_list(before.get("hardware"))) | set(as_list(tr["hardware"])))
    untouched = lambda per_channel: {c: v for c, v in per_channel.items() if c not in touched}  # noqa: E731
    if thresholds := untouched(init.get("thresholds", {})):
        card["thresholds"] = thresholds
    if min_px := untouched(init.get("postprocess", {}).get("min_component_px", {})):
        card["postprocess"]["min_component_px"] = min_px
    if "lesion_operating_point" in init and not touched & set(init["lesion_operating_point"].get("per_target", {})):
        card["lesion_operating_point"] = init["lesion_operating_point"]
    return card
