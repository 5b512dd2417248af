"""Evaluate a segmenter on a dataset split (or any image/mask folder pair), on the canvas or at native resolution.

Images are decoded and preprocessed exactly as the pipeline does (1024 px canvas by default). With resolution
"canvas" (the default, and the one the model card's figures use) ground truth is mapped onto the same canvas with
the same geometry (`label_to_canvas`, binary at 0.5). With "native" the masks go back to the photograph's own
grid, as `retsam segment` writes them (`mask_to_original`), and are scored against the original label files:
the protocol of most published figures, and what a user's masks are. Metrics are computed inside the field of
view (union the ground truth, so no labelled pixel is dropped); HRF-AV "unknown" vessel pixels are excluded for
artery/vein. Outputs: `metrics.json` (per image + aggregate) and `metrics.md`.

Aggregation: mean over images of each metric. For lesions, the image-level mean DSC is over images whose ground
truth contains the lesion (`dsc_present`), plus the mean over all images (`dsc`, empty-on-empty = 1) and the number
of lesion-free images with false positives; AUPR is pooled over all pixels of the split (IDRiD challenge style),
from the model's probabilities (learned segmenters only).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import cv2
import numpy as np

from retsam_core.datasets.cache import build_one, cache_path, load_canvas, load_cached
from retsam_core.datasets.readers import get_reader, label_to_canvas
from retsam_core.evaluation.metrics import PRAccumulator, binary_metrics, cldice
from retsam_core.image_io import DecodeLimits, decode_image
from retsam_core.preprocess import Geometry, canvas_from_geometry, canvas_to_original, mask_to_original
from retsam_core.targets import LESION_TARGETS

VESSEL_LIKE = ("vessel", "artery", "vein")
RESOLUTIONS = ("canvas", "native")


def _nanmean(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(xs)) if xs else None


def _image_metrics(pred, gt, valid, target, with_cldice=True):
    m = binary_metrics(pred, gt, valid)
    if target in VESSEL_LIKE and with_cldice:
        m["cldice"] = cldice(pred, gt, valid)
    return m


def _probs_for(seg, target, size, geometry=None):
    kept = getattr(seg, "kept_probabilities", None)
    probs = kept(target) if kept is not None else None
    if probs is None:
        return None
    p = probs[0].astype(np.float32)
    if geometry is not None:
        return canvas_to_original(p, geometry, "linear")
    return p if p.shape[0] == size else cv2.resize(p, (size, size), interpolation=cv2.INTER_AREA if p.shape[0] > size else cv2.INTER_LINEAR)


def _to_side(mask: np.ndarray, side: int) -> np.ndarray:
    """A mask from a canvas of another side (an angular-scale model's) onto the scoring canvas, by the rule that made
    the ground truth there: area average, then >= 0.5."""
    if mask.shape[0] == side:
        return mask
    return cv2.resize(mask.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA) >= 0.5


def evaluate_items(seg, items, targets, out_dir=None, title="", log=print, with_cldice=True) -> dict:
    """`items`: iterable of (id, image (S,S,3), fov (S,S), {target: gt bool}, {target: ignore bool}[, geometry]).

    With a sixth element (the canvas's `Geometry`) the ground truth and ignore masks are on the original image's
    grid, and the masks, field of view and probabilities are mapped back onto it before scoring."""
    per_image, accs, t_total, n, native = [], {}, 0.0, 0, None
    if hasattr(seg, "keep_probabilities"):
        seg.keep_probabilities = True  # AUPR needs the soft maps, not only the masks
    provided = [t for t in targets if t in seg.info.provides]
    for id_, image, fov, gts, ignores, *rest in items:
        geometry = rest[0] if rest else None
        if native is not None and native != (geometry is not None):
            raise ValueError("items mix canvas and native ground truth")
        native = geometry is not None
        t0 = time.perf_counter()
        masks = seg.segment(image[None], fov[None])[0]
        t_total += time.perf_counter() - t0
        n += 1
        row = {"id": id_}
        side = next(iter(gts.values())).shape[0] if gts else fov.shape[0]
        if native:  # the masks a user gets from `retsam segment`, on the photograph's grid
            masks = {t: mask_to_original(masks[t], geometry) for t in provided}
            fov = mask_to_original(fov, geometry)
        elif fov.shape[0] != side:  # an angular-scale model's canvas: scored on the ground truth's
            masks = {t: _to_side(m, side) for t, m in masks.items()}
            fov = cv2.resize(fov.astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST).astype(bool)
        for t in provided:
            gt = gts[t]
            valid = fov | gt
            if t in ignores:
                valid = valid & ~ignores[t]
            row[t] = _image_metrics(masks[t], gt, valid, t, with_cldice)
            if t in LESION_TARGETS:
                p = _probs_for(seg, t, gt.shape[0], geometry)
                if p is not None:
                    accs.setdefault(t, PRAccumulator()).add(p, gt, valid)
        per_image.append(row)
        log(f"  {title} {id_}: " + " ".join(f"{t}={row[t]['dsc']:.3f}" for t in provided))
    agg = {}
    for t in provided:
        rows = [r[t] for r in per_image]
        a = {k: _nanmean([r[k] for r in rows]) for k in ("dsc", "iou", "sensitivity", "specificity")}
        if t in VESSEL_LIKE and with_cldice:
            a["cldice"] = _nanmean([r["cldice"] for r in rows])
        if t in LESION_TARGETS:
            present = [r for r in rows if r["gt_pixels"] > 0]
            a["dsc_present"] = _nanmean([r["dsc"] for r in present])
            a["images_with_lesion"] = len(present)
            a["false_positive_images"] = sum(1 for r in rows if r["gt_pixels"] == 0 and r["pred_pixels"] > 0)
            if t in accs:
                a["aupr"] = accs[t].aupr()
        a["images"] = len(rows)
        agg[t] = a
    result = {
        "title": title,
        "segmenter": {"name": seg.info.name, "version": seg.info.version, "weights_hash": seg.info.weights_hash,
                      "resolution": seg.info.resolution, "provides": list(seg.info.provides)},
        "resolution": "native" if native else "canvas",
        "targets_evaluated": provided,
        "targets_not_provided": [t for t in targets if t not in provided],
        "seconds_per_image": t_total / max(n, 1),
        "aggregate": agg,
        "per_image": per_image,
    }
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result, indent=1, allow_nan=True))
        (out / "metrics.md").write_text(markdown_table(result))
    return result


def dataset_items(dataset, split, size=1024, cache_dir="runs/cache", root=None, limit=None, model_side=None,
                  resolution="canvas"):
    """Yield evaluation items from the canvas cache (built on first use, exactly like the pipeline). Ground truth is
    on the `size` canvas, or with resolution "native" the dataset's own label files with the canvas geometry as a
    sixth element; `model_side` (an angular-scale model's canvas for this camera) cuts the image again from the
    original at that side over the same box, so that every model is scored on the same pixels."""
    _check_resolution(resolution)
    r = get_reader(dataset, root)
    for id_ in r.ids(split)[:limit] if limit else r.ids(split):
        p = cache_path(cache_dir, size, r.name, split, id_)
        if not p.exists():
            build_one(r, split, id_, size, p)
        d = load_cached(p)
        gts = {k[2:]: v >= 128 for k, v in d.items() if k.startswith("m_")}
        ign = {k[2:]: v.astype(bool) for k, v in d.items() if k.startswith("i_")}
        image, fov, geometry = d["image"], d["fov"], Geometry.from_dict(d["meta"]["geometry"])
        if model_side and model_side != size:
            image, fov = _model_canvas(r.image_path(split, id_), geometry, model_side)
        if resolution == "native":
            s = r.load(split, id_)
            yield id_, image, fov, s.masks, s.ignore, geometry
        else:
            yield id_, image, fov, gts, ign


def _check_resolution(resolution: str) -> None:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, not {resolution!r}")


def folder_items(images_dir, masks_dir, target, size=1024, threshold=128, model_side=None, resolution="canvas"):
    """Pairs by file stem: a mask pairs with the image whose stem it starts with (e.g. X.jpg <-> X_mask.png).
    Ground truth on the `size` canvas, or as given with resolution "native"; `model_side`: the image cut again at
    that side (see `dataset_items`)."""
    from PIL import Image

    _check_resolution(resolution)
    imgs = sorted(p for p in Path(images_dir).iterdir() if p.is_file() and not p.name.startswith("."))
    masks = sorted(p for p in Path(masks_dir).iterdir() if p.is_file() and not p.name.startswith("."))
    for ip in imgs:
        cands = [m for m in masks if m.stem == ip.stem] or [m for m in masks if m.stem.startswith(ip.stem)]
        if not cands:
            continue
        pre = load_canvas(ip, size)
        arr = np.asarray(Image.open(cands[0]))
        if arr.ndim == 3:
            arr = arr.max(axis=2)
        gt = arr >= (threshold if arr.dtype != bool and arr.max() > 1 else 1)
        image, fov = _model_canvas(ip, pre.geometry, model_side) if model_side and model_side != size else (pre.image, pre.fov)
        if resolution == "native":
            if gt.shape != (pre.geometry.original_height, pre.geometry.original_width):
                raise ValueError(f"{cands[0].name}: mask {gt.shape[1]}x{gt.shape[0]} is not the size of {ip.name} "
                                 f"({pre.geometry.original_width}x{pre.geometry.original_height})")
            yield ip.stem, image, fov, {target: gt}, {}, pre.geometry
        else:
            yield ip.stem, image, fov, {target: label_to_canvas(gt, pre.geometry) >= 0.5}, {}


def _model_canvas(image_path, geometry, side: int):
    """The image under `geometry`'s box, cut again from the original at `side` (an angular-scale model's canvas)."""
    dec = decode_image(Path(image_path).read_bytes(), DecodeLimits(target_side=side))
    return canvas_from_geometry(dec.rgb, geometry, side, dec.decode_scale)


def evaluate_dataset(seg, dataset, split="test", out_dir=None, size=1024, cache_dir="runs/cache", root=None, limit=None, log=print,
                     with_cldice=True, resolution="canvas"):
    r = get_reader(dataset, root)
    side = seg.info.canvas_side(r.field_angle_deg, size)
    items = dataset_items(dataset, split, size, cache_dir, root, limit, side, resolution)
    title = f"{r.name}/{split}" + (" (native resolution)" if resolution == "native" else "")
    return evaluate_items(seg, items, list(r.annotated), out_dir, title=title, log=log, with_cldice=with_cldice)


def _fmt(v, pct=False):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


_RESOLUTION_NOTE = {"canvas": "on the model canvas (ground truth mapped onto it)",
                    "native": "at native resolution (masks mapped back onto the photograph's grid)"}


def markdown_table(result: dict) -> str:
    seg = result["segmenter"]
    lines = [f"# {result['title']} — {seg['name']} v{seg['version']}", "",
             f"Segmenter hash `{seg['weights_hash'][:12] or '-'}`, {result['seconds_per_image']:.2f} s/image (incl. resize). "
             f"Scored {_RESOLUTION_NOTE[result.get('resolution', 'canvas')]}.", "",
             "| target | images | DSC | DSC (lesion present) | IoU | sensitivity | specificity | clDice | AUPR |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t, a in result["aggregate"].items():
        lines.append(f"| {t} | {a['images']} | {_fmt(a['dsc'])} | {_fmt(a.get('dsc_present'))} | {_fmt(a['iou'])} | "
                     f"{_fmt(a['sensitivity'])} | {_fmt(a['specificity'])} | {_fmt(a.get('cldice'))} | {_fmt(a.get('aupr'))} |")
    if result["targets_not_provided"]:
        lines += ["", f"Not provided by this segmenter (not evaluated): {', '.join(result['targets_not_provided'])}."]
    return "\n".join(lines) + "\n"
