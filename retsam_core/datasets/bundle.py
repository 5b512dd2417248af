"""A compact, portable copy of the training canvases, for training on a machine without the shared datasets.

The canvas cache (`cache.py`) stores raw arrays (about 10 MB per 1024 px image); a GPU worker or a cluster node
needs the same canvases in a few hundred kB. A bundle stores, per image, one `.npz` holding the canvas as a
JPEG (quality `quality`, 4:4:4 chroma: a mild compression no worse than the source datasets' own JPEGs), and
the FOV, soft labels and ignore masks losslessly (zlib). `index.json` lists datasets, splits and annotated channels.

Layout: `<bundle>/index.json`, `<bundle>/<dataset>/<split>/<id>.npz`.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from retsam_core.datasets.cache import load_cached


def write_bundle(cache_dir, out_dir, datasets, splits=("train",), size: int = 1024, quality: int = 92,
                 sizes: dict[str, int] | None = None) -> dict:
    """Pack cached canvases (built beforehand by `cache.build_cache`) into `out_dir`: each dataset at `size`, or at
    its own side in `sizes` (an angular-scale model's canvases). Returns the index."""
    out = Path(out_dir)
    sizes = {name: (sizes or {}).get(name, size) for name in datasets}
    index: dict = {"size": size, "sizes": sizes, "quality": quality, "records": []}
    for name in datasets:
        for split in splits:
            folder = Path(cache_dir) / str(sizes[name]) / name / split
            for src in sorted(folder.glob("*.npz")):
                d = load_cached(src)
                id_ = d["meta"]["id"]
                ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(d["image"], cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
                if not ok:
                    raise RuntimeError(f"JPEG encoding failed for {src}")
                arrays = {k: v for k, v in d.items() if k.startswith(("m_", "i_"))}
                dst = out / name / split / f"{id_}.npz"
                dst.parent.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(dst, jpeg=jpg.ravel(), fov=d["fov"], **arrays)
                index["records"].append({"dataset": name, "split": split, "id": id_,
                                         "channels": sorted(k[2:] for k in arrays if k.startswith("m_"))})
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index


def read_bundle(bundle_dir, datasets, split: str, limit: int | None = None, ids=None):
    """Yield `(dataset, id, cached_dict)` in the canvas cache's own format (`image`, `fov`, `m_*`, `i_*`), for
    `ids` only when given (then at most `limit` per dataset)."""
    root = Path(bundle_dir)
    index = json.loads((root / "index.json").read_text())
    for name in datasets:
        recs = [r for r in index["records"] if r["dataset"] == name and r["split"] == split and (ids is None or r["id"] in ids)]
        for r in recs[:limit] if limit else recs:
            with np.load(root / name / split / f"{r['id']}.npz") as z:
                d = {k: z[k] for k in z.files}
            d["image"] = cv2.cvtColor(cv2.imdecode(d.pop("jpeg"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            yield name, r["id"], d


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--cache-dir", default="runs/cache")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--datasets", nargs="+", default=["chase_db1", "hrf_av", "drishti_gs1", "idrid"])
    ap.add_argument("--splits", nargs="+", default=["train"])
    ap.add_argument("--quality", type=int, default=92)
    ap.add_argument("--px-per-degree", type=float, help="each dataset at px per degree x its camera's field angle "
                    "(for a model with model.px_per_degree; overrides --size)")
    ap.add_argument("--data-root", help="build missing cache entries from this datasets folder first")
    a = ap.parse_args(argv)
    from retsam_core.datasets.cache import build_cache
    from retsam_core.datasets.readers import DATASETS
    from retsam_core.preprocess import angular_canvas_side

    sizes = {d: angular_canvas_side(a.px_per_degree, DATASETS[d].field_angle_deg, a.size) for d in a.datasets}
    for d in a.datasets:
        build_cache(a.cache_dir, sizes[d], [d], tuple(a.splits), root=a.data_root)
    index = write_bundle(a.cache_dir, a.out_dir, a.datasets, tuple(a.splits), a.size, a.quality, sizes)
    print(f"{len(index['records'])} records -> {a.out_dir}")


if __name__ == "__main__":
    main()
