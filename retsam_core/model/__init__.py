"""The learned multi-task segmenter (RetSAM design): network, weights loading and the `Segmenter` wrapper.

The network's names load lazily: the A/V vote (`av_voting`, `av_features`) runs on the pipeline's CPU actors, which
should not import torch for it."""

_NETWORK_NAMES = {"SEG_CHANNELS", "TASK_GROUPS", "ModelConfig", "RetSAMNet"}


def __getattr__(name: str):
    if name in _NETWORK_NAMES:
        from retsam_core.model import network

        return getattr(network, name)
    raise AttributeError(f"module 'retsam_core.model' has no attribute {name!r}")
