"""Decode one compressed image into RGB uint8, or fail with a message a person can act on.

Every failure mode seen in real cohorts (empty, truncated, non-image, grayscale, 16-bit, RGBA, tiny, huge) is
classified here, for ordinary image files and DICOM (`dicom_io`) alike, so that the pipeline can turn it into a
row instead of losing the batch.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from retsam_core.dicom_io import baseline_jpeg_frame, dicom_pixels, is_dicom, read_dicom
from retsam_core.errors import ImageError, UngradableImage

Image.MAX_IMAGE_PIXELS = None  # we enforce our own limit below, with a clear message


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds that keep one pathological file from exhausting a worker."""

    min_side: int = 64
    max_pixels: int = 120_000_000  # 8000x6000 (48 MP) passes; a 20k x 20k scan does not
    target_side: int | None = None  # decode JPEGs at reduced size (DCT scaling) when this is far smaller


@dataclass
class DecodedImage:
    """RGB pixels plus what a downstream step must know about how they were obtained."""

    rgb: np.ndarray  # (h, w, 3) uint8, possibly reduced by `decode_scale`
    original_height: int
    original_width: int
    decode_scale: float  # original pixels per decoded pixel (1.0 unless JPEG draft decoding shrank it)
    format: str
    warnings: list[str] = field(default_factory=list)
    header: dict = field(default_factory=dict)  # facts a file header states (DICOM: eye, pixel spacing, camera)


def decode_image(data: bytes, limits: DecodeLimits = DecodeLimits()) -> DecodedImage:
    """Decode `data` or raise ImageError / UngradableImage with a specific reason."""
    if data is None or len(data) == 0:
        raise ImageError("empty file (0 bytes)")
    if is_dicom(data):
        return _decode_dicom(data, limits)
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"not an image: unrecognised format ({len(data)} bytes, starts {data[:8]!r})") from None
    except Exception as exc:  # PIL raises many types on garbage headers
        raise ImageError(f"not an image: {type(exc).__name__}: {exc}") from None
    width, height = img.size
    fmt = img.format or "unknown"
    if min(width, height) < limits.min_side:
        raise ImageError(f"image too small: {width}x{height} px (minimum side {limits.min_side} px)")
    if width * height > limits.max_pixels:
        raise ImageError(
            f"image too large: {width}x{height} px = {width * height / 1e6:.0f} MP (limit {limits.max_pixels / 1e6:.0f} MP)"
        )
    notes: list[str] = ["16-bit PNG reduced to 8 bits"] if _is_16bit_png(data) else []
    frames = _frame_count(img)
    if frames > 1:  # a multi-page TIFF (a stereo pair, a montage), an animated GIF: say which one was measured
        notes.append(f"multi-frame {fmt} ({frames} frames): the first frame used")
    # MPO: a JPEG with more pictures appended (phones, stereo cameras); its first picture is a JPEG like any other
    if fmt in ("JPEG", "MPO") and limits.target_side and img.mode in ("RGB", "YCbCr", "CMYK", "L"):
        img.draft(img.mode, (max(limits.target_side, 1), max(limits.target_side, 1)))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
    except OSError as exc:
        raise ImageError(f"corrupt or truncated {fmt} file: {exc}") from None
    except Exception as exc:
        raise ImageError(f"cannot decode {fmt} file: {type(exc).__name__}: {exc}") from None
    img, width, height = _upright(img, width, height, notes)
    rgb = _to_rgb8(img, notes)
    scale = width / rgb.shape[1]
    return DecodedImage(rgb, height, width, float(scale), fmt, notes)


def _decode_dicom(data: bytes, limits: DecodeLimits) -> DecodedImage:
    """A JPEG Baseline DICOM's JPEG stream goes through the JPEG path (draft scaling, same pixels as the file would
    give); other transfer syntaxes through pydicom."""
    f = read_dicom(data, limits.min_side, limits.max_pixels)
    jpeg = baseline_jpeg_frame(f)
    if jpeg is not None:
        try:
            dec = decode_image(jpeg, limits)
        except ImageError as exc:
            raise type(exc)(f"{f.format}: {exc}") from None
        return replace(dec, format=f.format, warnings=f.notes + dec.warnings, header=f.header)
    rgb = dicom_pixels(f)
    _refuse_grayscale_content(rgb)
    return DecodedImage(rgb, rgb.shape[0], rgb.shape[1], 1.0, f.format, f.notes, f.header)


