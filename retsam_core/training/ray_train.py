"""Ray Train path: the same `run_training` entry point on N TorchTrainer workers (DDP; gloo on CPU, NCCL on GPU).

Each worker samples its own patches (seeded by rank); gradients are averaged by DDP, so the effective batch is
`num_workers x batch`. Rank 0 writes the checkpoints/logs into `cfg.out_dir` (a shared path on a cluster),
so a rerun resumes exactly like the local path.
"""

from __future__ import annotations

import os
from pathlib import Path

from retsam_core.training.config import TrainConfig
from retsam_core.training.trainer import run_training


def _worker_loop(config: dict):
    import ray.train
    import ray.train.torch
    import torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = TrainConfig.from_dict(config)
    use_gpu = torch.cuda.is_available() and config.get("_use_gpu", False)

    def wrap(model):
        return ray.train.torch.prepare_model(model, move_to_device=use_gpu,
                                             parallel_strategy_kwargs={"find_unused_parameters": True})

    def report(metrics):
        ray.train.report(metrics)

    last = run_training(cfg, wrap_model=wrap, is_main=(rank == 0), report=report, rank=rank, world=world)
    # every rank must report (ray.train.report is a barrier across the worker group)
    ray.train.report({"final": str(last), "done": 1, "rank": rank})


def train_with_ray(cfg: TrainConfig, num_workers: int = 2, num_gpus: int = 0, storage_path: str | None = None):
    """Launch `run_training` on `num_workers` Ray Train workers; `num_gpus` > 0 gives each worker one GPU."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        ray.init(ignore_reinit_error=True)
    cfg.out_dir = str(Path(cfg.out_dir).resolve())
    cfg.cache_dir = str(Path(cfg.cache_dir).resolve())
    if cfg.data_root:
        cfg.data_root = str(Path(cfg.data_root).resolve())
    use_gpu = num_gpus > 0
    config = cfg.to_dict() | {"_use_gpu": use_gpu}
    storage = storage_path or str(Path(cfg.out_dir).resolve() / "ray")
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": 1, **({"GPU": 1} if use_gpu else {})}),
        run_config=RunConfig(name=Path(cfg.out_dir).name, storage_path=storage),
    )
    os.makedirs(storage, exist_ok=True)
    return trainer.fit()
