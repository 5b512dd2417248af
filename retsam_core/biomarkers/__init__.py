"""Biomarkers from masks (contract; the full catalogue is built in the modules of this package).

Public API used by the pipeline, the CLI and the tests:
- `Scale(mm_per_px, source)`: pixel size of the masks' grid, and how it was obtained.
- `compute_biomarkers(masks, fov, scale, image=None, provided=None) -> BiomarkerResult`
- `catalogue.CATALOGUE`, `catalogue.image_schema()`, `catalogue.segment_schema()`.
"""

from retsam_core.biomarkers.api import BiomarkerResult, Scale, compute_biomarkers

__all__ = ["BiomarkerResult", "Scale", "compute_biomarkers"]
