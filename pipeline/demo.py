"""The bundled demo cohort, generated at run time from a real fundus photograph (`skimage.data.retina()`).

Good images: the photograph and derived variants (flips, rescales, crops, rotations, JPEG at several qualities,
lossless PNG, a JPEG Baseline DICOM whose header gives the eye and the pixel spacing). Bad files, one per failure
mode seen in real cohorts: empty, truncated JPEG, non-image text, grayscale, a red-free (monochrome) DICOM, 16-bit
PNG, RGBA PNG, a JPEG stored sideways with an EXIF orientation tag, tiny, huge (8000x6000) and an all-black frame
with no field of view.
A manifest (CSV) lists every file with participant/eye/visit/site/device metadata; its eye is the photograph's,
except for one file labelled the wrong eye on purpose (`MISLABELLED_EYE`); one file is a byte-for-byte copy of
another, re-sent under a new name and attached to another participant (`DUPLICATE_FILE`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.dicom_writer import dicom_photograph

# expected outcome per bad file: (status, words the error/warning must contain)
EXPECTED_BAD = {
    "bad_empty.jpg": ("error", "empty"),
    "bad_truncated.jpg": ("error", "truncated"),
    "bad_not_an_image.jpg": ("error", "not an image"),
    "bad_grayscale.png": ("ungradable", "grayscale"),
    "bad_tiny.jpg": ("error", "too small"),
    "bad_black_no_fov.png": ("ungradable", "no field of view"),
    "bad_red_free.dcm": ("ungradable", "grayscale DICOM"),
}
EXPECTED_WARN = {
    "odd_16bit.png": ("ok", "16-bit"),
    "odd_rgba.png": ("ok", "alpha"),
    "odd_huge_8000x6000.jpg": ("ok", ""),
    "odd_exif_rot90.jpg": ("ok", "EXIF orientation 6"),  # read upright: the same photograph as retina_wide_frame.jpg
}


DEMO_FIELD_MM = 14.0  # the original photograph: a 45 degree field of ~14 mm across its 1411 px


MISLABELLED_EYE = "retina_q25.jpg"  # the manifest names the wrong eye: the report's laterality check finds it
DUPLICATE_FILE = ("retina_resent.jpg", "retina_q75.jpg")  # (copy, original): the report's duplicate check finds it


def demo_eye(name: str) -> str:
    """The manifest's eye: skimage's photograph is a left eye (OS), its mirror image a right eye (OD)."""
    right = "hflip" in name
    return "OD" if right != (name == MISLABELLED_EYE) else "OS"


@dataclass
class DemoCohort:
    root: Path
    input_dir: Path
    manifest: Path
    good: list[str]
    bad: list[str]


def _retina(side: int | None) -> np.ndarray:
    from skimage import data

    rgb = data.retina()  # (1411, 1411, 3) uint8, a real colour fundus photograph
    if side and side != rgb.shape[0]:
        rgb = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)
    return rgb


def _jpeg(rgb: np.ndarray, q: int = 92) -> bytes:
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    assert ok
    return buf.tobytes()


def jpeg_with_orientation(stored: np.ndarray, orientation: int, q: int = 92) -> bytes:
    """`stored` (RGB) as a JPEG whose EXIF orientation tag tells a viewer how to turn it upright."""
    from io import BytesIO

    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = BytesIO()
    Image.fromarray(np.ascontiguousarray(stored)).save(buf, format="JPEG", quality=q, exif=exif.tobytes())
    return buf.getvalue()


def _wide_frame(base: np.ndarray) -> np.ndarray:
    """The photograph in a 4:3-ish camera frame (black margins left and right)."""
    s = base.shape[0]
    return cv2.copyMakeBorder(base, 0, 0, s // 5, s // 5, cv2.BORDER_CONSTANT, value=0)


def _png(arr: np.ndarray) -> bytes:
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[..., ::-1]
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., [2, 1, 0, 3]]
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def good_variants(side: int | None = None) -> dict[str, bytes]:
    """~14 plausible fundus photographs derived from the one real photograph."""
    base = _retina(side)
    s = base.shape[0]
    rot = cv2.warpAffine(base, cv2.getRotationMatrix2D((s / 2, s / 2), 12, 1.0), (s, s))
    crop = base[int(0.1 * s): int(0.9 * s), :]  # field of view cut at top and bottom (macula-style framing)
    wide = _wide_frame(base)
    dark = np.clip(base.astype(np.float32) * 0.7, 0, 255).astype(np.uint8)
    out = {
        "retina_q95.jpg": _jpeg(base, 95),
        "retina_q75.jpg": _jpeg(base, 75),
        "retina_q50.jpg": _jpeg(base, 50),
        "retina_q25.jpg": _jpeg(base, 25),
        "retina_lossless.png": _png(base),
        "retina_hflip.jpg": _jpeg(base[:, ::-1]),
        "retina_vflip.jpg": _jpeg(base[::-1]),
        "retina_rot12.jpg": _jpeg(rot),
        "retina_crop_tb.jpg": _jpeg(crop),
        "retina_wide_frame.jpg": _jpeg(wide),
        "retina_dark.jpg": _jpeg(dark),
        "retina_half.jpg": _jpeg(cv2.resize(base, (s // 2, s // 2), interpolation=cv2.INTER_AREA)),
        "retina_x0.75.jpg": _jpeg(cv2.resize(base, (int(s * 0.75),) * 2, interpolation=cv2.INTER_AREA)),
        "retina_x1.5.jpg": _jpeg(cv2.resize(base, (int(s * 1.5),) * 2, interpolation=cv2.INTER_CUBIC)),
        # as a screening archive exports it: JPEG Baseline DICOM whose header gives the eye and the pixel spacing
        "retina_op.dcm": dicom_photograph(base, laterality="L", mm_per_px=DEMO_FIELD_MM / s),
        # a lossless DICOM from a narrower (30 degree) camera with no pixel spacing: scaled from its field of view
        "retina_op_fov30.dcm": dicom_photograph(base, compression="rle", laterality="L", fov_deg=30.0),
    }
    copy, original = DUPLICATE_FILE
    out[copy] = out[original]  # the same bytes again: counts twice, and under another participant (manifest)
    return out


def bad_files(side: int | None = None, huge: bool = True) -> dict[str, bytes]:
    base = _retina(side)
    full = _jpeg(base)
    gray = cv2.cvtColor(base, cv2.COLOR_RGB2GRAY)
    rgb16 = (base.astype(np.uint16) * 257)
    rgba = np.dstack([base, np.full(base.shape[:2], 255, np.uint8)])
    out = {
        "bad_empty.jpg": b"",
        "bad_truncated.jpg": full[: len(full) * 2 // 5],
        "bad_not_an_image.jpg": b"participant,eye\nP001,OD\nThis is a CSV export, not a photograph.\n" * 4,
        "bad_grayscale.png": _png(gray),
        "bad_tiny.jpg": _jpeg(cv2.resize(base, (32, 32), interpolation=cv2.INTER_AREA)),
        # a dark frame (lens cap / failed flash): sensor noise only, no field of view
        "bad_black_no_fov.png": _png(np.random.default_rng(0).integers(0, 10, base.shape, dtype=np.uint8)),
        "odd_16bit.png": _png(rgb16),
        "odd_rgba.png": _png(rgba),
        "odd_exif_rot90.jpg": jpeg_with_orientation(np.rot90(_wide_frame(base)), 6),  # a quarter turn off, tag 6
        "bad_red_free.dcm": dicom_photograph(gray, compression="raw"),  # a red-free (monochrome) DICOM
    }
    if huge:
        big = cv2.resize(_retina(None), (6000, 6000), interpolation=cv2.INTER_LINEAR)
        big = cv2.copyMakeBorder(big, 0, 0, 1000, 1000, cv2.BORDER_CONSTANT, value=0)  # 8000 x 6000
        out["odd_huge_8000x6000.jpg"] = _jpeg(big, 85)
    return out


def build_demo(root: str | Path, side: int | None = None, huge: bool = True, manifest_mm_per_px: bool = True) -> DemoCohort:
    """Write the demo cohort to ROOT/input (+ ROOT/input/manifest.csv). `side` downsizes the base photograph."""
    root = Path(root)
    inp = root / "input"
    inp.mkdir(parents=True, exist_ok=True)
    good = good_variants(side)
    bad = bad_files(side, huge=huge)
    rows = []
    for k, (name, data) in enumerate(sorted({**good, **bad}.items())):
        (inp / name).write_bytes(data)
        rows.append({
            "path": name,
            "participant_id": f"P{k // 2 + 1:03d}",
            "eye": demo_eye(name),
            "visit": "baseline" if k % 3 else "followup-1",
            "site": "demo-site-A" if k < 12 else "demo-site-B",
            "device": "skimage-retina",
            # the original photograph: a 45 degree field of ~14 mm across ~1400 px (scaled with the variant)
            "mm_per_px": ("" if not manifest_mm_per_px or not name.startswith("retina_q") else
                          f"{DEMO_FIELD_MM / (side or 1411):.6f}"),
        })
    manifest = inp / "manifest.csv"
    with manifest.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return DemoCohort(root, inp, manifest, sorted(good), sorted(bad))
