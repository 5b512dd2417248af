"""Write a photograph as a DICOM Ophthalmic Photography file, as screening archives export them.

Why: the demo cohort and the decode tests need real DICOM files (JPEG Baseline in YBR_FULL_422, JPEG 2000,
RLE Lossless, uncompressed, grayscale red-free) made from the real photograph; no public fundus DICOM is in the
data here.
"""

from __future__ import annotations

import io

import numpy as np

OP_8BIT_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.5.1"  # Ophthalmic Photography 8 Bit Image Storage


def dicom_photograph(pixels: np.ndarray, *, compression: str = "jpeg", laterality: str | None = "R",
                     mm_per_px: float | tuple[float, float] | None = None, fov_deg: float | None = 45.0,
                     device: tuple[str, str] = ("RetSAM demo", "skimage retina"), frames: int = 1) -> bytes:
    """`pixels` (h, w, 3) RGB or (h, w) grayscale uint8 as a Part-10 DICOM file.

    compression: "jpeg" (JPEG Baseline, YBR_FULL_422, as most fundus cameras export), "j2k" (lossless JPEG 2000),
    "rle" (RLE Lossless) or "raw" (explicit VR little endian). `mm_per_px` may be (row, column) spacing; `frames`
    repeats the image."""
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, ExplicitVRLittleEndian, RLELossless, generate_uid

    colour = pixels.ndim == 3
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = OP_8BIT_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality = "OP"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if colour:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if laterality:
        ds.ImageLaterality = laterality
    if mm_per_px is not None:
        ds.PixelSpacing = list(mm_per_px) if isinstance(mm_per_px, tuple) else [mm_per_px, mm_per_px]
    if fov_deg is not None:
        ds.HorizontalFieldOfView = fov_deg
    ds.Manufacturer, ds.ManufacturerModelName = device
    stack = np.ascontiguousarray(np.stack([pixels] * frames) if frames > 1 else pixels)
    if compression in ("jpeg", "j2k"):
        fragments = []
        for frame in (stack if frames > 1 else [stack]):
            buf = io.BytesIO()
            if compression == "jpeg":
                Image.fromarray(frame).save(buf, format="JPEG", quality=92)
            else:  # lossless JPEG 2000 codestream, colour through the reversible transform
                Image.fromarray(frame).save(buf, format="JPEG2000", irreversible=False, no_jp2=True, mct=int(colour))
            fragments.append(buf.getvalue())
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit if compression == "jpeg" else JPEG2000Lossless
        ds.PhotometricInterpretation = ("MONOCHROME2" if not colour else
                                        "YBR_FULL_422" if compression == "jpeg" else "YBR_RCT")
        ds.PixelData = encapsulate(fragments)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    elif compression == "rle":
        ds.PixelData = stack.tobytes()
        ds.compress(RLELossless, stack)
    elif compression == "raw":
        ds.PixelData = stack.tobytes()
    else:
        raise ValueError(f"compression must be jpeg, j2k, rle or raw, not {compression!r}")
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
