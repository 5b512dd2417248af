"""Readers for the public fundus datasets used to train and evaluate the learned segmenter.

Every reader yields `Sample(id, image, masks, annotated, ignore)` at the ORIGINAL resolution:
- `image`: (H, W, 3) uint8 RGB (decoded exactly as the pipeline decodes, see `load_image`),
- `masks`: {target: (H, W) bool} for each annotated target (absent lesion = all-False mask),
- `annotated`: the targets the dataset labels (the partial-label loss only sees these channels),
- `ignore`: {target: (H, W) bool} pixels to exclude from loss and metrics (e.g. HRF-AV "unknown" vessels for A/V).

Splits (documented in each reader and in docs/model_card.md):
- CHASE_DB1: train = children 01-10 (20 images), test = 11-14 (8), the usual "first 20 / last 8".
- HRF-AV: lwnet protocol, test = 01-05 of each group (15), train = 06-15 (30).
- DRISHTI-GS1: official 50 train / 51 test; masks = soft maps >= 128 (majority of 4 experts).
- IDRiD (segmentation part A): official 54 train / 27 test from split.csv; a missing mask file = absent lesion.
"""

from retsam_core.datasets.readers import (  # noqa: F401
    DATASETS,
    Sample,
    data_root,
    get_reader,
    label_to_canvas,
)
