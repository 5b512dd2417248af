"""The default segmenter: each target from whichever segmenter measured better on held-out data.

The shipped learned model and the classical one each win somewhere (learned: vessels; classical: optic disc,
fovea). The choice is read from the model card's test metrics, so a retrained model
changes the mix without code changes. A learned channel whose test DSC is below `MIN_RELEASE_DSC` is withheld
(flagged, never emitted): an empty or random lesion map would read as "no lesions", a false measurement. So is
a lesion head that fires on healthy eyes (`metrics.healthy_false_positives` in the card).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from statistics import mean

import numpy as np

from retsam_core.classical import ClassicalSegmenter
from retsam_core.finishing import Finisher, PendingMasks, finish_all
from retsam_core.segmenter import Segmenter, SegmenterInfo
from retsam_core.targets import TARGETS

MIN_RELEASE_DSC = 0.30
MAX_HEALTHY_FALSE_LESIONS = 1.0  # mean predicted lesion components per healthy test eye
MIN_AVR_AGREEMENT_R = 0.5  # Pearson r of Knudtson AVR from the model's A/V map vs the expert map (HRF-AV test)
MIN_AVR_COVERAGE = 2 / 3  # ... over at least this share of the test images (AVR null elsewhere)


@dataclass(frozen=True)
class TargetChoice:
    source: str  # "learned", "classical" or "withheld"
    reason: str


def _mean_dsc(per_dataset: dict, target: str) -> float | None:
    """Mean test DSC over datasets; for lesions over the images that have the lesion (`dsc_present`), since
    lesion-free images score 1.0 for an empty prediction and would hide a head that never fires."""
    values = [
        m[target].get("dsc_present", m[target]["dsc"]) for m in per_dataset.values() if isinstance(m, dict) and target in m
    ]
    return float(mean(values)) if values else None


def _shared_datasets_mean(learned: dict, classical: dict, target: str) -> tuple[float, float] | None:
    """Mean DSC of both segmenters over the test sets where both were scored on `target`."""
    pairs = [
        (learned[d][target]["dsc"], classical[d][target]["dsc"])
        for d in learned
        if target in learned.get(d, {}) and target in classical.get(d, {})
    ]
    if not pairs:
        return None
    return float(mean(p[0] for p in pairs)), float(mean(p[1] for p in pairs))


def choose_sources(card: dict, learned_targets: tuple[str, ...], classical_targets: tuple[str, ...]) -> dict[str, TargetChoice]:
    """Per target, which segmenter supplies it, with the evidence from the card."""
    metrics = card.get("metrics", {})
    learned = metrics.get("learned", {})
    classical = metrics.get("classical_baseline", {})
    choice: dict[str, TargetChoice] = {}
    for t in TARGETS:
        in_l, in_c = t in learned_targets, t in classical_targets
        if in_l and in_c:
            both = _shared_datasets_mean(learned, classical, t)
            if both is None:
                choice[t] = TargetChoice("classical", "no shared test set in the card; classical is the baseline")
            elif both[0] > both[1]:
                choice[t] = TargetChoice("learned", f"test DSC {both[0]:.3f} vs classical {both[1]:.3f}")
            else:
                choice[t] = TargetChoice("classical", f"test DSC {both[1]:.3f} vs learned {both[0]:.3f}")
        elif in_l:
            dsc = _mean_dsc(learned, t)
            if dsc is None:
                choice[t] = TargetChoice("withheld", "no test metric in the model card")
            elif dsc < MIN_RELEASE_DSC:
                choice[t] = TargetChoice("withheld", f"test DSC {dsc:.3f} below the release bar {MIN_RELEASE_DSC}")
            elif (fp := _healthy_false_lesions(metrics, t)) is not None and fp > MAX_HEALTHY_FALSE_LESIONS:
                choice[t] = TargetChoice(
                    "withheld", f"{fp:.1f} false lesions per healthy test eye (bar {MAX_HEALTHY_FALSE_LESIONS})"
                )
            else:
                choice[t] = TargetChoice("learned", f"test DSC {dsc:.3f}")
        elif in_c:
            choice[t] = TargetChoice("classical", "only the classical segmenter provides it")
    _release_artery_vein_together(choice)
    _artery_vein_need_calibre_agreement(choice, metrics.get("av_calibre"))
    _cup_follows_disc(choice)
    return choice


def _healthy_false_lesions(metrics: dict, target: str) -> float | None:
    per_target = metrics.get("healthy_false_positives", {}).get("per_target", {})
    return per_target[target]["mean_components"] if target in per_target else None


def _cup_follows_disc(choice: dict[str, TargetChoice]) -> None:
    """A cup-to-disc ratio needs cup and disc outlined by the same model: the learned cup head was trained on
    disc-centred crops together with the learned disc, and is not validated against the classical disc."""
    cup, disc = choice.get("optic_cup"), choice.get("optic_disc")
    if cup is not None and disc is not None and cup.source == "learned" and disc.source != "learned":
        choice["optic_cup"] = TargetChoice("withheld", f"learned cup released only with the learned disc (disc is {disc.source})")


def _artery_vein_need_calibre_agreement(choice: dict[str, TargetChoice], evidence: dict | None) -> None:
    """A/V maps exist to measure CRAE, CRVE and AVR: pixel DSC can look fair while the labels flip along a vessel
    and the calibre summaries disagree with the expert's. Release A/V only where the card shows the AVR from the
    model's map tracks the AVR from the expert map (`benchmarks/bench_av_calibre.py --card`)."""
    if not any(choice.get(t) and choice[t].source == "learned" for t in ("artery", "vein")):
        return
    avr = (evidence or {}).get("avr_knudtson_zone_b") or {}
    images = (evidence or {}).get("images") or 0
    if not avr or not images:
        why = "no AVR agreement check in the model card (benchmarks/bench_av_calibre.py --card)"
    elif avr["both"] / images < MIN_AVR_COVERAGE or avr["pearson_r"] < MIN_AVR_AGREEMENT_R:
        why = (f"AVR vs the expert A/V map: r = {avr['pearson_r']:.2f} on {avr['both']} of {images} test images "
               f"(bar: r >= {MIN_AVR_AGREEMENT_R} on >= {MIN_AVR_COVERAGE:.0%})")
    else:
        return
    for t in ("artery", "vein"):
        if t in choice:
            choice[t] = TargetChoice("withheld", why)


