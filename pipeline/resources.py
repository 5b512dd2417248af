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
            try:
                ray.init(address=cfg.address, log_to_driver=False, configure_logging=False)
            except ConnectionError as exc:
                raise ConnectionError(cluster_unreachable_message(cfg.address, exc)) from exc
        else:
            cores = os.cpu_count() or 2
            ray.init(num_cpus=cfg.local_num_cpus or max(4, cores + 2), include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
    configure_data_context(progress)
    return ray


def cluster_unreachable_message(address: str, exc: BaseException) -> str:
    """Say why a cluster refused us when Ray only says it could not connect: a missing or wrong token is the usual
    cause since Ray turned token authentication on (2.59 for local clusters, 2.61 for all)."""
    causes, cause = [], exc
    while cause is not None and len(causes) < 10:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any("Authentication" in type(c).__name__ or "InvalidAuthToken" in str(c) for c in causes):
        return (f"the Ray cluster at {address} refused this client's authentication token: export "
                "RAY_AUTH_MODE=token and give the cluster's token in ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or "
                "RAY_AUTH_TOKEN (`ray get-auth-token` on the head prints it)")
    last = str(causes[-1]).strip().splitlines()
    return f"cannot connect to the Ray cluster at {address}: {type(causes[-1]).__name__}: {last[-1] if last else ''}"


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


# CPU-seconds per image, one thread, median of 6 HRF-AV test images, both measured in one sitting (session 19;
# session 15's were 0.26 and 1.04): decode + preprocess + the segmentation actor's host work after the network
# (0.08 + 0.04; benchmarks/bench_segment_host.py, `segment_actor_cpu_s_per_image`, 2 runs), and the quantify actor's
# finishing + biomarkers + stored PNGs (benchmarks/bench_quantify_actor.py, median of 4 runs: 0.56-0.62). Their
# ratio splits a GPU cluster's CPUs between the two pools.
SEGMENT_CPU_S_PER_IMAGE = 0.125
QUANTIFY_CPU_S_PER_IMAGE = 0.58
MAX_SEGMENT_CPUS = 16.0  # decode threads in one actor's pool: more were never measured (GPU nodes have 8-16 per GPU)


def gpu_node_cpus_per_gpu() -> float | None:
    """CPUs per GPU on the smallest GPU node that is up (None: no GPU node, or Ray cannot say)."""
    import ray

    try:
        ratios = [n["Resources"].get("CPU", 0.0) / n["Resources"]["GPU"] for n in ray.nodes()
                  if n.get("Alive") and n.get("Resources", {}).get("GPU", 0) > 0]
    except Exception:  # noqa: BLE001
        return None
    return min(ratios) if ratios else None


def segment_cpus_for_gpus(cpus: float, n_seg: int, num_gpus: float, quantify_cpus: float | None,
                          io_cpus: float) -> float:
    """CPUs per GPU segmentation actor so that decoding keeps pace with the quantify actors: with `quantify_cpus`
    (the CPUs the user's explicit quantify actors will hold, the autoscaler adding nodes for them) in the measured
    ratio to it; otherwise a balanced split of the CPUs up now (a 16-CPU GPU node alone: 3 decode, 12 quantify).
    At least 1, at most MAX_SEGMENT_CPUS and the GPU node's CPUs per actor less one."""
    ratio = SEGMENT_CPU_S_PER_IMAGE / QUANTIFY_CPU_S_PER_IMAGE
    if quantify_cpus is not None:
        share = quantify_cpus * ratio / n_seg
    else:
        share = (cpus - io_cpus - 1.0) * ratio / (1.0 + ratio) / n_seg
    cap = MAX_SEGMENT_CPUS
    per_node = gpu_node_cpus_per_gpu()
    if per_node is not None:
        cap = min(cap, per_node * num_gpus - 1.0)
    return float(max(1, min(round(share), int(cap))))


def plan_resources(cfg: PipelineConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """Actor counts and GPUs that the cluster can actually satisfy (a GPU request it cannot meet would hang). On a
    cluster, explicit actor counts are kept even beyond the CPUs up now: the autoscaler adds nodes for them."""
    import ray

    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 0)), float(res.get("GPU", 0))
    num_gpus = float(cfg.num_gpus)
    if num_gpus > 0 and gpus < num_gpus:
        log(f"warning: num_gpus={num_gpus:g} requested but the cluster has {gpus:g} GPU(s): running segmentation on CPU")
        num_gpus = 0.0
    q_cpus = float(cfg.quantify_num_cpus)
    # 0 = automatic: 1 on CPU; a GPU actor's share is planned below, once the number of GPU actors is known
    seg_cpus = float(cfg.segment_num_cpus) or (0.0 if num_gpus > 0 else 1.0)
    physical = cpus if cfg.address else min(cpus, float(os.cpu_count() or 2))
    if cfg.segment_actors > 0:
        n_seg = cfg.segment_actors
    elif num_gpus > 0:
        n_seg = max(1, int(gpus // num_gpus))
    elif cfg.address and physical >= 6:  # CPU cluster: ~2/3 of the CPUs segment, the rest quantify
        n_seg = max(1, int(physical * 2 / 3 // seg_cpus))
    else:  # a workstation: segmentation dominates; one quantify actor per two segmenters
        n_seg = max(1, int(physical // seg_cpus))
    if seg_cpus <= 0:  # a GPU actor gets the decode threads that keep pace with the quantify actors
        explicit_q = cfg.quantify_actors * q_cpus if cfg.quantify_actors > 0 else None
        seg_cpus = segment_cpus_for_gpus(cpus, n_seg, num_gpus, explicit_q, cfg.io_num_cpus)
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
    need = n_seg * seg_cpus + n_q * q_cpus + cfg.io_num_cpus
    autoscaled = bool(cfg.address) and (cfg.segment_actors > 0 or cfg.quantify_actors > 0)
    if need > cpus and autoscaled:
        log(f"{n_seg} segmentation + {n_q} quantify actors reserve {need:g} CPUs; the cluster has {cpus:g} now: "
            "the rest start as the autoscaler adds nodes")
    elif need > cpus:
        log(f"warning: actors reserve more CPUs than the cluster has ({cpus:g}); lowering reservations")
        seg_cpus = q_cpus = max(0.1, (cpus - cfg.io_num_cpus) / (n_seg + n_q + 1))
    return {"num_gpus": num_gpus, "segment_actors": n_seg, "quantify_actors": n_q, "segment_num_cpus": seg_cpus,
            "quantify_num_cpus": q_cpus, "cluster_cpus": cpus, "cluster_gpus": gpus}
