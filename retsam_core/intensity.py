"""Per-image intensity standardisation inside the field of view, for models whose config asks for it.

Each colour channel's mean inside the FOV is moved to a fixed reference and the image's overall contrast (the
standard deviation around those means, pooled over channels) is scaled to a fixed reference, so a darker or
flatter camera reaches the network looking like the training cameras. Why: the disc decoder trained on IDRiD
alone fails on DRISHTI-GS1 (0.43 DSC), whose images are much darker; matching colour means and contrast to the
training set lifted it to 0.87 (docs/model_eval/known_gaps.md). Training applies it to every canvas at load and
`LearnedSegmenter` to every canvas it segments: one function, so both see the same pixels.
"""

from __future__ import annotations

import numpy as np

# Medians over the 154 training canvases of CHASE_DB1, HRF-AV, DRISHTI-GS1 and IDRiD (1024 px, inside the FOV).
REFERENCE_MEAN = (153.8, 61.3, 16.3)  # R, G, B
REFERENCE_CONTRAST = 22.5  # pooled standard deviation around the channel means
MIN_CONTRAST = 1.0  # a flat image is shifted, not amplified into noise


def standardise_intensity(image: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB canvas, (H, W) bool FOV -> uint8 canvas with the reference means and contrast inside
    the FOV and black outside it. An empty FOV returns the image unchanged."""
    fov = np.asarray(fov, bool)
    if not fov.any():
        return image
    x = image.astype(np.float32)
    inside = x[fov]
    mean = inside.mean(0)
    contrast = float(np.sqrt(((inside - mean) ** 2).mean()))
    gain = REFERENCE_CONTRAST / max(contrast, MIN_CONTRAST)
    out = (x - mean) * gain + np.asarray(REFERENCE_MEAN, np.float32)
    out[~fov] = 0.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