def _release_artery_vein_together(choice: dict[str, TargetChoice]) -> None:
    """Arteries and veins are one classification: a vein map without a working artery map is just the vessel map,
    and CRVE/AVR from it would be wrong. Withhold both when either is withheld."""
    av = [choice.get(t) for t in ("artery", "vein")]
    if all(c is not None for c in av) and any(c.source == "withheld" for c in av):
        weak = next(t for t in ("artery", "vein") if choice[t].source == "withheld")
        for t in ("artery", "vein"):
            if choice[t].source != "withheld":
                choice[t] = TargetChoice("withheld", f"released only with {weak}, which is withheld")


class HybridSegmenter:
    """Learned and classical segmenters combined per target, as `choose_sources` decides."""

    def __init__(self, learned: Segmenter, card: dict):
        self.learned = learned
        # the classical targets are computed by the finisher (`classical.classical_targets`, default configuration)
        self.choices = choose_sources(card, learned.info.provides, ClassicalSegmenter().info.provides)
        provides = tuple(t for t in TARGETS if self.choices.get(t, TargetChoice("withheld", "")).source != "withheld")
        self._from_learned = {t for t in provides if self.choices[t].source == "learned"}
        self._from_classical = {t for t in provides if self.choices[t].source == "classical"}
        if hasattr(learned, "restrict_to"):  # skip decoders and post-processing for targets taken elsewhere
            learned.restrict_to(self._from_learned)
        li = learned.info
        self.info = SegmenterInfo(
            name=f"{li.name}+classical",
            version=li.version,
            weights_hash=li.weights_hash,
            resolution=li.resolution,
            provides=provides,
            untrained=tuple(t for t in TARGETS if t not in provides),
            px_per_degree=li.px_per_degree,
        )

    @property
    def keep_probabilities(self) -> bool:
        """Evaluation asks for the soft maps (AUPR); they are the learned part's."""
        return bool(getattr(self.learned, "keep_probabilities", False))

    @keep_probabilities.setter
    def keep_probabilities(self, on: bool) -> None:
        if hasattr(self.learned, "keep_probabilities"):
            self.learned.keep_probabilities = on

    def kept_probabilities(self, target: str) -> np.ndarray | None:
        """The learned probabilities of `target` from the latest call, only where the mask is the learned one: a
        classical mask has no probabilities, and the learned head's would score another mask."""
        if target not in self._from_learned or not hasattr(self.learned, "kept_probabilities"):
            return None
        return self.learned.kept_probabilities(target)

    def finisher(self) -> Finisher:
        """The learned part's host step, then the classical targets (on the host too: no network), then the cup cut
        to the disc."""
        learned = self.learned.finisher() if hasattr(self.learned, "finisher") else Finisher()
        return replace(learned, classical_targets=tuple(t for t in TARGETS if t in self._from_classical),
                       cup_inside_disc=True)

    def segment_pending(self, images: np.ndarray, fovs: np.ndarray) -> list[PendingMasks]:
        """The learned targets, unfinished; the classical ones are left to `finisher()`."""
        if not self._from_learned:
            return [PendingMasks({}) for _ in images]
        return [PendingMasks({t: m for t, m in p.masks.items() if t in self._from_learned}, p.evidence)
                for p in self.learned.segment_pending(images, fovs)]

    def segment(self, images: np.ndarray, fovs: np.ndarray) -> list[dict[str, np.ndarray]]:
        return finish_all(self.finisher(), self.segment_pending(images, fovs), images, fovs)
