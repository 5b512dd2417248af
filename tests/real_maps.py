"""Real expert maps and OpenCV thread counts, for tests that pin a transform's output on real vessels: a result
that depends on OpenCV's thread count shows up as two pipeline runs of the same image disagreeing."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

import cv2
import numpy as np
import pytest

T = TypeVar("T")


def hrf_expert_vessel(shared_data: Path, stem: str = "01_dr", size: tuple[int, int] = (1536, 1024)) -> np.ndarray:
    """HRF-AV's expert vessel map (artery, vein and unknown together) of `stem` at `size` (width, height); skips the
    test when HRF-AV is not in the shared data."""
    if not (shared_data / "HRF-AV").is_dir():
        pytest.skip("HRF-AV not in the shared data")
    av = cv2.imread(str(shared_data / "HRF-AV" / "masks" / "av" / f"{stem}_AVmanual.png"), cv2.IMREAD_COLOR)
    return cv2.resize((av.max(axis=2) > 127).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0


def at_each_cv2_thread_count(fn: Callable[[], T]) -> list[tuple[int, T]]:
    """[(threads, fn())] with OpenCV on 1, 2 and its default number of threads; the default is restored after."""
    threads = cv2.getNumThreads()
    try:
        out = []
        for n in (1, 2, threads):
            cv2.setNumThreads(n)
            out.append((n, fn()))
        return out
    finally:
        cv2.setNumThreads(threads)
