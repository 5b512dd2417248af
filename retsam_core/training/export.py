"""Export a finished run's last stage to `.safetensors` + model card (metrics are added later by evaluation)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from retsam_core.datasets.readers import DATASETS
from retsam_core.model.loading import save_weights
from retsam_core.model.network import RetSAMNet
from retsam_core.targets import TARGETS
from retsam_core.training.trainer import STAGE_ORDER, TrainConfig

NO_DATA_NOTE = "no pixel ground truth in the available public data (see shared/data/README.md)"


def last_stage(out_dir: Path) -> str:
    done = [s for s in STAGE_ORDER if s != "pseudo" and (out_dir / s / "final.pt").exists()
            and (out_dir / s / "done.json").exists()]  # pseudo-labelling makes labels, not weights
    if not done:
        raise FileNotFoundError(f"no finished stage in {out_dir}")
    return done[-1]


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
    src = Path(checkpoint) if checkpoint else out_dir / last_stage(out_dir) / "final.pt"
    state = torch.load(src, map_location="cpu", weights_only=False)["model"]
    model = RetSAMNet(cfg.model)
    model.load_state_dict(state)
    stages = finished_stages(out_dir)
    trained_on: dict[str, list[str]] = {}
    for name in cfg.datasets:
        for t in DATASETS[name].annotated:
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
                        or f"{platform.processor() or platform.machine()} CPU, torch {torch.__version__}, {cfg.threads} thread(s)",
            "config": cfg.to_dict(),
        },
        "exported_from": str(src),
        "metrics": {},
        "comparison": {},
    }
    card.update(extra or {})
    return save_weights(model, weights_path, card)
