"""The one target vocabulary shared by the model card, the masks, `retsam segment` and the biomarker catalogue.

Never rename a target: stored masks and downstream queries key on these strings.
"""

from __future__ import annotations

ANATOMY_TARGETS: tuple[str, ...] = ("vessel", "artery", "vein", "optic_disc", "optic_cup", "fovea")
LESION_TARGETS: tuple[str, ...] = ("microaneurysm", "hemorrhage", "hard_exudate", "soft_exudate", "drusen")
PHENOTYPE_TARGETS: tuple[str, ...] = (
    "tessellation",
    "peripapillary_atrophy",
    "diffuse_atrophy",
    "patchy_atrophy",
)
TARGETS: tuple[str, ...] = ANATOMY_TARGETS + LESION_TARGETS + PHENOTYPE_TARGETS


def check_target(name: str) -> str:
    """Return `name` if it is a known target; raise with the vocabulary otherwise."""
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; known targets: {', '.join(TARGETS)}")
    return name
