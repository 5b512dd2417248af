"""Biomarkers from masks.

Public API used by the pipeline, the CLI and the tests:
- `Scale(mm_per_px, source)`: pixel size of the masks' grid, and how it was obtained.
- `compute_biomarkers(masks, fov, scale, image=None, provided=None) -> BiomarkerResult`
- `catalogue.CATALOGUE`, `catalogue.image_schema()`, `catalogue.segment_schema()`.
- `scale.estimate_scale(...)`, `mask_files.find_mask_sets / quantify_mask_set` (bring your own masks).
"""

from retsam_core.biomarkers.api import BiomarkerResult, Scale, compute_biomarkers

__all__ = ["BiomarkerResult", "Scale", "compute_biomarkers"]
