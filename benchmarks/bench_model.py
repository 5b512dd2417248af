"""Learned segmenter benchmark: CPU inference time per image (one core, median) + the evaluation table.

  python benchmarks/bench_model.py [--weights W] [--runs 7] [--eval-summary out/eval/summary.json] [--json OUT]
  python benchmarks/bench_model.py --gpu [--batch 16]     # images/s on a GPU, bf16 and fp32
  python benchmarks/bench_model.py --cpu-bf16 [--threads 1]  # fp32 against +bf16 on this CPU

Reports: forward pass at the model's own resolution (network only), and `segment()` on a 1024 px canvas
(resize in, network, resize + threshold out), with the 1-minute load average so that numbers taken on a shared
machine can be judged. The evaluation table is read from a summary written by `retsam_core.evaluation.report`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def bench(weights: str | None, runs: int = 7, canvas: int = 1024) -> dict:
    from retsam_core.model.loading import WEIGHTS_DIR, LearnedSegmenter

    torch.set_num_threads(1)
    weights = weights or str(WEIGHTS_DIR / "retsam-small.safetensors")
    seg = LearnedSegmenter.from_uri(weights, device="cpu")
    R = seg.model.cfg.resolution
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 255, (1, 3, R, R), dtype=np.uint8))
    img = rng.integers(0, 255, (1, canvas, canvas, 3), dtype=np.uint8)
    fov = np.ones((1, canvas, canvas), bool)
    fwd, full = [], []
    with torch.no_grad():
        seg.model(seg.model.normalise(x))  # warm-up
        for _ in range(runs):
            t = time.perf_counter()
            seg.model(seg.model.normalise(x))
            fwd.append((time.perf_counter() - t) * 1000)
    seg.segment(img, fov)
    for _ in range(runs):
        t = time.perf_counter()
        seg.segment(img, fov)
        full.append((time.perf_counter() - t) * 1000)
    return {
        "weights": weights, "sha256": seg.info.weights_hash, "model_resolution": R, "canvas": canvas, "threads": 1,
        "forward_ms_median": round(statistics.median(fwd), 1), "segment_ms_median": round(statistics.median(full), 1),
        "runs": runs, "params_millions": round(sum(p.numel() for p in seg.model.parameters()) / 1e6, 2),
        "decoders_computed": [g for g in seg.model.cfg.task_groups if g not in seg.model.skip_groups],
        "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(), "torch": torch.__version__,
    }


def bench_cpu_bf16(weights: str | None, runs: int = 7, threads: int = 1, canvas: int = 1024) -> dict:
    """fp32 against "+bf16" on this CPU, alternated in one process on a real photograph: the network's forward pass
    and `segment()`, medians and their ratio, and how many vessel pixels change side (docs/model_eval/cpu_bf16/)."""
    import skimage.data

    from retsam_core.model.loading import WEIGHTS_DIR, LearnedSegmenter, cpu_bf16_instructions
    from retsam_core.preprocess import preprocess

    torch.set_num_threads(threads)
    weights = weights or str(WEIGHTS_DIR / "retsam-small.safetensors")
    segs = {name: LearnedSegmenter.from_uri(weights, device="cpu", cpu_bf16=name == "bf16") for name in ("fp32", "bf16")}
    pre = preprocess(skimage.data.retina()[..., :3], canvas)
    img, fov = pre.image[None], pre.fov[None]
    times: dict[str, dict[str, list[float]]] = {n: {"forward": [], "segment": []} for n in segs}
    masks = {n: seg.segment(img, fov)[0]["vessel"] for n, seg in segs.items()}  # also the warm-up
    for _ in range(runs):
        for name, seg in segs.items():
            t = time.perf_counter()
            seg.probabilities(img, fov)
            times[name]["forward"].append(time.perf_counter() - t)
            t = time.perf_counter()
            seg.segment(img, fov)
            times[name]["segment"].append(time.perf_counter() - t)
    med = {n: {k: statistics.median(v) * 1000 for k, v in t.items()} for n, t in times.items()}
    return {
        "weights": weights, "threads": threads, "runs": runs, "canvas": canvas, "image": "skimage.data.retina()",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16_instructions": cpu_bf16_instructions(),
        **{f"{n}_{k}_ms_median": round(v, 1) for n, d in med.items() for k, v in d.items()},
        "forward_speedup": round(med["fp32"]["forward"] / med["bf16"]["forward"], 2),
        "segment_speedup": round(med["fp32"]["segment"] / med["bf16"]["segment"], 2),
        "vessel_pixels_changed": int((masks["fp32"] != masks["bf16"]).sum()),
        "vessel_pixels": int(masks["fp32"].sum()),
        "load_average_1min": os.getloadavg()[0], "torch": torch.__version__,
    }


def _rate(fn, n_images: int, seconds: float) -> float:
    """Images per second of `fn` (one call = `n_images`), after warm-up, over about `seconds` of wall time."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(3):
        fn()
    sync()
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        calls += 1
    sync()
    return calls * n_images / (time.perf_counter() - t0)


