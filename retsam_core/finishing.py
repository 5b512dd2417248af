"""The host-side last step of segmentation, after the network: why it is separate, and what it does.

A learned segmenter's masks are finished on the host: arteries and veins are separated per centreline segment (a
skeleton graph, about 0.3 s per image on one CPU thread), lesion specks are dropped, one disc is kept, and the
default segmenter locates the fovea with the classical locator. None of that needs the GPU, and on a GPU actor it
would bound the throughput (the network itself runs at hundreds of images per second). So the pipeline runs
`segment_pending` on its GPU actors and the `Finisher` on its CPU actors (`pipeline.stages`), while `segment()`
runs both in turn: a library call and a cohort run give the same masks. A `Finisher` is plain data (its dict
travels to the CPU actors) and needs no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from retsam_core.biomarkers.layout import drop_specks, largest_component

EVIDENCE = ("p_artery", "p_vein")  # uint8 maps (probability x 255) on the vessel union, read by the A/V vote


@dataclass
class PendingMasks:
    """A segmenter's output before finishing: thresholded masks (artery and vein overlapping, not yet separated)
    and the `evidence` maps the finishing step reads."""

    masks: dict[str, np.ndarray]
    evidence: dict[str, np.ndarray] = field(default_factory=dict)


def evidence_support(masks: dict[str, np.ndarray]) -> np.ndarray | None:
    """The pixels the `EVIDENCE` maps live on: the union of the thresholded artery and vein maps, before the vote
    splits it. The segmentation actor sends the evidence on it and the CPU actor rebuilds the maps from it, so both
    sides must compute it the same way: here."""
    if "artery" in masks and "vein" in masks:
        return masks["artery"] | masks["vein"]
    return None


def quantise(p, support):
    """Probabilities -> uint8 (x 255, rounded half to even), zero off `support`: the A/V vote reads them on
    centrelines only, so only the support's values need travel to the CPU actors (`mask_codec.encode_on_support`).
    `p` and `support` are numpy arrays or torch tensors (the segmentation actor quantises where the network ran, so
    one byte per pixel crosses the bus); the same float32 steps either way, so the bytes are the same (tested)."""
    q = p.clip(0.0, 1.0)  # a copy; the steps below work in place on it
    q *= 255.0
    q = q.round()
    q *= support
    return q.astype(np.uint8) if isinstance(q, np.ndarray) else q.byte()


@dataclass(frozen=True)
class Finisher:
    """What a segmenter does on the host after its network, from its card (and, for the default segmenter, its
    per-target choice of sources)."""

    av_classifier: dict | None = None  # card["av_segment_classifier"]["classifier"]; None: the network margin votes
    postprocess: dict = field(default_factory=dict)  # card["postprocess"]: specks, largest component, cup in disc
    classical_targets: tuple[str, ...] = ()  # default segmenter: targets the classical segmenter supplies
    cup_inside_disc: bool = False  # default segmenter: the cup is cut to the disc whatever the card says

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Finisher":
        return cls(av_classifier=d.get("av_classifier"), postprocess=dict(d.get("postprocess") or {}),
                   classical_targets=tuple(d.get("classical_targets") or ()),
                   cup_inside_disc=bool(d.get("cup_inside_disc", False)))

    def __call__(self, pending: PendingMasks, image: np.ndarray, fov: np.ndarray) -> dict[str, np.ndarray]:
        """`image` (S, S, 3) uint8 canvas and `fov` (S, S) bool of the image `pending` came from -> final masks."""
        masks = dict(pending.masks)
        if all(k in pending.evidence for k in EVIDENCE) and "artery" in masks and "vein" in masks:
            self._separate_artery_vein(masks, pending.evidence, image, fov)
        apply_postprocess(masks, self.postprocess)
        if self.classical_targets:
            from retsam_core.classical import classical_targets

            masks.update(classical_targets(image, fov, self.classical_targets, disc=masks.get("optic_disc")))
        if self.cup_inside_disc and "optic_cup" in masks and "optic_disc" in masks:
            masks["optic_cup"] = masks["optic_cup"] & masks["optic_disc"]
        return masks

    def _separate_artery_vein(self, masks: dict[str, np.ndarray], evidence: dict[str, np.ndarray],
                              image: np.ndarray, fov: np.ndarray) -> None:
        """A vessel pixel is an artery or a vein, not both, and a vessel keeps its class between junctions: the
        union of the two thresholded maps is split per centreline segment, with bifurcations and crossings as
        evidence (`av_voting.segment_votes`), each segment voting by the card's A/V segment classifier if it has one."""
        from retsam_core.model.av_features import AVSegmentClassifier
        from retsam_core.model.av_voting import segment_votes  # skan, only here

        classifier = AVSegmentClassifier.from_dict(self.av_classifier) if self.av_classifier else None
        pa, pv = (evidence[k].astype(np.float32) / 255.0 for k in EVIDENCE)
        masks["artery"], masks["vein"] = segment_votes(evidence_support(masks), pa, pv,
                                                       classifier=classifier, image=image, fov=fov)


def apply_postprocess(masks: dict[str, np.ndarray], pp: dict) -> None:
    """Priors from the card: smallest kept lesion component, one optic disc (largest component), cup inside
    the disc."""
    for t, area in pp.get("min_component_px", {}).items():  # lesion specks below the chosen operating point
        if t in masks:
            masks[t] = drop_specks(masks[t], int(area))
    for t in pp.get("largest_component", []):
        if t in masks and masks[t].any():
            masks[t] = largest_component(masks[t])
    if pp.get("cup_inside_disc") and "optic_cup" in masks and "optic_disc" in masks:
        masks["optic_cup"] = masks["optic_cup"] & masks["optic_disc"]


def finish_all(finisher: Finisher, pending: list[PendingMasks], images: np.ndarray, fovs: np.ndarray) -> list[dict]:
    """`segment()` for a segmenter with a finishing step: its pending masks, finished image by image."""
    return [finisher(p, np.asarray(img), np.asarray(fov, bool)) for p, img, fov in zip(pending, images, fovs)]
