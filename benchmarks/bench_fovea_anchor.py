"""Which optic disc should anchor the classical fovea search: the classical disc or the learned one?

The default segmenter takes the fovea from the classical locator (no public fovea labels here to train or test a
learned one), which searches a band 1.8-3.2 disc diameters from a disc centre. Until session 14 that centre came
from the classical disc locator, run in full (vessel response included, ~1 s per image on one CPU thread) only
for this purpose, while the released disc came from the network. This benchmark measures, on the held-out test
splits with disc ground truth (DRISHTI-GS1, IDRiD), how far each anchor lies from the true disc centre, and how
far the fovea moves when the anchor changes. IDRiD images are macula-centred, so there the fovea's distance from
the canvas centre is a (weak) plausibility check. Prints medians; `--json` writes them.

    python benchmarks/bench_fovea_anchor.py [--json docs/model_eval/fovea_anchor.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def centroid(mask: np.ndarray) -> tuple[float, float] | None:
    ys, xs = np.nonzero(mask)
    return (float(xs.mean()), float(ys.mean())) if len(xs) else None


def run(datasets: tuple[str, ...] = ("drishti_gs1", "idrid"), canvas: int = 1024, data_root: str | None = None) -> dict:
    from retsam_core import classical as C
    from retsam_core.datasets.cache import load_canvas
    from retsam_core.datasets.readers import get_reader, label_to_canvas
    from retsam_core.segmenter import load_segmenter

    seg = load_segmenter("default")
    out: dict = {"segmenter": seg.info.name, "weights": seg.info.weights_hash[:12], "datasets": {}}
    for name in datasets:
        reader = get_reader(name, data_root)
        rows = []
        for id_ in reader.ids("test"):
            sample = reader.load("test", id_)
            pre = load_canvas(sample.image_path, canvas)
            truth = centroid(label_to_canvas(sample.masks["optic_disc"], pre.geometry) >= 0.5)
            if truth is None:
                continue
            img, fov = pre.image, pre.fov
            t0 = time.perf_counter()
            vessel = C.threshold_vessels(C.vessel_response(img, fov), fov)
            classical_centre, radius = C.locate_disc(img, fov, vessel)
            t_classical = time.perf_counter() - t0
            learned = centroid(seg.segment(img[None], fov[None])[0].get("optic_disc", np.zeros(1, bool)))
            old = C.locate_fovea(img, fov, classical_centre, radius)
            new = C.locate_fovea(img, fov, tuple(int(round(v)) for v in learned), radius) if learned else None
            dd = 2 * radius
            rows.append({
                "id": id_,
                "classical_disc_error_dd": float(np.hypot(*np.subtract(classical_centre, truth)) / dd),
                "learned_disc_error_dd": float(np.hypot(*np.subtract(learned, truth)) / dd) if learned else None,
                "fovea_shift_dd": float(np.hypot(*np.subtract(old, new)) / dd) if old and new else None,
                "fovea_from_centre_dd_old": float(np.hypot(old[0] - canvas / 2, old[1] - canvas / 2) / dd) if old else None,
                "fovea_from_centre_dd_new": float(np.hypot(new[0] - canvas / 2, new[1] - canvas / 2) / dd) if new else None,
                "classical_disc_seconds": t_classical,
            })

        def med(key: str) -> float | None:
            v = [r[key] for r in rows if r[key] is not None]
            return float(np.median(v)) if v else None

        def share_over(key: str, limit: float) -> float | None:
            v = [r[key] for r in rows if r[key] is not None]
            return float(np.mean(np.array(v) > limit)) if v else None

        out["datasets"][name] = {
            "images": len(rows),
            "median_disc_error_dd": {"classical": med("classical_disc_error_dd"), "learned": med("learned_disc_error_dd")},
            "share_disc_error_over_half_dd": {"classical": share_over("classical_disc_error_dd", 0.5),
                                              "learned": share_over("learned_disc_error_dd", 0.5)},
            "median_fovea_shift_dd": med("fovea_shift_dd"),
            "share_fovea_shift_over_half_dd": share_over("fovea_shift_dd", 0.5),
            "median_fovea_from_canvas_centre_dd": {"old": med("fovea_from_centre_dd_old"), "new": med("fovea_from_centre_dd_new")},
            "median_classical_disc_seconds": med("classical_disc_seconds"),
            "per_image": rows,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()
    res = run(data_root=args.data_root)
    for name, d in res["datasets"].items():
        print(name, json.dumps({k: v for k, v in d.items() if k != "per_image"}))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
