"""Precompute preprocessed canvases + canvas labels once (runs/cache/<size>/<dataset>/<split>/<id>.npz).

Images go through exactly the pipeline's path: `image_io.decode_image` (JPEG draft decode at the canvas size)
then `preprocess.preprocess`; labels are mapped with the same geometry (`label_to_canvas`) and stored as uint8
soft maps (0..255, threshold at 128 for binary ground truth).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from retsam_core.datasets.readers import DATASETS, get_reader, label_to_canvas
from retsam_core.image_io import DecodeLimits, decode_image
from retsam_core.preprocess import preprocess


def canvas_from_bytes(data: bytes, size: int):
    """Decode + preprocess one encoded image exactly like the pipeline. Returns `Preprocessed`."""
    dec = decode_image(data, DecodeLimits(target_side=size))
    return preprocess(dec.rgb, size, dec.decode_scale, (dec.original_height, dec.original_width))


def load_canvas(path: Path, size: int):
    """`canvas_from_bytes` of one file."""
    return canvas_from_bytes(Path(path).read_bytes(), size)


def cache_path(cache_dir: Path, size: int, dataset: str, split: str, id_: str) -> Path:
    return Path(cache_dir) / str(size) / dataset / split / f"{id_}.npz"


def build_one(reader, split: str, id_: str, size: int, out: Path) -> Path:
    if out.exists():
        return out
    s = reader.load(split, id_)
    pre = load_canvas(s.image_path, size)
    arrays = {"image": pre.image, "fov": pre.fov}
    for t, m in s.masks.items():
        arrays["m_" + t] = (label_to_canvas(m, pre.geometry) * 255 + 0.5).astype(np.uint8)
    for t, m in s.ignore.items():
        arrays["i_" + t] = label_to_canvas(m, pre.geometry) >= 0.5
    meta = {"id": id_, "annotated": list(s.annotated), "geometry": pre.geometry.to_dict()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, out)
    return out


def build_cache(cache_dir, size=1024, datasets=None, splits=("train", "test"), root=None, log=print) -> list[Path]:
    paths = []
    for name in datasets or list(DATASETS):
        r = get_reader(name, root)
        for split in splits:
            for id_ in r.ids(split):
                paths.append(build_one(r, split, id_, size, cache_path(cache_dir, size, r.name, split, id_)))
            log(f"cached {r.name}/{split}: {len(r.ids(split))} images")
    return paths


def load_cached(path: Path) -> dict:
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    d["meta"] = json.loads(str(d["meta"]))
    return d


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cache-dir", default="runs/cache")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--datasets", nargs="*")
    ap.add_argument("--data-root")
    a = ap.parse_args(argv)
    build_cache(a.cache_dir, a.size, a.datasets, root=a.data_root)


if __name__ == "__main__":
    main()