def bench_gpu(weights: str | None, batch: int = 16, seconds: float = 8.0, canvas: int = 1024) -> dict:
    """GPU throughput: the network alone (bf16 autocast and fp32), `segment()` end to end (host canvases in,
    finished boolean masks out) and `segment_pending()` (what the pipeline's GPU actor does per batch)."""
    from retsam_core.model.loading import WEIGHTS_DIR, LearnedSegmenter

    weights = weights or str(WEIGHTS_DIR / "retsam-small.safetensors")
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a dry run of this code path only
    seg = LearnedSegmenter.from_uri(weights, device=dev)
    m, R = seg.model, seg.model.cfg.resolution
    x = torch.randint(0, 255, (batch, 3, R, R), dtype=torch.uint8, device=dev)

    def net(bf16: bool):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            m(m.normalise(x))["seg"].float().sigmoid()

    import skimage.data

    from retsam_core.preprocess import preprocess

    pre = preprocess(skimage.data.retina(), canvas)  # a real photograph: the A/V vote's cost depends on the vessels
    imgs, fovs = np.repeat(pre.image[None], batch, 0), np.repeat(pre.fov[None], batch, 0)
    return {
        "weights": weights, "device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "torch": torch.__version__, "batch": batch,
        "model_resolution": R, "canvas": canvas,
        "network_bf16_images_per_s": round(_rate(lambda: net(True), batch, seconds), 1),
        "network_fp32_images_per_s": round(_rate(lambda: net(False), batch, seconds), 1),
        "segment_bf16_images_per_s": round(_rate(lambda: seg.segment(imgs, fovs), batch, seconds), 1),
        # the pipeline's segmentation actor since session 14: the finishing step runs on the CPU actors
        "segment_pending_bf16_images_per_s": round(_rate(lambda: seg.segment_pending(imgs, fovs), batch, seconds), 1),
        "decoders_computed": [g for g in m.cfg.task_groups if g not in m.skip_groups],
    }


def bench_base_gpu(resolution: int = 896, batch: int = 4, seconds: float = 5.0) -> dict:
    """The `base` (timm Swin) variant, randomly initialised: one training step runs, and network images/s (bf16).
    896 = 7 x 128 keeps every Swin stage a whole number of 7 x 7 windows."""
    from retsam_core.model.network import ModelConfig, RetSAMNet

    try:
        m = RetSAMNet(ModelConfig(variant="base", resolution=resolution)).cuda()
        x = torch.randn(batch, 3, resolution, resolution, device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = m(x)["seg"]
        out.float().sigmoid().mean().backward()
        m.eval()

        def net():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                m(x)["seg"].float().sigmoid()

        return {"variant": "base", "swin": m.cfg.swin_name, "resolution": resolution, "batch": batch,
                "params_millions": round(sum(p.numel() for p in m.parameters()) / 1e6, 1),
                "train_step": "ok", "output_shape": list(out.shape),
                "network_bf16_images_per_s": round(_rate(net, batch, seconds), 1)}
    except Exception as exc:  # report, do not hide: the base variant is optional
        return {"variant": "base", "error": f"{type(exc).__name__}: {exc}"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--eval-summary", default="docs/model_eval/summary.json")
    ap.add_argument("--json")
    ap.add_argument("--gpu", action="store_true", help="GPU throughput (bf16 and fp32) instead of 1-core CPU latency")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--cpu-bf16", action="store_true", help="fp32 against +bf16 on this CPU (ratio, changed pixels)")
    ap.add_argument("--threads", type=int, default=1, help="--cpu-bf16: torch threads")
    a = ap.parse_args(argv)
    if a.cpu_bf16:
        r = bench_cpu_bf16(a.weights, a.runs, a.threads)
        print(json.dumps(r, indent=2))
        if a.json:
            Path(a.json).write_text(json.dumps(r, indent=2) + "\n")
        return r
    r = bench_gpu(a.weights, a.batch) | {"base_variant": bench_base_gpu()} if a.gpu else bench(a.weights, a.runs)
    print(json.dumps(r, indent=1))
    p = Path(a.eval_summary)
    if p.exists():
        from retsam_core.evaluation.report import summary_markdown

        print(summary_markdown(json.loads(p.read_text())))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
