"""Decode a DICOM fundus photograph (Ophthalmic Photography, or any colour DICOM image) into RGB uint8.

Why: screening programmes and hospital archives export fundus photographs as DICOM (JPEG Baseline, JPEG 2000,
RLE or uncompressed), with the eye, the calibrated pixel spacing and the camera in the header. Those facts are
returned beside the pixels (`DecodedImage.header`); patient identifiers, names and dates are never read.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from retsam_core.errors import ImageError, UngradableImage

PREAMBLE_BYTES = 128  # a DICOM Part-10 file: 128-byte preamble, then b"DICM"
HEADER_FIELDS = ("dicom_laterality", "dicom_pixel_spacing_mm", "dicom_field_of_view_deg", "dicom_device",
                 "dicom_sop_instance_uid")
_LATERALITY = {"R": "right", "L": "left"}  # "B" (both) and "U" (unpaired) say nothing about one eye
_ISOTROPIC_TOLERANCE = 0.01  # row and column spacing within 1 %: one pixel size


def is_dicom(data: bytes) -> bool:
    return data is not None and len(data) >= PREAMBLE_BYTES + 4 and data[PREAMBLE_BYTES:PREAMBLE_BYTES + 4] == b"DICM"


@dataclass
class DicomFile:
    """A parsed DICOM file whose header passed the checks; the pixels are not decoded yet."""

    ds: Any  # pydicom Dataset
    format: str
    notes: list[str]
    header: dict[str, Any]


def read_dicom(data: bytes, min_side: int, max_pixels: int) -> DicomFile:
    """Parse the header and refuse what cannot be a colour photograph, before any pixel is decoded."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on a damaged header
        raise ImageError(f"corrupt DICOM header: {type(exc).__name__}: {exc}") from None
    syntax = _transfer_syntax(ds)
    if "PixelData" not in ds:
        raise ImageError(f"DICOM without pixel data (modality {ds.get('Modality', '?')}): not a photograph")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if min(rows, cols) < min_side:
        raise ImageError(f"image too small: {cols}x{rows} px (minimum side {min_side} px)")
    if rows * cols > max_pixels:
        raise ImageError(f"image too large: {cols}x{rows} px = {rows * cols / 1e6:.0f} MP "
                         f"(limit {max_pixels / 1e6:.0f} MP)")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if int(ds.get("SamplesPerPixel", 1) or 1) == 1 and photometric != "PALETTE COLOR":
        raise UngradableImage(f"grayscale DICOM ({photometric or 'one sample per pixel'}; red-free?): "
                              "a colour fundus photograph is required")
    notes: list[str] = []
    return DicomFile(ds, f"DICOM ({syntax})", notes, header_facts(ds, notes))


def baseline_jpeg_frame(f: DicomFile) -> bytes | None:
    """The JPEG stream of a single-frame JPEG Baseline colour file (what most fundus cameras export), so that it is
    decoded like a JPEG file, DCT draft scaling included; None for anything else."""
    from pydicom.encaps import generate_frames
    from pydicom.uid import JPEGBaseline8Bit

    ds = f.ds
    if (ds.file_meta.get("TransferSyntaxUID") != JPEGBaseline8Bit or int(ds.get("NumberOfFrames", 1) or 1) != 1
            or str(ds.get("PhotometricInterpretation", "")) not in ("YBR_FULL_422", "YBR_FULL")):
        return None
    try:
        return next(generate_frames(ds.PixelData, number_of_frames=1))
    except Exception:  # noqa: BLE001 - malformed encapsulation: let pydicom report it
        return None


def dicom_pixels(f: DicomFile) -> np.ndarray:
    """RGB uint8 pixels of the first frame, through pydicom's decoders."""
    ds = f.ds
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
            if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
                from pydicom.pixels import apply_color_lut

                arr = apply_color_lut(arr, ds)
    except Exception as exc:  # noqa: BLE001 - a missing codec or damaged fragments
        raise ImageError(f"cannot decode DICOM pixel data ({_transfer_syntax(ds)}): "
                         f"{type(exc).__name__}: {exc}") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[0]
        f.notes.append(f"multi-frame DICOM ({frames} frames): the first frame used")
    if arr.dtype != np.uint8:
        bits = int(ds.get("BitsStored", 8 * arr.dtype.itemsize) or 8)
        f.notes.append(f"{bits}-bit DICOM pixels rescaled to 8 bits")
        arr = (np.clip(arr.astype(np.float32) / float(2**bits - 1), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageError(f"unexpected DICOM pixel layout {arr.shape}")
    return np.ascontiguousarray(arr)


def header_facts(ds, notes: list[str]) -> dict[str, Any]:
    """The header fields the output records, each None when absent or unusable (with a note when unusable)."""
    side = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "").strip().upper()
    spacing = _pixel_spacing(ds, notes)
    fov = _positive_float(ds.get("HorizontalFieldOfView"))
    device = " ".join(str(ds.get(k, "") or "").strip() for k in ("Manufacturer", "ManufacturerModelName")).strip()
    uid = str(ds.get("SOPInstanceUID", "") or "").strip()
    return {"dicom_laterality": _LATERALITY.get(side), "dicom_pixel_spacing_mm": spacing,
            "dicom_field_of_view_deg": fov, "dicom_device": device or None, "dicom_sop_instance_uid": uid or None}


def _pixel_spacing(ds, notes: list[str]) -> float | None:
    """PixelSpacing (row, column) in mm as one size; anisotropic or malformed spacing is not used."""
    value = ds.get("PixelSpacing")
    if value is None:
        return None
    try:
        row, col = (float(v) for v in value)
    except (TypeError, ValueError):
        notes.append(f"DICOM PixelSpacing {value!r} unreadable: not used")
        return None
    if not (row > 0 and col > 0 and np.isfinite(row) and np.isfinite(col)):
        return None
    if abs(row - col) > _ISOTROPIC_TOLERANCE * max(row, col):
        notes.append(f"DICOM PixelSpacing {row:g} x {col:g} mm is not square: not used as the pixel size")
        return None
    return (row + col) / 2.0


def _positive_float(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v > 0 and np.isfinite(v) else None


def _transfer_syntax(ds) -> str:
    try:
        return str(ds.file_meta.TransferSyntaxUID.name)
    except Exception:  # noqa: BLE001
        return "unknown transfer syntax"
