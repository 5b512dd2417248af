"""Artery or vein per vessel segment, not per pixel, with the junctions between segments as evidence.

A vessel is an artery or a vein along its whole length between two junctions, but per-pixel probabilities flip
along it (central reflex, crossings, low contrast), which breaks a vessel into short alternating pieces: calibre
summaries (CRAE/CRVE) then find too few long vessels of each class in zone B. So the vessel map is traced into
centreline segments (`biomarkers.skeleton.build_graph`: junction clusters merged, spurs pruned), and each segment
votes with the sum of p_artery - p_vein along its centreline.

A short or faint segment's own vote is weak; its neighbours are evidence too. At a bifurcation every arm has the
parent's class; at a crossing the arms that continue each other in direction are one vessel, and the two vessels
that cross are an artery and a vein (retinal arteries cross veins, not arteries). Those couplings and the votes
are combined by mean-field iteration on the segment graph. Every vessel pixel then takes the class of its
nearest centreline. `AVGraphConfig` was chosen on the HRF-AV training images (docs/model_eval/known_gaps.md).

With a fitted `av_features.AVSegmentClassifier` (in the weights' card) a segment votes with its log-odds from the
margin, colour, contrast and calibre instead of the margin alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from retsam_core.biomarkers.skeleton import VesselGraph, build_graph, node_positions
from retsam_core.model.av_features import AVSegmentClassifier, segment_features


@dataclass(frozen=True)
class AVGraphConfig:
    """Distances are in pixels of a 1024 px canvas and scale with the canvas side."""

    coupling: float = 0.5  # junction coupling per centreline pixel of the shorter arm (0: each segment alone)
    crossing_opposition: float = 0.5  # weight of "the other class" between the two vessels of a crossing
    continuation_cos: float = -0.5  # arms whose outward directions have a cosine below this continue each other
    arm_radius_px: float = 10.0  # centreline within this distance of a junction gives an arm's direction
    bridge_px: float = 12.0  # junctions joined by a segment this short are one crossing seen as two bifurcations
    beta: float = 0.05  # mean-field inverse temperature, per unit of vote (margin x pixels)
    iterations: int = 30


def segment_votes(vessel: np.ndarray, p_artery: np.ndarray, p_vein: np.ndarray,
                  cfg: AVGraphConfig = AVGraphConfig(), *, classifier: AVSegmentClassifier | None = None,
                  image: np.ndarray | None = None, fov: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`vessel` (H, W) bool, probabilities (H, W) -> (artery, vein) bool masks that partition `vessel`. A
    `classifier` needs the canvas `image` (H, W, 3) uint8 and its `fov`."""
    vessel = np.asarray(vessel, bool)
    margin = np.asarray(p_artery, np.float32) - np.asarray(p_vein, np.float32)
    if not vessel.any():
        return vessel.copy(), vessel.copy()
    g = build_graph(vessel)
    if not g.paths:  # no centreline (tiny blobs): each pixel votes for itself
        return vessel & (margin > 0), vessel & (margin <= 0)
    pix = centrelines(g)
    if classifier is not None:
        if image is None or fov is None:
            raise ValueError("an A/V segment classifier needs the canvas image and its FOV")
        features = segment_features(image, np.asarray(fov, bool), vessel, p_artery, p_vein, pix, g.width)
        votes = classifier.votes(features, np.array([len(r) for r in pix], np.float64))
    else:
        votes = margin_votes(margin, pix)
    return label_segments(g, pix, votes, cfg)


def centrelines(g: VesselGraph) -> list[np.ndarray]:
    """Each segment's centreline as integer (row, col) pixels."""
    return [np.rint(p).astype(np.int64) for p in g.paths]


def margin_votes(margin: np.ndarray, pix: list[np.ndarray]) -> np.ndarray:
    """Each segment's vote from the network alone: the sum of p_artery - p_vein (`margin`) along its centreline."""
    return np.array([margin[r[:, 0], r[:, 1]].sum() for r in pix], np.float64)


