"""Training data: cached canvases at the model resolution, fundus-aware augmented patches, partial labels.

A record holds one image at the model resolution, its soft labels for the channels its dataset annotates (plus
any pseudo-labels), per-channel ignore masks and the set of annotated channels. The sampler draws a dataset
uniformly, then an image, then a patch centre (half the time on a positive pixel of an annotated channel, so
rare lesions are seen), and applies: rotation (any angle), scale, flips, colour gains, gamma, contrast,
brightness and blur. Pixels outside the field of view stay black, as at inference.
"""

from __future__ import annotations

import copy
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from retsam_core.datasets.cache import build_one, cache_path, load_cached
from retsam_core.datasets.readers import DATASETS, get_reader
from retsam_core.intensity import standardise_intensity
from retsam_core.model.network import MEAN, STD


@dataclass
class Record:
    dataset: str
    id: str
    image: np.ndarray  # (R, R, 3) uint8
    fov: np.ndarray  # (R, R) bool
    labels: dict[str, np.ndarray]  # channel -> (R, R) uint8 soft label 0..255
    ignore: dict[str, np.ndarray] = field(default_factory=dict)  # channel -> (R, R) bool
    pseudo: set[str] = field(default_factory=set)  # channels whose labels are pseudo-labels
    _pos: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def annotated(self) -> tuple[str, ...]:
        return tuple(self.labels)

    def positives(self, ch: str) -> np.ndarray:
        if ch not in self._pos:
            ys, xs = np.nonzero(self.labels[ch] >= 128)
            idx = np.random.default_rng(0).permutation(len(ys))[:4000]
            self._pos[ch] = np.stack([xs[idx], ys[idx]], 1)
        return self._pos[ch]


def resize_cached(d: dict, res: int) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    img, fov = d["image"], d["fov"]
    if img.shape[0] != res:
        img = cv2.resize(img, (res, res), interpolation=cv2.INTER_AREA if img.shape[0] > res else cv2.INTER_LINEAR)
        fov = cv2.resize(fov.astype(np.uint8), (res, res), interpolation=cv2.INTER_NEAREST).astype(bool)
    labels, ignore = {}, {}
    for k, v in d.items():
        if k.startswith("m_"):
            labels[k[2:]] = v if v.shape[0] == res else cv2.resize(v, (res, res), interpolation=cv2.INTER_AREA)
        elif k.startswith("i_"):
            ignore[k[2:]] = v if v.shape[0] == res else cv2.resize(v.astype(np.uint8), (res, res), interpolation=cv2.INTER_NEAREST).astype(bool)
    return img, fov, labels, ignore


def _cached_dicts(cache_dir, datasets, split, root, limit, cache_size, ids=None):
    for name in datasets:
        r = get_reader(name, root)
        want = [i for i in r.ids(split) if ids is None or i in ids]
        for id_ in want[:limit] if limit else want:
            p = cache_path(cache_dir, cache_size, r.name, split, id_)
            if not p.exists():
                build_one(r, split, id_, cache_size, p)
            yield r.name, id_, load_cached(p)


def load_records(cache_dir, datasets, split, res, root=None, limit=None, cache_size=1024, ids=None,
                 bundle_dir=None, standardise=False) -> list[Record]:
    """Records for `datasets`/`split` at resolution `res`: from a portable bundle when `bundle_dir` is given
    (see `datasets.bundle`), else from the canvas cache (built from the shared datasets on first use).
    `standardise`: images through `intensity.standardise_intensity`, as the model's inference will do."""
    if bundle_dir is not None:
        from retsam_core.datasets.bundle import read_bundle

        found = read_bundle(bundle_dir, datasets, split, limit, ids)
    else:
        found = _cached_dicts(cache_dir, datasets, split, root, limit, cache_size, ids)
    out = []
    for name, id_, d in found:
        img, fov, labels, ignore = resize_cached(d, res)
        if standardise:
            img = standardise_intensity(img, fov)
        out.append(Record(name, id_, img, fov, labels, ignore))
    return out


