"""Segmentation metrics and dataset evaluation (DSC, IoU, sensitivity, specificity, clDice, AUPR)."""

from retsam_core.evaluation.metrics import aupr, binary_metrics, cldice, dice  # noqa: F401
