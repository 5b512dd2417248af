"""The learned multi-task segmenter (RetSAM design): network, weights loading and the `Segmenter` wrapper."""

from retsam_core.model.network import SEG_CHANNELS, TASK_GROUPS, ModelConfig, RetSAMNet  # noqa: F401