def add_healthy_negatives(records: list[Record], channels, hold_out_calibration: bool = False) -> int:
    """Lesion labels that are all background on eyes their dataset calls healthy (`Reader.healthy`): the only
    way the lesion decoders see normal vessels, the disc and the reflexes of healthy eyes as "no lesion".
    Curated, not pseudo: they come from the dataset's diagnosis. `hold_out_calibration`: the calibration half
    (`Reader.calibration_eye`) stays out, for choosing operating points. Returns the number of channels added."""
    n = 0
    for rec in records:
        reader = DATASETS.get(rec.dataset)
        if reader and reader.healthy(rec.id) and not (hold_out_calibration and reader.calibration_eye(rec.id)):
            for ch in channels:
                if ch not in rec.labels:
                    rec.labels[ch] = np.zeros(rec.fov.shape, np.uint8)
                    n += 1
    return n


@dataclass
class AugConfig:
    rotate: float = 180.0
    scale: tuple[float, float] = (0.8, 1.25)
    flip: bool = True
    gain: float = 0.12  # per-channel multiplicative colour jitter
    brightness: float = 0.10
    contrast: float = 0.2
    gamma: tuple[float, float] = (0.7, 1.4)
    blur_p: float = 0.25
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    fg_p: float = 0.5  # probability of centring a patch on a positive pixel


class PatchSampler:
    def __init__(self, records, channels, patch=320, batch=6, aug: AugConfig | None = None, seed=0,
                 dataset_weights: dict | None = None, pseudo_weight=0.5, channel_filter=None):
        self.records = records
        self.channels = tuple(channels)
        self.ci = {c: i for i, c in enumerate(self.channels)}
        self.patch, self.batch = patch, batch
        self.aug = aug or AugConfig()
        self.rng = np.random.default_rng(seed)
        self.by_ds: dict[str, list[Record]] = {}
        for r in records:
            self.by_ds.setdefault(r.dataset, []).append(r)
        self.ds_names = sorted(self.by_ds)
        w = np.array([(dataset_weights or {}).get(d, 1.0) for d in self.ds_names], float)
        self.ds_p = w / w.sum()
        self.pseudo_weight = pseudo_weight
        self.channel_filter = set(channel_filter) if channel_filter else None

    def trains(self, ch: str) -> bool:
        """Whether this sampler feeds channel `ch` to the loss (a model channel, inside the channel filter)."""
        return ch in self.ci and (self.channel_filter is None or ch in self.channel_filter)

    def trained_labels(self, rec: Record):
        """(channel index, soft label, loss weight 0..255, ignore mask or None) for each channel `rec` trains."""
        for ch, lab in rec.labels.items():
            if self.trains(ch):
                yield self.ci[ch], lab, round(255 * self.pseudo_weight) if ch in rec.pseudo else 255, rec.ignore.get(ch)

    def annotated_channels(self) -> set[str]:
        return {c for r in self.records for c in r.labels if self.trains(c)}

    def _centre(self, rec: Record):
        a, res = self.aug, rec.image.shape[0]
        chans = [c for c in rec.labels if c in self.ci and c not in rec.pseudo]
        if chans and self.rng.random() < a.fg_p:
            pos = rec.positives(chans[self.rng.integers(len(chans))])
            if len(pos):
                x, y = pos[self.rng.integers(len(pos))]
                return float(x) + self.rng.uniform(-self.patch / 3, self.patch / 3), float(y) + self.rng.uniform(-self.patch / 3, self.patch / 3)
        ys, xs = np.nonzero(rec.fov[::8, ::8])
        if len(ys) == 0:
            return res / 2, res / 2
        i = self.rng.integers(len(ys))
        return float(xs[i] * 8), float(ys[i] * 8)

    def draw_affine(self, rec: Record) -> np.ndarray:
        """A random patch geometry: (2, 3) map from canvas pixels to patch pixels (rotation, scale, flip)."""
        a, P, rng = self.aug, self.patch, self.rng
        cx, cy = self._centre(rec)
        M = cv2.getRotationMatrix2D((cx, cy), rng.uniform(-a.rotate, a.rotate), rng.uniform(*a.scale))
        M[:, 2] += (P / 2 - cx, P / 2 - cy)
        if a.flip and rng.random() < 0.5:
            M[0] = -M[0]
            M[0, 2] += P
        return M

    def _colour_luts(self, img: np.ndarray, fov: np.ndarray) -> np.ndarray:
        """Per-channel 256-entry tables for gain, contrast about the FOV mean, brightness and gamma: the same
        pointwise maps as float arithmetic, applied to uint8 in one `cv2.LUT` (10x faster per patch)."""
        a, rng = self.aug, self.rng
        gain = 1 + rng.uniform(-a.gain, a.gain, 3)
        mean = np.array(cv2.mean(img, mask=fov.astype(np.uint8))[:3]) / 255.0 * gain
        levels = np.arange(256, dtype=np.float64)[:, None] / 255.0 * gain[None]  # (256, 3)
        v = (levels - mean) * (1 + rng.uniform(-a.contrast, a.contrast)) + mean + rng.uniform(-a.brightness, a.brightness)
        v = np.clip(v, 0, 1) ** rng.uniform(*a.gamma)
        return np.round(v * 255).astype(np.uint8).T.reshape(3, 256)

    def sample_one(self, rec: Record):
        """One augmented patch: image (3, P, P) uint8 as the model sees it at inference (normalise after),
        labels (C, P, P) uint8 (0..255 soft), loss weights (C, P, P) uint8 (255 = 1.0) and annotated (C,)."""
        a, P, rng = self.aug, self.patch, self.rng
        M = self.draw_affine(rec)
        warp = lambda arr, interp: cv2.warpAffine(arr, M, (P, P), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        img = warp(rec.image, cv2.INTER_LINEAR)
        fov = warp(rec.fov.astype(np.uint8), cv2.INTER_NEAREST).astype(bool)
        luts = self._colour_luts(img, fov)
        img = cv2.merge([cv2.LUT(img[..., c], luts[c]) for c in range(3)])
        if rng.random() < a.blur_p:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(*a.blur_sigma))
        img[~fov] = 0
        C = len(self.channels)
        y = np.zeros((C, P, P), np.uint8)
        w = np.zeros((C, P, P), np.uint8)
        ann = np.zeros(C, bool)
        for i, lab, weight, ignore in self.trained_labels(rec):
            ann[i] = True
            y[i] = warp(lab, cv2.INTER_LINEAR)
            w[i] = weight
            if ignore is not None:
                w[i][warp(ignore.astype(np.uint8), cv2.INTER_NEAREST).astype(bool)] = 0
        return img.transpose(2, 0, 1), y, w, ann

    def next_batch(self):
        """uint8 `(x, y, w)` batches (a quarter of float32's bytes between processes); see `batch_to_float`."""
        xs, ys, ws, anns, dss = [], [], [], [], []
        for _ in range(self.batch):
            d = self.ds_names[self.rng.choice(len(self.ds_names), p=self.ds_p)]
            recs = self.by_ds[d]
            rec = recs[self.rng.integers(len(recs))]
            x, y, w, ann = self.sample_one(rec)
            xs.append(x), ys.append(y), ws.append(w), anns.append(ann), dss.append(d)
        t = lambda a: torch.from_numpy(np.ascontiguousarray(np.stack(a)))
        return t(xs), t(ys), t(ws), t(anns), dss


