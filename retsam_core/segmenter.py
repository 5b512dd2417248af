"""The Segmenter interface: a batch of preprocessed canvases in, named boolean masks out.

A segmenter declares which targets it *provides* (trained, trustworthy). Targets it does not provide are simply
absent from its output, and every biomarker that needs them is null with a reason, never noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from retsam_core.preprocess import angular_canvas_side


@dataclass(frozen=True)
class SegmenterInfo:
    name: str  # e.g. "classical-v1" or "retsam-small"
    version: str
    weights_hash: str  # sha256 of the weights file ("" for weights-free segmenters)
    resolution: int  # canvas side the segmenter expects
    provides: tuple[str, ...]  # targets with trained/validated output
    untrained: tuple[str, ...] = field(default=())  # heads that exist but were never trained (flagged, not emitted)
    px_per_degree: float | None = None  # an angular-scale segmenter: give it canvases of this x the field angle (px)

    def canvas_side(self, field_angle_deg: float | None, default: int = 1024) -> int:
        """The canvas side to cut for a camera of `field_angle_deg`: `default` unless the segmenter works at a fixed
        angular scale, whose pixels per degree then decide it."""
        return angular_canvas_side(self.px_per_degree, field_angle_deg, default)


@runtime_checkable
class Segmenter(Protocol):
    info: SegmenterInfo

    def segment(self, images: np.ndarray, fovs: np.ndarray) -> list[dict[str, np.ndarray]]:
        """`images` (N, S, S, 3) uint8 RGB canvases, `fovs` (N, S, S) bool -> per image {target: (S, S) bool}.

        Only targets in `info.provides` appear. `fovea` is a small disc around the fovea centre.
        """
        ...


def load_segmenter(spec: str | None = None, device: str | None = None) -> Segmenter:
    """Build a segmenter from a spec: "default", "classical", "learned", or a path/URI of weights (.safetensors).

    "default": the shipped learned model combined per target with the classical one (`hybrid.HybridSegmenter`),
    when its card says it beats the classical segmenter on vessels; else classical. "learned": the shipped model
    alone. A path/URI: those weights alone, every trained channel as the card describes it. A learned spec may
    end in "+flip" (e.g. "default+flip"): test-time flip averaging, 4 forward passes (`loading.TTA_FLIPS`), and/or
    in "+bf16": bf16 autocast on the CPU too (faster on CPUs with bf16 instructions; docs/model_eval/cpu_bf16/). The
    segmenter's name then says so, and with it every row's provenance.
    """
    from retsam_core.classical import ClassicalSegmenter

    spec, tta, cpu_bf16 = _learned_options(spec)
    if spec == "classical":
        return ClassicalSegmenter()
    if spec in (None, "", "default", "learned"):
        from retsam_core.model.loading import default_weights_path

        path = default_weights_path()
        if path is None:
            if spec == "learned":
                raise FileNotFoundError("no shipped learned weights that beat the classical segmenter")
            return ClassicalSegmenter()
        from retsam_core.model.loading import LearnedSegmenter

        learned = LearnedSegmenter.from_uri(str(path), device=device, tta=tta, cpu_bf16=cpu_bf16)
        if spec == "learned":
            return learned
        from retsam_core.hybrid import HybridSegmenter

        return HybridSegmenter(learned, learned.card)
    from retsam_core.model.loading import LearnedSegmenter

    return LearnedSegmenter.from_uri(spec, device=device, tta=tta, cpu_bf16=cpu_bf16)


def _learned_options(spec: str | None) -> tuple[str | None, str, bool]:
    """Split "SPEC[+flip][+bf16]" (either order) into (SPEC, tta, cpu_bf16); the options need a learned segmenter."""
    tta, cpu_bf16 = "none", False
    if not spec or "+" not in spec:
        return spec, tta, cpu_bf16
    from retsam_core.model.loading import TTA_FLIPS  # torch: only for a spec with options

    while "+" in spec:
        base, option = spec.rsplit("+", 1)
        if option == "bf16" and not cpu_bf16:
            cpu_bf16 = True
        elif option in TTA_FLIPS and tta == "none":
            tta = option
        else:
            break
        spec = base
    if spec == "classical" and (tta != "none" or cpu_bf16):
        raise ValueError("test-time augmentation and bf16 apply to a learned segmenter, not the classical one")
    return spec, tta, cpu_bf16
