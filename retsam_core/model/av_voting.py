"""Artery or vein per vessel segment, not per pixel.

A vessel is an artery or a vein along its whole length between two junctions, but per-pixel probabilities flip
along it (central reflex, crossings, low contrast), which breaks a vessel into short alternating pieces: calibre
summaries (CRAE/CRVE) then find too few long vessels of each class in zone B. Here the vessel map is skeletonized,
cut at branch and crossing points into segments, each segment takes the class its pixels vote for (mean of
p_artery - p_vein along the centreline), and every vessel pixel takes the class of its nearest segment.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize


def segment_votes(vessel: np.ndarray, p_artery: np.ndarray, p_vein: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`vessel` (H, W) bool, probabilities (H, W) -> (artery, vein) bool masks that partition `vessel`."""
    vessel = np.asarray(vessel, bool)
    if not vessel.any():
        return vessel.copy(), vessel.copy()
    margin = p_artery.astype(np.float32) - p_vein.astype(np.float32)
    skel = skeletonize(vessel)
    neighbours = cv2.filter2D(skel.astype(np.uint8), -1, np.ones((3, 3), np.float32), borderType=cv2.BORDER_CONSTANT)
    junction = skel & (neighbours >= 4)  # the pixel itself + 3 or more skeleton neighbours
    cut = skel & ~cv2.dilate(junction.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    n, labels = cv2.connectedComponents(cut.astype(np.uint8), connectivity=8)
    if n <= 1:  # no centreline left (tiny blobs): fall back to the pixel's own vote
        return vessel & (margin > 0), vessel & (margin <= 0)
    votes = np.bincount(labels[cut], weights=margin[cut], minlength=n)  # sum of margins per segment
    is_artery = votes > 0
    # every vessel pixel joins its nearest centreline segment
    _, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    nearest = labels[iy, ix]
    artery = vessel & is_artery[nearest]
    return artery, vessel & ~artery
