"""Partial-label multi-task loss: BCE + Dice on the channels each sample annotates, plus A/V consistency.

A channel that a sample's dataset does not annotate has zero weight everywhere for that sample, so it contributes
neither loss nor gradient (tested). Dice is computed per channel over the annotated samples of the batch (pooled),
which stays stable when a lesion is absent from one patch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def partial_label_loss(logits, y, w, ann, bce_weight=1.0, dice_weight=1.0, channel_weights=None, eps=1.0, pos_weight=None):
    """`logits`, `y`, `w`: (B, C, H, W); `ann`: (B, C) bool; `pos_weight` (C,) up-weights positives in the BCE
    (rare lesions). Returns (loss, {channel index: detached loss tensor})."""
    m = w * ann[:, :, None, None].to(w.dtype)
    pw = None if pos_weight is None else pos_weight.to(logits.dtype).view(1, -1, 1, 1)
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none", pos_weight=pw)
    p = torch.sigmoid(logits)
    total = logits.new_zeros(())
    per = {}
    active = [c for c, on in enumerate(ann.any(0).tolist()) if on]  # one host sync per step, not one per channel
    for c in active:
        mc = m[:, c]
        l_bce = (bce[:, c] * mc).sum() / mc.sum().clamp(min=1e-6)
        inter = (p[:, c] * y[:, c] * mc).sum()
        denom = (p[:, c] * mc).sum() + (y[:, c] * mc).sum()
        l_dice = 1 - (2 * inter + eps) / (denom + eps)
        lc = bce_weight * l_bce + dice_weight * l_dice
        if channel_weights is not None:
            lc = lc * channel_weights[c]
        per[c] = lc.detach()
        total = total + lc
    return (total / max(len(active), 1)), per


def av_consistency(logits, vessel_idx=0, artery_idx=1, vein_idx=2, weight_mask=None):
    """RetSAM-style A/V terms (label-free): penalise artery + vein exceeding vessel, and L1 between the vessel
    probability and max(artery, vein). `weight_mask` (B,) restricts it to some samples (None = all)."""
    p = torch.sigmoid(logits[:, [vessel_idx, artery_idx, vein_idx]])
    v, a, vn = p[:, 0], p[:, 1], p[:, 2]
    term = F.relu(a + vn - v).mean(dim=(1, 2)) + (v - torch.maximum(a, vn)).abs().mean(dim=(1, 2))
    if weight_mask is not None:
        wm = weight_mask.to(term.dtype)
        return (term * wm).sum() / wm.sum().clamp(min=1)
    return term.mean()
