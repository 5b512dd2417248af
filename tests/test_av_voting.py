"""Artery/vein labels are decided per centreline segment: a vessel does not flip class between junctions, and a
segment with a weak vote takes the class its junctions imply (bifurcation: the parent's; crossing: the arm it
continues, opposite to the vessel it crosses)."""

from __future__ import annotations

import cv2
import numpy as np

from retsam_core.model.av_voting import AVGraphConfig, segment_votes

ALONE = AVGraphConfig(coupling=0.0)  # each segment decided by its own vote


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


def _draw(shape, lines, thickness=5):
    m = np.zeros(shape, np.uint8)
    for p, q in lines:
        cv2.line(m, p, q, 1, thickness)
    return m.astype(bool)


def test_weak_branch_takes_its_parents_class_at_a_bifurcation():
    """A trunk splitting in two; one branch's own vote leans slightly to vein (a faint artery)."""
    S = 512
    trunk = _draw((S, S), [((256, 480), (256, 260))])
    strong = _draw((S, S), [((256, 260), (120, 60))])
    weak = _draw((S, S), [((256, 260), (330, 190))])
    vessel = trunk | strong | weak
    pa = np.where(trunk | strong, 0.8, 0.45).astype(np.float32)
    pv = np.where(trunk | strong, 0.2, 0.55).astype(np.float32)
    tip = np.zeros_like(vessel)
    tip[190:215, 305:335] = True  # the far end of the weak branch, away from the junction
    artery, vein = segment_votes(vessel, pa, pv)
    assert not (artery & vein).any() and np.array_equal(artery | vein, vessel)
    assert artery[weak & tip].all(), "the weak branch joins the artery it branches from"
    a0, v0 = segment_votes(vessel, pa, pv, ALONE)
    assert v0[weak & tip].all(), "on its own vote the branch would be a vein"


def _artery_crossing_a_vein(S, thickness):
    """An artery crosses a vein (drawn for 512 px, scaled to S); the lower arm of the vein looks slightly arterial
    on its own. Returns the three vessels and p_artery (p_vein = 1 - p_artery)."""
    k = S / 512

    def line(p, q):
        return _draw((S, S), [(tuple(round(v * k) for v in p), tuple(round(v * k) for v in q))], thickness)

    art, vein_up, vein_down = line((40, 250), (470, 270)), line((250, 30), (258, 260)), line((258, 260), (266, 480))
    pa = np.where(art, 0.8, np.where(vein_up, 0.2, 0.53)).astype(np.float32)
    return art, vein_up, vein_down, pa


def test_crossing_keeps_a_vein_arm_a_vein_and_opposite_to_the_artery():
    S = 512
    art, vein_up, vein_down, pa = _artery_crossing_a_vein(S, 5)
    vessel = art | vein_up | vein_down
    far = np.zeros_like(vessel)
    far[380:, :] = True
    artery, vein = segment_votes(vessel, pa, 1 - pa)
    assert vein[vein_down & far].all(), "the lower arm continues the vein across the crossing"
    assert artery[art & ~_draw((S, S), [((258, 200), (258, 320))], 60)].all()
    a0, v0 = segment_votes(vessel, pa, 1 - pa, ALONE)
    assert a0[vein_down & far].all(), "on its own vote the lower arm would be an artery"


def test_crossing_on_a_smaller_canvas():
    """Distances are per 1024 px canvas and scale with the side: the crossing still resolves at 256 px."""
    S = 256
    art, vein_up, vein_down, pa = _artery_crossing_a_vein(S, 3)
    artery, vein = segment_votes(art | vein_up | vein_down, pa, 1 - pa)
    assert vein[vein_down & (np.arange(S)[:, None] > 190)].all()


def test_nearest_centreline_on_a_real_vessel_map(shared_data):
    """Every vessel pixel takes the segment of a centreline pixel at the exact nearest distance (a tie may go either
    way; OpenCV's 5x5 mask may pick one at most half a pixel farther), centreline pixels keep their own segment, and
    the answer is the same with any OpenCV thread count. HRF-AV's expert map of 01_dr at 1536 x 1024."""
    from scipy import ndimage

    from retsam_core.biomarkers.skeleton import build_graph
    from retsam_core.model.av_voting import centrelines, nearest_label
    from tests.real_maps import at_each_cv2_thread_count, hrf_expert_vessel

    vessel = hrf_expert_vessel(shared_data)
    label = np.zeros(vessel.shape, np.int32)
    for i, rc in enumerate(centrelines(build_graph(vessel))):
        label[rc[:, 0], rc[:, 1]] = i + 1
    assert label.max() > 100
    answers = [a for _, a in at_each_cv2_thread_count(lambda: nearest_label(label))]
    got = answers[0]
    assert all(np.array_equal(a, got) for a in answers[1:])
    assert np.array_equal(got[label > 0], label[label > 0])
    exact, (iy, ix) = ndimage.distance_transform_edt(label == 0, return_indices=True)
    rr, cc = np.nonzero(vessel & (got != label[iy, ix]))
    assert len(rr) < 0.01 * vessel.sum()  # only near-ties are decided differently from the exact transform
    for segment in np.unique(got[rr, cc]):  # ...and each of them is (almost) as near to the segment it got
        pr, pc = np.nonzero(label == segment)
        sel = got[rr, cc] == segment
        nearest = np.hypot(pr[None] - rr[sel, None], pc[None] - cc[sel, None]).min(axis=1)
        assert (nearest <= exact[rr[sel], cc[sel]] + 0.51).all()