def batch_to_float(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor):
    """uint8 batch (on any device) -> normalised float image, soft labels in [0, 1], loss weights in [0, 1]."""
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std, y.float() / 255.0, w.float() / 255.0


def records_summary(records) -> dict:
    out = {}
    for r in records:
        e = out.setdefault(r.dataset, {"images": 0, "channels": set()})
        e["images"] += 1
        e["channels"] |= set(r.labels)
    return {k: {"images": v["images"], "channels": sorted(v["channels"])} for k, v in out.items()}


def _thread_sampler(sampler: PatchSampler, k: int) -> PatchSampler:
    """A copy of `sampler` with its own random stream, sharing the (read-only) records."""
    twin = copy.copy(sampler)
    twin.rng = np.random.default_rng(int(sampler.rng.integers(1 << 31)) + 7919 * k)
    return twin


def batch_stream(sampler: PatchSampler, workers: int = 0):
    """Endless `(x, y, w, ann, datasets)` batches: in-process, or cut by `workers` threads, several batches ahead
    (a GPU step is faster than one core can cut patches). Threads, not processes: OpenCV's warps and numpy's
    copies release the GIL, and no batch has to cross a process boundary."""
    if workers <= 0:
        yield from iter(sampler.next_batch, None)
        return
    cv2.setNumThreads(1)  # parallelism comes from the threads
    twins = [_thread_sampler(sampler, k) for k in range(workers)]
    with ThreadPoolExecutor(workers, thread_name_prefix="patches") as pool:
        pending = deque(pool.submit(t.next_batch) for t in twins)
        k = 0
        while True:
            batch = pending.popleft().result()
            pending.append(pool.submit(twins[k % workers].next_batch))
            k += 1
            yield batch
