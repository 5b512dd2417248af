"""Pipeline configuration: one dataclass, loaded from YAML/JSON and overridden from the command line."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retsam_core.preprocess import DEFAULT_FIELD_ANGLE_DEG


@dataclass
class PipelineConfig:
    # Science
    canvas_size: int = 1024  # model canvas side (px), unless the model fixes its px per degree; masks stored at the side used
    # "default", "learned", "classical", or a path/URI of .safetensors; "+flip": flip TTA, "+bf16": bf16 on the CPU
    segmenter: str = "default"
    min_side: int = 64  # decode limits (see retsam_core.image_io.DecodeLimits)
    max_pixels: int = 120_000_000
    field_angle_deg: float = DEFAULT_FIELD_ANGLE_DEG  # camera field angle: mm/px when the manifest has none; an angular-scale model's canvas
    pass_image_to_quantify: bool = True  # the canvas's quality and colour biomarkers (it travels to the CPU actors raw)

    # Resources
    num_gpus: float = 0.0  # per segmentation actor; never more than the cluster has (checked at start)
    segment_actors: int = 0  # 0 = automatic (GPUs: one per GPU; CPU: about half the CPUs)
    quantify_actors: int = 0  # 0 = automatic
    # CPUs reserved per segmentation actor, its decode + encode threads (0 = automatic: 1 on CPU; on GPUs the share
    # that keeps pace with the quantify actors, pipeline.resources.segment_cpus_for_gpus)
    segment_num_cpus: float = 0.0
    decode_threads: int = 0  # threads decoding inside a segmentation actor (0 = int(segment_num_cpus))
    quantify_num_cpus: float = 1.0
    io_num_cpus: float = 0.25  # fractional CPUs for read tasks, so actors never starve the reads
    segment_batch_size: int = 4
    quantify_batch_size: int = 8

    # Output / commit
    shard_size: int = 1000  # images per commit batch (one images, segments and masks file per batch)
    dataset_size: int = 20000  # images per Ray Dataset (actors live this long; bounds Ray's per-path metadata)
    masks_rows_per_file: int = 1000  # a commit batch's masks are split into files of at most this many rows
    segments_rows_per_file: int = 1_000_000
    compression: str = "zstd"
    read_retries: int = 3  # own retries of transient storage errors per image (besides Ray's)

    # Cluster / run
    address: str | None = None  # None = start a local Ray; "auto" = connect to a running cluster
    local_num_cpus: int | None = None  # logical CPUs for a local Ray (default: max(4, cores + 2))
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options (merged with AWS env)

    # QC
    qc_overlays: str = "sample"  # none | sample | all: QC overlay PNGs under OUTPUT/qc/ after the run
    qc_sample_size: int = 24  # overlays rendered in "sample" mode
    quality_reject_below: float | None = None  # mark rows ungradable when the quality score is below this

    def __post_init__(self) -> None:
        if self.qc_overlays not in ("none", "sample", "all"):
            raise ValueError(f"qc_overlays must be none, sample or all, got {self.qc_overlays!r}")

    @classmethod
    def fields(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def redacted(self) -> dict[str, Any]:
        """The configuration with secrets removed (for logs and `_runs/*.json`)."""
        d = self.to_dict()
        d["storage_options"] = _redact(d.get("storage_options") or {})
        return d

    def updated(self, **overrides: Any) -> "PipelineConfig":
        known = {f.name for f in self.fields()}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown configuration keys: {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        out = dataclasses.replace(self, **{k: _coerce(self, k, v) for k, v in overrides.items() if v is not None})
        out.validate()
        return out

    def validate(self) -> None:
        if self.canvas_size < 64:
            raise ValueError("canvas_size must be >= 64")
        if self.num_gpus < 0:
            raise ValueError("num_gpus must be >= 0")
        for name in ("segment_batch_size", "quantify_batch_size", "shard_size", "dataset_size", "masks_rows_per_file"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer")

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> "PipelineConfig":
        cfg = cls()
        if path:
            text = Path(path).read_text()
            if str(path).endswith((".yaml", ".yml")):
                import yaml

                data = yaml.safe_load(text) or {}
            else:
                data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError(f"{path}: configuration must be a mapping")
            cfg = cfg.updated(**data)
        return cfg.updated(**overrides)


def field_angle_of(config: dict) -> float:
    """The camera field angle in a stage's plain-dict config, else the default: the mm/px estimate and an
    angular-scale model's canvas side must assume the same angle."""
    return float(config.get("field_angle_deg") or DEFAULT_FIELD_ANGLE_DEG)


def _coerce(cfg: PipelineConfig, key: str, value: Any) -> Any:
    current = getattr(cfg, key)
    if isinstance(current, bool) and isinstance(value, str):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, str):
        return int(value)
    if isinstance(current, float) and isinstance(value, (str, int)):
        return float(value)
    return value


_SECRET_WORDS = ("secret", "token", "password", "key", "credential")


def _redact(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: ("***" if any(w in str(k).lower() for w in _SECRET_WORDS) and not isinstance(v, dict) else _redact(v)) for k, v in d.items()}
    return d
