"""Learning without forgetting (Li & Hoiem, TPAMI 2017) for the shared encoder.

Adapting the encoder for one task group moves the features every other decoder reads: a CPU continuation of the
whole network lost disc/cup and artery accuracy within 780 small steps (training notes, session 5). Here the starting
weights act as a frozen teacher: on every training patch, whatever dataset it came from, the student's outputs for the
distilled groups are held to the teacher's probabilities, so the encoder may change only in ways those heads do not
see. The trained group learns from its labels as usual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from retsam_core.model.network import ModelConfig, RetSAMNet


def make_teacher(cfg: ModelConfig, state: dict, device: torch.device, groups) -> RetSAMNet:
    """The starting weights, frozen in inference mode (BatchNorm running statistics, no gradients), computing only
    the distilled `groups`."""
    teacher = RetSAMNet(cfg)
    teacher.load_state_dict(state)
    teacher.requires_grad_(False)
    teacher.skip_groups = set(cfg.task_groups) - set(groups)
    return teacher.eval().to(device)


def distilled_channels(cfg: ModelConfig, groups) -> list[int]:
    """Indices into the model's channels of every channel in `groups` (unknown groups raise)."""
    unknown = [g for g in groups if g not in cfg.task_groups]
    if unknown:
        raise ValueError(f"unknown task group(s) to distil {unknown}; groups: {', '.join(cfg.task_groups)}")
    names = {c for g in groups for c in cfg.task_groups[g]}
    return [i for i, c in enumerate(cfg.channels) if c in names]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, channels: list[int],
                      positive_weight: float = 0.0) -> torch.Tensor:
    """Mean over `channels` of the per-channel binary cross-entropy against the teacher's probabilities, less its
    minimum (the teacher's own entropy), so a student that matches the teacher scores exactly zero.

    `positive_weight` w weights each pixel by 1 + w·p_teacher. Lesions cover a few pixels in a thousand, so the plain
    mean is dominated by background and barely holds what the teacher sees (session 10: the term was 3e-4 against a
    loss of 0.45, and soft-exudate DSC fell 2.4 points). A per-pixel weight keeps each pixel's term a proper scoring
    rule, so the student matching the teacher is still the unique minimum."""
    s = student_logits[:, channels].float()
    t = torch.sigmoid(teacher_logits[:, channels].float())
    ce = F.binary_cross_entropy_with_logits(s, t, reduction="none")
    own = F.binary_cross_entropy(t, t, reduction="none")
    gap = ce - own
    if positive_weight:
        gap = gap * (1.0 + positive_weight * t)
    return gap.mean()
