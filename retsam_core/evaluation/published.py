"""Published figures on the same test splits, printed beside ours for reference (never used to choose anything).

They are not like for like: each was trained on its dataset alone, most at the native resolution, and some report a
different metric (F1 equals DSC for binary masks; IDRiD's challenge ranked AUPR at full resolution, ours is on the
1024 px canvas). Every figure names its source. Where no per-class figure was found (HRF-AV artery/vein Dice) the
table says so instead of quoting a figure for another metric.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedFigure:
    dataset: str
    target: str
    metric: str  # "DSC", "F1" or "AUPR"
    value: float
    method: str
    source: str


PUBLISHED = (
    PublishedFigure("chase_db1", "vessel", "F1", 0.7783, "U-Net",
                    "Alom et al. 2018 (the R2U-Net paper), as tabulated by later CHASE_DB1 comparisons"),
    PublishedFigure("chase_db1", "vessel", "F1", 0.8073, "IterNet", "Li et al., IterNet, WACV 2020"),
    PublishedFigure("drishti_gs1", "optic_disc", "DSC", 0.975, "BGA-Net",
                    "Luo et al., joint optic disc and cup segmentation with a boundary prior and adversarial learning, "
                    "IJCARS 2021"),
    PublishedFigure("drishti_gs1", "optic_cup", "DSC", 0.898, "BGA-Net", "Luo et al., IJCARS 2021"),
    PublishedFigure("idrid", "microaneurysm", "AUPR", 0.5017, "iFLYTEK-MIG",
                    "IDRiD challenge leaderboard: Porwal et al., Medical Image Analysis 59 (2020), Table 8"),
    PublishedFigure("idrid", "hemorrhage", "AUPR", 0.6804, "VRT", "Porwal et al. 2020, Table 8"),
    PublishedFigure("idrid", "hard_exudate", "AUPR", 0.8850, "PATech", "Porwal et al. 2020, Table 8"),
    PublishedFigure("idrid", "soft_exudate", "AUPR", 0.6995, "VRT", "Porwal et al. 2020, Table 8"),
)

NOT_FOUND = {
    ("hrf_av", "artery and vein"): "no per-class DSC found (A/V papers report classification accuracy on vessel pixels, or one "
                          "multi-class F1: 0.717, BF-Net, Zhou et al.)",
}


def published_cell(dataset: str, target: str) -> str:
    """The table cell for one (dataset, target): every figure with its metric and method, or '' if none."""
    figs = [f for f in PUBLISHED if (f.dataset, f.target) == (dataset, target)]
    return "; ".join(f"{f.value:.3f} {f.metric} ({f.method})" for f in figs)


def sources_markdown() -> str:
    """A bullet list of the sources behind `published_cell`, for the model card and the README."""
    seen: dict[str, str] = {}
    for f in PUBLISHED:
        seen.setdefault(f.method, f.source)
    lines = [f"- {method}: {source}" for method, source in seen.items()]
    lines += [f"- {ds} {t}: {why}" for (ds, t), why in NOT_FOUND.items()]
    return "\n".join(lines) + "\n"
