"""Ray start-up and resource planning: the local embedded Ray or a cluster address, Ray Data's retry and progress
settings, and actor counts/GPUs that the cluster can actually satisfy."""

from __future__ import annotations

import os
from typing import Any, Callable

from pipeline.config import PipelineConfig


def ensure_ray(cfg: PipelineConfig, progress: bool = False):
    import ray

    if not ray.is_initialized():
        if cfg.address:
            ray.init(address=cfg.address, log_to_driver=False, configure_logging=False)
        else:
            cores = os.cpu_count() or 2
            ray.init(num_cpus=cfg.local_num_cpus or max(4, cores + 2), include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
    configure_data_context(progress)
    return ray


def configure_data_context(progress: bool = False) -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    extra = ["SlowDown", "RequestTimeout", "Connection reset", "ConnectionResetError", "Read timed out",
             "InternalError", "ServiceUnavailable", "503"]
    ctx.retried_io_errors = list(dict.fromkeys(list(ctx.retried_io_errors) + extra))
    ctx.enable_progress_bars = False  # our own bar (per image, across commit batches) replaces Ray's per-operator bars
    try:
        ctx.print_on_execution_start = False
    except Exception:  # noqa: BLE001
        pass


def plan_resources(cfg: PipelineConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """Actor counts and GPUs that the cluster can actually satisfy (a GPU request it cannot meet would hang)."""
    import ray

    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 0)), float(res.get("GPU", 0))
    num_gpus = float(cfg.num_gpus)
    if num_gpus > 0 and gpus < num_gpus:
        log(f"warning: num_gpus={num_gpus:g} requested but the cluster has {gpus:g} GPU(s): running segmentation on CPU")
        num_gpus = 0.0
    seg_cpus, q_cpus = float(cfg.segment_num_cpus), float(cfg.quantify_num_cpus)
    physical = cpus if cfg.address else min(cpus, float(os.cpu_count() or 2))
    if cfg.segment_actors > 0:
        n_seg = cfg.segment_actors
    elif num_gpus > 0:
        n_seg = max(1, int(gpus // num_gpus))
    elif cfg.address and physical >= 6:  # CPU cluster: ~2/3 of the CPUs segment, the rest quantify
        n_seg = max(1, int(physical * 2 / 3 // max(seg_cpus, 1e-6)))
    else:  # a workstation: segmentation dominates; one quantify actor per two segmenters
        n_seg = max(1, int(physical // max(seg_cpus, 1e-6)))
    if cfg.quantify_actors > 0:
        n_q = cfg.quantify_actors
    elif num_gpus > 0 or (cfg.address and physical >= 6):  # the CPUs that segmentation leaves free
        left = cpus - n_seg * seg_cpus - 1
        n_q = max(1, int(left // max(q_cpus, 1e-6)))
    else:
        n_q = max(1, int(n_seg // 2) or 1)
    need = n_seg * seg_cpus + n_q * q_cpus + cfg.io_num_cpus
    if num_gpus == 0 and need > cpus and cfg.segment_actors == 0:
        n_seg = max(1, int((cpus - n_q * q_cpus - cfg.io_num_cpus) // max(seg_cpus, 1e-6)))
    if n_seg * seg_cpus + n_q * q_cpus + cfg.io_num_cpus > cpus:
        log(f"warning: actors reserve more CPUs than the cluster has ({cpus:g}); lowering reservations")
        seg_cpus = q_cpus = max(0.1, (cpus - cfg.io_num_cpus) / (n_seg + n_q + 1))
    return {"num_gpus": num_gpus, "segment_actors": n_seg, "quantify_actors": n_q, "segment_num_cpus": seg_cpus,
            "quantify_num_cpus": q_cpus, "cluster_cpus": cpus, "cluster_gpus": gpus}