def label_segments(g: VesselGraph, pix: list[np.ndarray], votes: np.ndarray,
                   cfg: AVGraphConfig = AVGraphConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Per-segment `votes` (> 0: artery) + junction couplings -> (artery, vein) masks partitioning `g.mask`: each
    vessel pixel takes the class of its nearest centreline."""
    vessel = g.mask
    lengths = np.array([len(r) for r in pix], np.float64)
    scale = vessel.shape[0] / 1024
    cfg = replace(cfg, arm_radius_px=cfg.arm_radius_px * scale, bridge_px=cfg.bridge_px * scale)
    couplings = junction_couplings(g.paths, g.ends, g.node_rc, g.node_degree, lengths, cfg) if cfg.coupling > 0 else {}
    is_artery = mean_field(np.asarray(votes, np.float64), couplings, cfg) > 0
    label = np.zeros(vessel.shape, np.int32)  # 1 + segment index on the centreline
    for i in np.argsort(lengths):  # at shared junction pixels the longer segment wins
        label[pix[i][:, 0], pix[i][:, 1]] = i + 1
    nearest = nearest_label(label) - 1
    artery = vessel & is_artery[nearest]
    return artery, vessel & ~artery


def nearest_label(label: np.ndarray) -> np.ndarray:
    """Every pixel -> the label of its nearest labelled (> 0) pixel; needs at least one. OpenCV's labelled distance
    transform (5x5 mask), not scipy's exact feature transform: 15 against 83 ms on a 1024 px canvas, which saves
    about a tenth of a quantify actor's time per image. On the 73 CHASE_DB1 and HRF-AV expert vessel maps they give
    0.28 % of vessel pixels another segment, 98 % of those equidistant from both (a tie broken the other way), the
    rest at most 0.5 px farther."""
    free = (label == 0).astype(np.uint8)
    _, owner = cv2.distanceTransformWithLabels(free, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    rows, cols = np.nonzero(label)
    lut = np.zeros(int(owner.max()) + 1, label.dtype)
    lut[owner[rows, cols]] = label[rows, cols]  # OpenCV numbers each labelled pixel; map back to its label
    return lut[owner]


def junction_couplings(paths: list[np.ndarray], ends: np.ndarray, node_rc: np.ndarray, node_degree: np.ndarray,
                       lengths: np.ndarray, cfg: AVGraphConfig) -> dict[tuple[int, int], float]:
    """{(i, j): weight}: > 0 when segments i and j should share a class, < 0 when they should differ."""
    # a crossing seen as two close bifurcations: junctions joined by a short segment become one node
    bridge = (lengths <= cfg.bridge_px) & (node_degree[ends[:, 0]] >= 3) & (node_degree[ends[:, 1]] >= 3)
    n_nodes = len(node_degree)
    links = sparse.coo_matrix((np.ones(int(bridge.sum())), (ends[bridge, 0], ends[bridge, 1])), shape=(n_nodes, n_nodes))
    _, node = connected_components(links, directed=False)
    arms: dict[int, list[tuple[int, int]]] = {}  # node -> [(segment, which end)]
    for i in np.flatnonzero(~bridge):
        for end in (0, 1):
            arms.setdefault(int(node[ends[i, end]]), []).append((int(i), end))
    centre = node_positions(node_rc, node)
    out: dict[tuple[int, int], float] = {}

    def couple(i: int, j: int, w: float) -> None:
        if i != j:
            key = (min(i, j), max(i, j))
            out[key] = out.get(key, 0.0) + w * cfg.coupling * min(lengths[i], lengths[j])

    for n, inc in arms.items():
        segs = sorted({i for i, _ in inc})
        if len(segs) in (2, 3):  # a path through, or a bifurcation: one class
            for k, i in enumerate(segs):
                for j in segs[k + 1:]:
                    couple(i, j, 1.0)
        elif len(segs) >= 4:  # a crossing: pair the arms that continue each other
            d = {i: _arm_direction(paths[i], end, centre[n], cfg.arm_radius_px) for i, end in inc}
            cands = sorted((float(d[i] @ d[j]), i, j) for k, i in enumerate(segs) for j in segs[k + 1:])
            vessels, used = [], set()
            for cos, i, j in cands:
                if cos < cfg.continuation_cos and not {i, j} & used:
                    used |= {i, j}
                    vessels.append((i, j))
                    couple(i, j, 1.0)
            for k, v1 in enumerate(vessels):
                for v2 in vessels[k + 1:]:
                    for i in v1:
                        for j in v2:
                            couple(i, j, -cfg.crossing_opposition)
    return out


def mean_field(votes: np.ndarray, couplings: dict[tuple[int, int], float], cfg: AVGraphConfig) -> np.ndarray:
    """Local field per segment (> 0: artery) after mean-field iteration of votes + couplings."""
    field = votes.copy()
    if not couplings:
        return field
    pairs = np.array(list(couplings), np.int64)
    w = np.array(list(couplings.values()))
    m = np.tanh(cfg.beta * votes)
    for _ in range(cfg.iterations):
        field = votes.copy()
        np.add.at(field, pairs[:, 0], w * m[pairs[:, 1]])
        np.add.at(field, pairs[:, 1], w * m[pairs[:, 0]])
        m = np.tanh(cfg.beta * field)
    return field


def _arm_direction(path: np.ndarray, end: int, centre: np.ndarray, radius: float) -> np.ndarray:
    """Unit vector from a junction towards an arm, from the arm's centreline points near that junction."""
    pts = path if end == 0 else path[::-1]
    d = np.hypot(*(pts - centre).T)
    near = pts[d <= radius] if (d <= radius).any() else pts[: min(len(pts), 3)]
    v = near.mean(0) - centre
    return v / (np.linalg.norm(v) + 1e-9)
