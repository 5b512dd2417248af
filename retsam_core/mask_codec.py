"""Compact, viewable mask storage: one 1-channel PNG (0/255) per target.

PNG keeps masks small (vessel maps compress ~20-50x), lossless, and readable by any tool.
"""

from __future__ import annotations

import cv2
import numpy as np


def encode_mask(mask: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.where(mask, 255, 0).astype(np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def decode_mask(data: bytes) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if arr is None:
        raise ValueError("mask PNG could not be decoded")
    return arr > 127


def encode_masks(masks: dict[str, np.ndarray]) -> dict[str, bytes]:
    return {name: encode_mask(m) for name, m in masks.items()}


def decode_masks(blobs: dict[str, bytes]) -> dict[str, np.ndarray]:
    return {name: decode_mask(b) for name, b in blobs.items() if b is not None}
