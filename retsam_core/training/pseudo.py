"""RetSAM stage 2a: task experts label the training images their datasets leave unlabelled (pseudo-labels).

Only confident pixels become labels; the uncertain band (`TrainConfig.pseudo_band`) is ignored by the loss. The
labels go to `OUT/pseudo/<dataset>/<id>.npz` so that the multi-task stage, resumed or not, attaches the same ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from retsam_core.model.network import RetSAMNet
from retsam_core.training.data import Record

if TYPE_CHECKING:
    from retsam_core.training.config import TrainConfig


@torch.no_grad()
def predict_probs(model: RetSAMNet, image_uint8: np.ndarray) -> np.ndarray:
    """(R, R, 3) uint8 at the model resolution -> (C, R, R) float32 probabilities (on the model's device)."""
    model.eval()
    dev = next(model.parameters()).device
    x = torch.from_numpy(image_uint8).permute(2, 0, 1)[None].to(dev)
    return torch.sigmoid(model(model.normalise(x))["seg"].float())[0].cpu().numpy()


def make_pseudo_labels(cfg: TrainConfig, experts: dict[str, dict], records, out_dir: Path, device: torch.device,
                       log=print) -> int:
    """Stage 2a: each expert labels the records that lack its group's labels; uncertain pixels are ignored."""
    n = 0
    lo, hi = cfg.pseudo_band
    for group, state in experts.items():
        model = RetSAMNet(cfg.model)
        model.load_state_dict(state)
        model.skip_groups = {g for g in cfg.model.task_groups if g != group}
        model.to(device)
        chans = [c for c in cfg.model.task_groups[group]]
        for rec in records:
            todo = [c for c in chans if c not in rec.labels]
            # only pseudo-label channels that some curated dataset trains (e.g. not drusen)
            todo = [c for c in todo if any(c in r.labels and c not in r.pseudo for r in records)]
            if not todo:
                continue
            p = predict_probs(model, rec.image)
            path = Path(out_dir) / rec.dataset / f"{rec.id}.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            old = dict(np.load(path)) if path.exists() else {}
            for c in todo:
                pc = p[model.channels.index(c)] * rec.fov
                old["m_" + c] = ((pc >= 0.5) * 255).astype(np.uint8)
                old["i_" + c] = (pc > lo) & (pc < hi)
            np.savez(path, **old)
            n += 1
    log(f"[pseudo] wrote pseudo-labels for {n} (image, expert) pairs to {out_dir}")
    return n


def add_pseudo_labels(records: list[Record], pseudo_dir: Path) -> int:
    """Attach pseudo-labels written by `make_pseudo_labels` (only for channels a record lacks)."""
    n = 0
    for rec in records:
        p = Path(pseudo_dir) / rec.dataset / f"{rec.id}.npz"
        if not p.exists():
            continue
        with np.load(p) as z:
            for k in z.files:
                if k.startswith("m_") and k[2:] not in rec.labels:
                    ch = k[2:]
                    lab = z[k]
                    if lab.shape[0] != rec.image.shape[0]:
                        lab = cv2.resize(lab, rec.image.shape[:2][::-1], interpolation=cv2.INTER_LINEAR)
                    rec.labels[ch] = lab
                    if "i_" + ch in z.files:
                        ig = z["i_" + ch]
                        if ig.shape[0] != rec.image.shape[0]:
                            ig = cv2.resize(ig.astype(np.uint8), rec.image.shape[:2][::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
                        rec.ignore[ch] = ig
                    rec.pseudo.add(ch)
                    n += 1
    return n
