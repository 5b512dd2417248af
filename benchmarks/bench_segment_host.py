"""Host (CPU) work per image on the segmentation actor, before and after the finishing step moved to the CPU actors.

On a GPU the network runs at hundreds of images per second (`bench_model.py --gpu`), so what the segmentation actor
does on its host per image bounds the pipeline. This measures, for the default segmenter on real photographs (the
HRF-AV test images when the shared data is present, else scikit-image's fundus), one CPU thread, medians:

- `actor_before`: what the actor did per image until session 14: thresholds, the A/V vote on the skeleton,
  post-processing and the full classical segmenter (vessel map + disc locator) for the fovea, then every mask as
  an 8-bit PNG and the canvas as a JPEG;
- `actor_now`: `segment_pending`, its masks and the FOV as 1-bit transport PNGs, the A/V probabilities raw on
  the vessel union, the canvas raw;
- `cpu_actor_added`: what moved to the CPU actor: decoding those, the `Finisher` (the fovea now searched from the
  learned disc), and the finished masks and the FOV as 8-bit PNGs for storage;
- `decode_preprocess`: what the actor does before the network, the file's bytes to the canvas
  (`canvas_from_bytes`, JPEG draft decoding included). With `actor_now` it is the segmentation actor's CPU time per
  image, `pipeline.resources.SEGMENT_CPU_S_PER_IMAGE`.

The network pass is computed once per image beforehand and replayed, so only host work is timed.

    python benchmarks/bench_segment_host.py [--runs 5] [--images 6] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def photographs(n: int) -> list[tuple[str, bytes]]:
    """(name, the file's bytes): HRF-AV test images when the shared data is present, else scikit-image's fundus."""
    from retsam_core.datasets.readers import get_reader

    try:
        reader = get_reader("hrf_av")
        return [(i, Path(reader.load("test", i).image_path).read_bytes()) for i in reader.ids("test")[:n]]
    except (FileNotFoundError, OSError):
        import cv2
        import skimage.data

        ok, buf = cv2.imencode(".jpg", skimage.data.retina()[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        return [("skimage_retina", buf.tobytes())]


def _median_seconds(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(runs: int = 5, n_images: int = 6) -> dict:
    import torch

    import cv2

    from retsam_core.classical import ClassicalSegmenter
    from retsam_core.datasets.cache import canvas_from_bytes
    from retsam_core.finishing import PendingMasks, evidence_support
    from retsam_core.mask_codec import decode_mask, decode_on_support, encode_mask, encode_on_support
    from retsam_core.segmenter import load_segmenter

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    seg = load_segmenter("default", device="cpu")
    learned = seg.learned
    finish_now = seg.finisher()
    # before: the fovea from the classical segmenter run in full (its own disc), on the segmentation actor
    finish_before = replace(finish_now, classical_targets=())
    classical = ClassicalSegmenter()
    rows = []
    for name, data in photographs(n_images):
        pre = canvas_from_bytes(data, 1024)
        image, fov = pre.image, pre.fov
        probs = learned._forward(image[None], fov[None])
        learned._forward = lambda *_a, _p=probs: _p  # replay the network pass: host work only
        pending = seg.segment_pending(image[None], fov[None])[0]

        def before():
            p = seg.segment_pending(image[None], fov[None])[0]
            masks = finish_before(p, image, fov) | {"fovea": classical.segment_one(image, fov)["fovea"]}
            [encode_mask(m) for m in (*masks.values(), fov)]
            cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])

        def now():
            p = seg.segment_pending(image[None], fov[None])[0]
            [encode_mask(m, transport=True) for m in p.masks.values()]
            support = evidence_support(p.masks)
            [encode_on_support(v, support) for v in p.evidence.values()]
            encode_mask(fov, transport=True)
            np.ascontiguousarray(image).tobytes()

        union = evidence_support(pending.masks)
        sent = ({t: encode_mask(m, transport=True) for t, m in pending.masks.items()},
                {k: encode_on_support(v, union) for k, v in pending.evidence.items()})

        def cpu_added():
            masks = {t: decode_mask(b) for t, b in sent[0].items()}
            support = evidence_support(masks)
            evidence = {k: decode_on_support(b, support) for k, b in sent[1].items()}
            done = finish_now(PendingMasks(masks, evidence), image, fov)
            [encode_mask(m) for m in (*done.values(), fov)]

        rows.append({"image": name, "decode_preprocess_s": _median_seconds(lambda: canvas_from_bytes(data, 1024), runs),
                     "actor_before_s": _median_seconds(before, runs),
                     "actor_now_s": _median_seconds(now, runs), "cpu_actor_added_s": _median_seconds(cpu_added, runs)})
        del learned._forward
    keys = ("decode_preprocess_s", "actor_before_s", "actor_now_s", "cpu_actor_added_s")
    med = {k: statistics.median(r[k] for r in rows) for k in keys}
    return {"segmenter": seg.info.name, "weights": seg.info.weights_hash[:12], "images": len(rows), "runs": runs,
            "threads": 1, **{k: round(v, 4) for k, v in med.items()},
            "actor_host_ratio_before_over_now": round(med["actor_before_s"] / med["actor_now_s"], 1),
            "segment_actor_cpu_s_per_image": round(med["decode_preprocess_s"] + med["actor_now_s"], 4),
            "load_average_1min": os.getloadavg()[0], "per_image": rows}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    r = run(a.runs, a.images)
    print(json.dumps({k: v for k, v in r.items() if k != "per_image"}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
    main()
