"""Artery/vein labels are decided per centreline segment: a vessel does not flip class between junctions."""

from __future__ import annotations

import numpy as np

from retsam_core.model.av_voting import segment_votes


def _crossing():
    """A horizontal artery crossing a vertical vein, with per-pixel probabilities that flip in places."""
    h = np.zeros((120, 120), bool)
    h[57:63, 5:115] = True
    v = np.zeros((120, 120), bool)
    v[5:115, 57:63] = True
    pa = np.where(h, 0.8, 0.2).astype(np.float32)
    pv = np.where(v & ~h, 0.8, 0.2).astype(np.float32)
    pa[57:63, 20:30], pv[57:63, 20:30] = 0.3, 0.7  # a stretch of the artery looks like a vein
    pv[85:95, 57:63], pa[85:95, 57:63] = 0.35, 0.65  # a stretch of the vein looks like an artery
    return h, v, pa, pv


def test_votes_keep_each_vessel_one_class():
    h, v, pa, pv = _crossing()
    vessel = h | v
    artery, vein = segment_votes(vessel, pa, pv)
    assert not (artery & vein).any() and np.array_equal(artery | vein, vessel)  # a partition of the vessel map
    away = np.ones_like(vessel)
    away[50:70, 50:70] = False  # the crossing itself belongs to whichever segment is nearest
    assert artery[h & away].all(), "the flipped stretch of the artery is relabelled artery"
    assert vein[v & away].all(), "the flipped stretch of the vein is relabelled vein"
    # per-pixel exclusive labels would have kept both flips
    assert (pa[h & away] <= pv[h & away]).any() and (pa[v & away] > pv[v & away]).any()


def test_empty_and_tiny_maps():
    z = np.zeros((16, 16), bool)
    a, v = segment_votes(z, np.zeros((16, 16)), np.zeros((16, 16)))
    assert not a.any() and not v.any()
    dot = z.copy()
    dot[8, 8] = True
    a, v = segment_votes(dot, np.full((16, 16), 0.9), np.full((16, 16), 0.1))
    assert a[8, 8] and not v.any()
