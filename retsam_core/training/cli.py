"""`retsam train`: staged, resumable training of the learned segmenter (local, or Ray Train with --num-workers).

Examples:
  retsam train --out-dir runs/retsam-small --stages multitask finetune --minutes 60 10
  retsam train --out-dir runs/r --stages experts pseudo multitask finetune --steps 600 600 300 --num-workers 4 --num-gpus 4
  retsam train --config jobs/configs/retsam-small-gpu.json --bundle-dir bundle --loader-workers 14   # one GPU
  retsam train --out-dir runs/r --export retsam_core/weights/retsam-small.safetensors   # after training
  retsam train --out-dir runs/adapt --init-weights retsam_core/weights/retsam-small.safetensors \
      --stages finetune --train-groups vessels --datasets chase_db1 hrf_av --minutes 60   # adapt one decoder
  retsam train --out-dir runs/enc --init-weights retsam_core/weights/retsam-small.safetensors \
      --stages multitask --train-groups vessels --distill-groups disc_cup lesions --minutes 70   # adapt the encoder
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from retsam_core.subcommand import subcommand


def fit_minutes_within(cfg, seconds: float) -> None:
    """Shrink the stage budgets of `cfg` to fit `seconds` of training (a resumed run with less time left): the
    experts and head fine-tuning keep their minutes up to a fifth of the time each (less when more than four such
    runs must share it), multi-task gets the rest, so the stages together ask for exactly the time left."""
    from retsam_core.training.config import DATASET_GROUPS

    total = max(seconds / 60, 0.05)
    groups = {g for ds in cfg.datasets for g in DATASET_GROUPS.get(ds, ())}  # one expert per task group with data
    runs = {"experts": len(groups) if "experts" in cfg.stages else 0, "finetune": int("finetune" in cfg.stages)}
    share = total / max(5, sum(runs.values()) + 1)  # multi-task keeps at least one share
    for s, n in runs.items():
        if n:
            getattr(cfg, s).max_minutes = min(getattr(cfg, s).max_minutes, share)
    if "multitask" in cfg.stages:
        cfg.multitask.max_minutes = total - sum(n * getattr(cfg, s).max_minutes for s, n in runs.items() if n)


def build_config(a):
    from retsam_core.model.network import ModelConfig
    from retsam_core.training.config import STAGE_ORDER, TrainConfig

    if a.config:
        cfg = TrainConfig.from_dict(json.loads(Path(a.config).read_text()))
    else:
        cfg = TrainConfig()
    if a.out_dir:
        cfg.out_dir = a.out_dir
    if a.name:
        cfg.name = a.name
    if a.cache_dir:
        cfg.cache_dir = a.cache_dir
    if a.data_root:
        cfg.data_root = a.data_root
    if a.bundle_dir:
        cfg.bundle_dir = a.bundle_dir
    if a.loader_workers is not None:
        cfg.loader_workers = a.loader_workers
    if a.device_sampler is not None:
        cfg.device_sampler = a.device_sampler
    if a.cpu_bf16 is not None:
        cfg.cpu_amp = a.cpu_bf16
    if a.stages:
        bad = [s for s in a.stages if s not in STAGE_ORDER]
        if bad:
            raise SystemExit(f"unknown stage(s) {bad}; stages: {', '.join(STAGE_ORDER)}")
        cfg.stages = tuple(a.stages)
    if a.datasets:
        cfg.datasets = tuple(a.datasets)
    if a.init_weights:
        cfg.init_weights = a.init_weights
    if a.train_groups:
        cfg.train_groups = tuple(a.train_groups)
    if a.distill_groups:
        cfg.distill_groups = tuple(a.distill_groups)
        cfg.batchnorm_statistics_fixed = True
    if a.healthy_negatives:
        cfg.healthy_negatives = True
    if a.hold_out_calibration_eyes:
        cfg.hold_out_calibration_eyes = True
    if a.variant or a.resolution:
        cfg.model = ModelConfig.from_dict(cfg.model.to_dict() | {k: v for k, v in (("variant", a.variant), ("resolution", a.resolution)) if v})
    trainable = [s for s in cfg.stages if s != "pseudo"]
    if a.minutes_within:
        fit_minutes_within(cfg, a.minutes_within)
    for opt, field in ((a.steps, "steps"), (a.minutes, "max_minutes"), (a.lr, "lr")):
        if opt:
            vals = opt if len(opt) == len(trainable) else [opt[0]] * len(trainable)
            for s, v in zip(trainable, vals):
                setattr(getattr(cfg, s), field, v)
    for s in ("experts", "multitask", "finetune"):
        if a.batch:
            getattr(cfg, s).batch = a.batch
        if a.patch:
            getattr(cfg, s).patch = a.patch
    if a.threads:
        cfg.threads = a.threads
    if a.limit_images:
        cfg.limit_images = a.limit_images
    return cfg


def handler(a) -> int:
    from retsam_core.training.trainer import run_training

    cfg = build_config(a)
    if a.export:
        from retsam_core.training.export import export_weights

        card = export_weights(cfg.out_dir, a.export)
        print(json.dumps({"weights": a.export, "sha256": card["sha256"]}))
        return 0
    if a.num_workers > 1 or a.num_gpus > 0:
        from retsam_core.training.ray_train import train_with_ray

        res = train_with_ray(cfg, num_workers=max(1, a.num_workers), num_gpus=a.num_gpus)
        print(json.dumps({"metrics": getattr(res, "metrics", None)}, default=str))
    else:
        print(run_training(cfg))
    return 0


def add_arguments(p: argparse.ArgumentParser):
    p.add_argument("--config", help="TrainConfig JSON (e.g. a previous run's config.json); flags override it")
    p.add_argument("--out-dir", help="run folder (checkpoints, logs); rerun to resume")
    p.add_argument("--name")
    p.add_argument("--cache-dir", help="preprocessed canvas cache (default runs/cache)")
    p.add_argument("--data-root", help="shared datasets folder (default $RETSAM_DATA or ../shared/data)")
    p.add_argument("--bundle-dir", help="train from a portable bundle (python -m retsam_core.datasets.bundle) "
                                        "instead of the cache and the shared datasets")
    p.add_argument("--loader-workers", type=int, help="cut patches in this many threads (keeps a GPU fed)")
    p.add_argument("--device-sampler", action=argparse.BooleanOptionalAction,
                   help="cut patches on the GPU (grid_sample), not on CPU threads (default: the config's)")
    p.add_argument("--cpu-bf16", action=argparse.BooleanOptionalAction,
                   help="bf16 autocast when training on the CPU (1.7x a step where the CPU has bf16 instructions)")
    p.add_argument("--datasets", nargs="+", help="chase_db1 hrf_av drishti_gs1 idrid")
    p.add_argument("--stages", nargs="+", help="subset of: experts pseudo multitask finetune")
    p.add_argument("--init-weights", metavar="WEIGHTS", help="start from these .safetensors (path or URI); their card "
                                                             "sets the architecture")
    p.add_argument("--train-groups", nargs="+", help="multitask/finetune train only these decoders (vessels disc_cup "
                                                     "lesions phenotypes); the rest stay as initialised")
    p.add_argument("--distill-groups", nargs="+", help="multitask from --init-weights: hold these groups' outputs to "
                   "the starting weights' on every patch of every dataset while the encoder learns (learning without "
                   "forgetting; BatchNorm statistics stay fixed)")
    p.add_argument("--healthy-negatives", action="store_true", help="eyes their dataset calls healthy train the "
                                                                   "lesion channels as all background")
    p.add_argument("--hold-out-calibration-eyes", action="store_true", help="with --healthy-negatives: keep the "
                   "calibration half of those eyes out, so lesion operating points are chosen on unseen eyes")
    p.add_argument("--variant", choices=["small", "base"])
    p.add_argument("--resolution", type=int)
    p.add_argument("--steps", type=int, nargs="+", help="steps per trainable stage (one value = all)")
    p.add_argument("--minutes", type=float, nargs="+", help="wall-clock budget per trainable stage")
    p.add_argument("--minutes-within", type=float, metavar="SECONDS", help="shrink the config's stage budgets to "
                   "fit this many seconds (multi-task takes what the experts and fine-tuning leave)")
    p.add_argument("--lr", type=float, nargs="+")
    p.add_argument("--batch", type=int)
    p.add_argument("--patch", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--limit-images", type=int, help="per dataset (smoke tests)")
    p.add_argument("--num-workers", type=int, default=1, help="> 1: Ray Train TorchTrainer with this many workers")
    p.add_argument("--num-gpus", type=int, default=0, help="> 0: one GPU per Ray Train worker")
    p.add_argument("--export", metavar="WEIGHTS", help="write the last finished stage as .safetensors + card, then exit")


register, main = subcommand("train", "train the learned multi-task segmenter (staged, resumable)", __doc__, add_arguments, handler)


if __name__ == "__main__":
    raise SystemExit(main())