def _frame_count(img: Image.Image) -> int:
    try:
        return int(getattr(img, "n_frames", 1) or 1)
    except Exception:  # counting walks the file; a damaged later frame must not cost the first one
        return 1


# EXIF orientation tag -> what a viewer does to show the stored pixels upright
_ORIENTATIONS = {2: "mirrored", 3: "rotated 180°", 4: "flipped vertically", 5: "transposed",
                 6: "rotated 90° clockwise", 7: "transversed", 8: "rotated 90° counter-clockwise"}


def _upright(img: Image.Image, width: int, height: int, notes: list[str]) -> tuple[Image.Image, int, int]:
    """Apply the EXIF orientation, so masks, laterality and quadrants refer to the photograph as viewers show it.

    Why: a camera or export tool that stores the sensor's pixels with an orientation tag would otherwise be read
    sideways or mirrored, which moves the disc to the wrong side (laterality) and swaps superior/inferior.
    Returns the image and the original width/height in that upright frame.
    """
    try:
        orientation = img.getexif().get(0x0112)
    except Exception:  # a malformed EXIF block must not cost the image
        return img, width, height
    if orientation not in _ORIENTATIONS:
        return img, width, height
    try:
        img = ImageOps.exif_transpose(img)
    except Exception as exc:  # noqa: BLE001 - the stored pixels are still a photograph
        notes.append(f"EXIF orientation {orientation} could not be applied ({type(exc).__name__}): stored pixels used")
        return img, width, height
    notes.append(f"EXIF orientation {orientation} applied ({_ORIENTATIONS[orientation]})")
    return (img, height, width) if orientation >= 5 else (img, width, height)


def _to_rgb8(img: Image.Image, notes: list[str]) -> np.ndarray:
    """Convert any PIL mode to RGB uint8; grayscale cannot carry a colour fundus and is refused."""
    mode = img.mode
    if mode in ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "F", "P") and not _palette_is_colour(img):
        raise UngradableImage(f"grayscale image (mode {mode}): a colour fundus photograph is required")
    if mode.startswith("I;16") or mode in ("I", "F"):
        raise UngradableImage(f"grayscale image (mode {mode}): a colour fundus photograph is required")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        notes.append(f"alpha channel dropped (mode {mode})")
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    if mode not in ("RGB",):
        img = img.convert("RGB")
    arr = np.asarray(img)
    if arr.dtype != np.uint8:  # 16-bit per channel variants
        notes.append(f"{arr.dtype} pixels rescaled to 8 bits")
        arr = (arr.astype(np.float32) / float(np.iinfo(arr.dtype).max) * 255.0 + 0.5).astype(np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageError(f"unexpected pixel layout {arr.shape}")
    _refuse_grayscale_content(arr)
    return np.ascontiguousarray(arr)


def _palette_is_colour(img: Image.Image) -> bool:
    if img.mode != "P":
        return False
    pal = np.asarray(img.getpalette() or [0, 0, 0], dtype=np.int16).reshape(-1, 3)
    return bool(np.any(pal[:, 0] != pal[:, 1]) or np.any(pal[:, 1] != pal[:, 2]))


def _refuse_grayscale_content(arr: np.ndarray) -> None:
    if _looks_grayscale(arr):
        raise UngradableImage("grayscale content stored as RGB (all channels equal): colour fundus required")


def _looks_grayscale(arr: np.ndarray) -> bool:
    sample = arr[:: max(1, arr.shape[0] // 64), :: max(1, arr.shape[1] // 64)].astype(np.int16)
    return bool(np.abs(sample[..., 0] - sample[..., 1]).max() <= 2 and np.abs(sample[..., 1] - sample[..., 2]).max() <= 2)


def _is_16bit_png(data: bytes) -> bool:
    """True when `data` is a PNG with 16 bits per sample (PIL silently reduces 48-bit RGB to 8 bits)."""
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25 and data[24] == 16
