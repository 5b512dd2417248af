"""Training configuration: the stages and their budgets, the data mix, and the loss weights, as one JSON-able
dataclass (`jobs/configs/*.json` are its dicts). Kept apart from the training loop so that the CLI, the exporter,
the pseudo-labeller and Ray Train read it without importing the loop."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from retsam_core.model.network import ModelConfig
from retsam_core.training.data import AugConfig

STAGE_ORDER = ("experts", "pseudo", "multitask", "finetune")
DATASET_GROUPS = {"chase_db1": ("vessels",), "hrf_av": ("vessels",), "drishti_gs1": ("disc_cup",), "idrid": ("lesions", "disc_cup")}


@dataclass
class StageConfig:
    steps: int = 1000
    max_minutes: float | None = None  # wall-clock budget; the cosine schedule still spans `steps`
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch: int = 6
    patch: int = 320


@dataclass
class TrainConfig:
    name: str = "retsam-small"
    out_dir: str = "runs/retsam-small"
    cache_dir: str = "runs/cache"
    bundle_dir: str | None = None  # a portable bundle (datasets.bundle) instead of the cache + shared datasets
    data_root: str | None = None
    datasets: tuple[str, ...] = ("chase_db1", "hrf_av", "drishti_gs1", "idrid")
    stages: tuple[str, ...] = ("multitask", "finetune")
    model: ModelConfig = field(default_factory=ModelConfig)
    experts: StageConfig = field(default_factory=lambda: StageConfig(steps=600))
    multitask: StageConfig = field(default_factory=StageConfig)
    finetune: StageConfig = field(default_factory=lambda: StageConfig(steps=300, lr=5e-4))
    av_weight: float = 0.2
    pseudo_weight: float = 0.5
    pseudo_band: tuple[float, float] = (0.3, 0.7)  # probabilities inside this band are ignored
    dataset_weights: dict = field(default_factory=lambda: {"chase_db1": 1.0, "hrf_av": 1.0, "drishti_gs1": 0.7, "idrid": 1.3})
    lesion_channel_weight: float = 1.5
    lesion_pos_weight: float = 1.0  # BCE positive weight for lesion channels (rare pixels); 1 = plain BCE
    limit_images: int | None = None  # per dataset (tests)
    ckpt_every_s: float = 180.0
    log_every: int = 10
    device: str | None = None  # None: cuda when available, else cpu (Ray Train workers: the worker's device)
    threads: int = 1  # 1 beats 2 on a shared 2-core machine (OpenMP spin-waits under contention: measured 5x)
    loader_workers: int = 0  # > 0: patches are cut by this many threads, batches ahead (keeps a GPU fed)
    amp: bool = True  # bf16 autocast on CUDA
    cpu_amp: bool = False  # bf16 autocast on the CPU too: a step 1.7x faster on a CPU with bf16 instructions (6 x 384 px,
    #   2 threads, this machine's AVX512-BF16: 1.63 s against 2.81 s); emulated, slower, elsewhere
    device_sampler: bool = False  # cut patches on the training device (GPU) instead of CPU threads
    init_weights: str | None = None  # .safetensors path/URI: the first trained stage starts from these weights
    train_groups: tuple[str, ...] | None = None  # multitask/finetune train only these decoders (None: all labelled)
    frozen_decoders: tuple[str, ...] = ()  # multitask/finetune keep these decoders as given (weights, BatchNorm statistics):
    #   with `train_groups` ("vessels",) and a `model.vessel_refiner`, only the refiner learns
    distill_groups: tuple[str, ...] = ()  # multitask from `init_weights`: these groups' outputs are held to the
    #   starting weights' on every patch (training.distill), and every dataset feeds that, labelled for it or not
    distill_weight: float = 1.0
    distill_positive_weight: float = 0.0  # each distilled pixel weighted 1 + this × the teacher's probability
    batchnorm_statistics_fixed: bool = False  # every BatchNorm keeps its running statistics (small-batch fine-tuning)
    healthy_negatives: bool = False  # healthy eyes (Reader.healthy) train the lesion channels as all background
    hold_out_calibration_eyes: bool = False  # ... except the calibration half (Reader.calibration_eye)
    aug: AugConfig = field(default_factory=AugConfig)  # patch geometry and colour jitter (camera robustness)
    seed: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        d["aug"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["aug"].items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["model"] = ModelConfig.from_dict(d.get("model", {}))
        d["aug"] = AugConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.get("aug", {}).items()})
        for k in ("experts", "multitask", "finetune"):
            if k in d and isinstance(d[k], dict):
                d[k] = StageConfig(**d[k])
        for k in ("datasets", "stages", "pseudo_band", "train_groups", "frozen_decoders", "distill_groups"):
            if k in d and d[k] is not None:
                d[k] = tuple(d[k])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
