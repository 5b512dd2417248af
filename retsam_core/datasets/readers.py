"""One reader per public dataset, plus the helper that maps a label onto the model canvas.

See the package docstring for the split conventions.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from PIL import Image

from retsam_core.preprocess import DEFAULT_FIELD_ANGLE_DEG, Geometry, _crop_padded

Image.MAX_IMAGE_PIXELS = None


@dataclass
class Sample:
    id: str
    image_path: Path
    masks: dict[str, np.ndarray]
    annotated: tuple[str, ...]
    ignore: dict[str, np.ndarray] = field(default_factory=dict)


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The shared datasets folder: explicit `root`, $RETSAM_DATA, or ../shared/data beside the checkout."""
    cands = [root] if root else []
    if os.environ.get("RETSAM_DATA"):
        cands.append(os.environ["RETSAM_DATA"])
    here = Path(__file__).resolve().parents[2]
    cands += [here.parent / "shared" / "data", Path("/work/shared/data")]
    for c in cands:
        if c and Path(c).is_dir():
            return Path(c)
    raise FileNotFoundError("shared datasets not found: pass --data-root or set RETSAM_DATA")


def _bin(path: Path, thr: int = 1) -> np.ndarray:
    arr = np.asarray(Image.open(path))
    if arr.ndim == 3:
        arr = arr[..., 0]
    if arr.dtype == bool:
        return arr
    return arr >= thr


def label_to_canvas(label: np.ndarray, geom: Geometry) -> np.ndarray:
    """Map an original-resolution label (H, W) bool/float onto the model canvas: float32 in [0, 1].

    Uses the same square box and the same interpolation rule as `preprocess` (area when shrinking, linear when
    enlarging), so labels stay pixel-aligned with the canvas image. Threshold at 0.5 for a binary mask.
    """
    assert label.shape[:2] == (geom.original_height, geom.original_width), (label.shape, geom)
    x0, y0, side = int(round(geom.box_x0)), int(round(geom.box_y0)), int(round(geom.box_side))
    crop = _crop_padded(label.astype(np.float32), x0, y0, side)
    interp = cv2.INTER_AREA if side > geom.size else cv2.INTER_LINEAR
    return np.clip(cv2.resize(crop, (geom.size, geom.size), interpolation=interp), 0.0, 1.0)


class Reader:
    name: str = ""
    annotated: tuple[str, ...] = ()
    licence: str = ""
    splits: tuple[str, ...] = ("train", "test")
    field_angle_deg: float = DEFAULT_FIELD_ANGLE_DEG  # the camera's field of view: with the canvas side, the canvas's pixels per degree

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = data_root(root) / self.folder

    folder: str = ""

    def ids(self, split: str) -> list[str]:
        raise NotImplementedError

    @staticmethod
    def healthy(id_: str) -> bool:
        """Whether the dataset says this eye has no retinopathy (its lesions are then known to be absent)."""
        return False

    @staticmethod
    def calibration_eye(id_: str) -> bool:
        """A healthy training eye of the fixed calibration half: with `hold_out_calibration_eyes` it is never a
        lesion negative in training, so the lesion operating points are chosen on eyes the heads never saw."""
        return False

    def image_path(self, split: str, id_: str) -> Path:
        """The photograph alone, without reading its masks (evaluation cuts canvases from it)."""
        return self.root / "images" / split / f"{id_}.jpg"

    def load(self, split: str, id_: str) -> Sample:
        raise NotImplementedError

    def __call__(self, split: str) -> Iterator[Sample]:
        for i in self.ids(split):
            yield self.load(split, i)


class ChaseDB1(Reader):
    """CHASE_DB1 vessels; ground truth = 1st human observer. train = children 01-10, test = 11-14."""

    name, folder = "chase_db1", "CHASE_DB1"
    field_angle_deg = 30.0  # Nidek NM-200-D (SOURCE.md)
    annotated = ("vessel",)
    licence = "public, attribution (reported CC BY 4.0, unverified); cite Fraz et al. 2012"

    def ids(self, split):
        return sorted(p.stem for p in (self.root / "images" / split).glob("*.jpg"))

    @staticmethod
    def healthy(id_):
        return True  # schoolchildren of the Child Heart and Health Study: no retinopathy

    @staticmethod
    def calibration_eye(id_):
        return 6 <= int(id_[6:8]) <= 10  # children 06-10 of the training children 01-10, both eyes

    def load(self, split, id_):
        m = _bin(self.root / "masks" / "vessel_1stHO" / split / f"{id_}_1stHO.png")
        return Sample(id_, self.image_path(split, id_), {"vessel": m}, self.annotated)


