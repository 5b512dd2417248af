"""The Segmenter interface: a batch of preprocessed canvases in, named boolean masks out.

A segmenter declares which targets it *provides* (trained, trustworthy). Targets it does not provide are simply
absent from its output, and every biomarker that needs them is null with a reason, never noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class SegmenterInfo:
    name: str  # e.g. "classical-v1" or "retsam-small"
    version: str
    weights_hash: str  # sha256 of the weights file ("" for weights-free segmenters)
    resolution: int  # canvas side the segmenter expects
    provides: tuple[str, ...]  # targets with trained/validated output
    untrained: tuple[str, ...] = field(default=())  # heads that exist but were never trained (flagged, not emitted)


@runtime_checkable
class Segmenter(Protocol):
    info: SegmenterInfo

    def segment(self, images: np.ndarray, fovs: np.ndarray) -> list[dict[str, np.ndarray]]:
        """`images` (N, S, S, 3) uint8 RGB canvases, `fovs` (N, S, S) bool -> per image {target: (S, S) bool}.

        Only targets in `info.provides` appear. `fovea` is a small disc around the fovea centre.
        """
        ...


def load_segmenter(spec: str | None = None, device: str | None = None) -> Segmenter:
    """Build a segmenter from a spec: "classical", "default", or a path/URI of learned weights (.safetensors).

    "default" is the shipped learned model when its card says it beats the classical one, else classical.
    """
    from retsam_core.classical import ClassicalSegmenter

    if spec in (None, "", "default"):
        try:
            from retsam_core.model.loading import default_weights_path
        except ImportError:
            return ClassicalSegmenter()
        path = default_weights_path()
        if path is None:
            return ClassicalSegmenter()
        spec = str(path)
    if spec == "classical":
        return ClassicalSegmenter()
    from retsam_core.model.loading import LearnedSegmenter

    return LearnedSegmenter.from_uri(spec, device=device)
