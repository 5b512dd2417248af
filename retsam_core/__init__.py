"""RetSAM core: the science of the pipeline, importable without Ray.

Decode and preprocess one image, segment it (classical or learned), and turn masks into biomarkers.
"""

__version__ = "0.2.6"