class HrfAV(Reader):
    """HRF-AV arteries/veins. lwnet protocol: test = images 01-05 of each group, train = 06-15.

    Colours: red = artery, blue = vein, green = unknown. vessel = any labelled pixel (incl. unknown);
    unknown-only pixels are ignored for the artery and vein channels. Anti-aliased colours are thresholded at > 127.
    """

    name, folder = "hrf_av", "HRF-AV"
    field_angle_deg = 45.0  # Canon CR-1 (SOURCE.md)
    annotated = ("vessel", "artery", "vein")
    licence = "HRF: free for research, cite Budai 2013; HRF-AV label terms not found (likely Hemelings 2019)"

    def ids(self, split):
        out = []
        for p in sorted((self.root / "images").iterdir()):
            num = int(p.stem.split("_")[0])
            if (split == "test") == (num <= 5):
                out.append(p.stem)
        return out

    @staticmethod
    def healthy(id_):
        return id_.endswith("_h")  # HRF groups: _h healthy, _g glaucoma, _dr diabetic retinopathy

    @staticmethod
    def calibration_eye(id_):
        return id_.endswith("_h") and 11 <= int(id_.split("_")[0]) <= 15  # healthy training eyes 11-15 of 06-15

    def image_path(self, split, id_):
        return next(p for p in (self.root / "images").iterdir() if p.stem == id_)

    def load(self, split, id_):
        img = self.image_path(split, id_)
        av = np.asarray(Image.open(self.root / "masks" / "av" / f"{id_}_AVmanual.png").convert("RGB"))
        r, g, b = av[..., 0] > 127, av[..., 1] > 127, av[..., 2] > 127
        unknown = g & ~r & ~b
        masks = {"vessel": r | g | b, "artery": r, "vein": b}
        return Sample(id_, img, masks, self.annotated, {"artery": unknown, "vein": unknown})


class DrishtiGS1(Reader):
    """DRISHTI-GS1 disc/cup, official 50/51 split, majority (>= 128 of the soft map) ground truth."""

    name, folder = "drishti_gs1", "DRISHTI-GS1"
    field_angle_deg = 30.0  # OD-centred, 30 degree field (Sivaswamy et al. 2014; not in SOURCE.md)
    annotated = ("optic_disc", "optic_cup")
    licence = "research use; cite Sivaswamy 2014/2015"

    def ids(self, split):
        return sorted(p.stem for p in (self.root / "images" / split).glob("*.jpg"))

    def load(self, split, id_):
        d = _bin(self.root / "masks" / "disc" / split / f"{id_}_ODsegSoftmap.png", 128)
        c = _bin(self.root / "masks" / "cup" / split / f"{id_}_cupsegSoftmap.png", 128)
        return Sample(id_, self.image_path(split, id_), {"optic_disc": d, "optic_cup": c}, self.annotated)


class IDRiD(Reader):
    """IDRiD segmentation part A, official split (split.csv). A missing mask file = the lesion is absent."""

    name, folder = "idrid", "IDRiD"
    field_angle_deg = 50.0  # Kowa VX-10 alpha (SOURCE.md)
    annotated = ("microaneurysm", "hemorrhage", "hard_exudate", "soft_exudate", "optic_disc")
    licence = "CC BY 4.0; cite Porwal et al. 2018"
    CODES = {"microaneurysm": "MA", "hemorrhage": "HE", "hard_exudate": "EX", "soft_exudate": "SE", "optic_disc": "OD"}

    def ids(self, split):
        with open(self.root / "split.csv") as f:
            return [r["image"] for r in csv.DictReader(f) if r["split"] == split]

    def load(self, split, id_):
        img = self.image_path(split, id_)
        with Image.open(img) as im:
            w, h = im.size
        masks = {}
        for t, code in self.CODES.items():
            p = self.root / "masks" / code / split / f"{id_}_{code}.png"
            masks[t] = _bin(p) if p.exists() else np.zeros((h, w), bool)
        return Sample(id_, img, masks, self.annotated)


DATASETS: dict[str, type[Reader]] = {c.name: c for c in (ChaseDB1, HrfAV, DrishtiGS1, IDRiD)}


def get_reader(name: str, root=None) -> Reader:
    key = name.lower().replace("-", "_")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[key](root)
