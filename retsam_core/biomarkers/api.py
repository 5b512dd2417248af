"""Entry point: every biomarker family for one image, from masks on one pixel grid.

`compute_biomarkers` returns a value or None (with a reason) for every catalogue column, plus per-segment rows that
match `catalogue.segment_schema()`. A target absent from `masks`, or not in `provided`, is unknown (null + reason);
an empty mask of a provided target is a real "none found".
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Scale:
    mm_per_px: float | None  # on the grid of the masks handed to compute_biomarkers
    source: str  # "manifest", "fov_estimate", "disc_estimate", "none"


@dataclass
class BiomarkerResult:
    values: dict[str, Any]  # every catalogue column -> value or None
    reasons: dict[str, str] = field(default_factory=dict)  # column -> why it is null
    segments: list[dict[str, Any]] = field(default_factory=list)  # per vessel segment rows
    timings: dict[str, float] = field(default_factory=dict)  # CPU seconds per family (diagnostics, not stored)


def compute_biomarkers(
    masks: Mapping[str, np.ndarray],
    fov: np.ndarray,
    scale: Scale,
    image: np.ndarray | None = None,
    provided: Collection[str] | None = None,
    config: Any = None,
    laterality: str | None = None,
) -> BiomarkerResult:
    """`laterality` ("left"/"right", e.g. from a manifest) overrides the inferred one; `config` is a
    `context.Config` (defaults when None)."""
    from retsam_core.biomarkers.catalogue import CATALOGUE
    from retsam_core.biomarkers.context import Config, Context, Output
    from retsam_core.biomarkers.disc import compute_disc
    from retsam_core.biomarkers.layout import compute_layout, locate
    from retsam_core.biomarkers.lesions import compute_lesions, compute_phenotypes
    from retsam_core.biomarkers.quality import compute_quality
    from retsam_core.biomarkers.vessels import compute_vessels

    fov = np.asarray(fov).astype(bool)
    shape = fov.shape
    known: dict[str, np.ndarray] = {}
    for name, m in masks.items():
        if m is None or (provided is not None and name not in provided):
            continue
        m = np.asarray(m)
        if m.shape != shape:
            raise ValueError(f"mask {name!r} has shape {m.shape}, the field of view {shape}")
        known[name] = m.astype(bool)
    mm = scale.mm_per_px if scale.mm_per_px and np.isfinite(scale.mm_per_px) and scale.mm_per_px > 0 else None
    ctx = Context(shape=shape, fov=fov, masks=known, mm=mm, image=image, config=config or Config())
    out = Output()
    timings: dict[str, float] = {}
    t0 = time.process_time()
    out.set("scale_mm_per_px", mm, "no pixel size (scale unknown)")
    out.set("scale_source", scale.source)
    if laterality is not None and laterality not in ("left", "right"):
        raise ValueError(f"laterality must be 'left' or 'right', not {laterality!r}")
    locate(ctx, laterality)
    compute_layout(ctx, out)
    timings["layout"] = time.process_time() - t0
    rows = compute_vessels(ctx, out, timings)
    for fam, fn in (("disc", compute_disc), ("lesions", compute_lesions), ("phenotype", compute_phenotypes),
                    ("quality", compute_quality)):
        t0 = time.process_time()
        fn(ctx, out)
        timings[fam] = time.process_time() - t0
    values = {c.name: out.values.get(c.name) for c in CATALOGUE}
    reasons = {k: v for k, v in out.reasons.items() if values.get(k) is None}
    for k, v in values.items():
        if v is None and k not in reasons:
            reasons[k] = "not computed"
    return BiomarkerResult(values, reasons, rows, timings)
