"""DICOM fundus photographs made from the real photograph: every transfer syntax the archives use decodes to the
same pixels, the header's eye / pixel spacing / camera come back, and every bad DICOM becomes a classified error."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pydicom
import pytest
import skimage.data
from PIL import Image

from pipeline.dicom_writer import dicom_photograph
from pipeline.listing import list_inputs
from retsam_core.errors import STATUS_ERROR, STATUS_UNGRADABLE, ImageError
from retsam_core.image_io import DecodeLimits, decode_image


@pytest.fixture(scope="module")
def retina() -> np.ndarray:
    return skimage.data.retina()


def _error(data: bytes, limits: DecodeLimits = DecodeLimits()) -> tuple[str, str]:
    with pytest.raises(ImageError) as info:
        decode_image(data, limits)
    return info.value.status, str(info.value)


def _jpeg_stream(dicom: bytes) -> bytes:
    return next(pydicom.encaps.generate_frames(pydicom.dcmread(io.BytesIO(dicom)).PixelData, number_of_frames=1))


@pytest.mark.parametrize("compression", ["j2k", "rle", "raw"])
def test_lossless_dicom_gives_the_photographs_pixels(retina, compression):
    dec = decode_image(dicom_photograph(retina, compression=compression))
    assert np.array_equal(dec.rgb, retina)
    assert (dec.original_height, dec.original_width, dec.decode_scale) == (1411, 1411, 1.0)
    assert dec.format.startswith("DICOM (") and dec.warnings == []


def test_jpeg_baseline_dicom_decodes_as_its_jpeg_stream_would(retina):
    """YBR_FULL_422 JPEG fragments (what fundus cameras export) come out RGB, pixel for pixel as that JPEG read as a
    file, with the same DCT draft scaling for a large photograph."""
    data = dicom_photograph(retina, compression="jpeg")
    fragment = _jpeg_stream(data)
    assert fragment[:2] == b"\xff\xd8"  # a real JPEG stream inside the DICOM
    dec = decode_image(data)
    assert "JPEG Baseline" in dec.format
    assert np.array_equal(dec.rgb, np.asarray(Image.open(io.BytesIO(fragment)).convert("RGB")))
    assert np.abs(dec.rgb.astype(float) - retina).mean() < 1.0  # and close to the photograph itself
    big = cv2.resize(retina, (2822, 2822), interpolation=cv2.INTER_LINEAR)
    limits = DecodeLimits(target_side=512)
    big_dicom = dicom_photograph(big, compression="jpeg")
    small, as_file = decode_image(big_dicom, limits), decode_image(_jpeg_stream(big_dicom), limits)
    assert (small.original_height, small.original_width) == (2822, 2822) and small.decode_scale > 1.5
    assert np.array_equal(small.rgb, as_file.rgb) and small.decode_scale == as_file.decode_scale


def test_header_facts_come_back_without_patient_identifiers(retina):
    data = dicom_photograph(retina, laterality="R", mm_per_px=0.0099, fov_deg=50.0, device=("Topcon", "TRC-NW8"))
    header = decode_image(data).header
    assert header["dicom_laterality"] == "right" and header["dicom_pixel_spacing_mm"] == pytest.approx(0.0099)
    assert header["dicom_field_of_view_deg"] == 50.0 and header["dicom_device"] == "Topcon TRC-NW8"
    assert header["dicom_sop_instance_uid"] == pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
    assert not any("patient" in k for k in header)
    bare = decode_image(dicom_photograph(retina, compression="raw", laterality=None, fov_deg=None)).header
    assert bare["dicom_laterality"] is None and bare["dicom_pixel_spacing_mm"] is None
    assert bare["dicom_field_of_view_deg"] is None
    assert decode_image(dicom_photograph(retina, compression="raw", laterality="B")).header["dicom_laterality"] is None
    series_level = pydicom.dcmread(io.BytesIO(dicom_photograph(retina, compression="raw", laterality=None)))
    series_level.Laterality = "L"  # some archives fill only the series-level attribute
    buf = io.BytesIO()
    series_level.save_as(buf)
    assert decode_image(buf.getvalue()).header["dicom_laterality"] == "left"


def test_non_square_pixel_spacing_is_not_taken_as_the_pixel_size(retina):
    dec = decode_image(dicom_photograph(retina, compression="raw", mm_per_px=(0.010, 0.012)))
    assert dec.header["dicom_pixel_spacing_mm"] is None
    assert any("not square" in w for w in dec.warnings)


def test_multi_frame_dicom_uses_the_first_frame_and_says_so(retina):
    dec = decode_image(dicom_photograph(retina[::2, ::2], compression="rle", frames=2))
    assert np.array_equal(dec.rgb, retina[::2, ::2]) and any("2 frames" in w for w in dec.warnings)


def test_red_free_dicom_is_ungradable(retina):
    gray = np.asarray(Image.fromarray(retina).convert("L"))
    for compression in ("raw", "jpeg"):
        status, msg = _error(dicom_photograph(gray, compression=compression))
        assert status == STATUS_UNGRADABLE and "grayscale DICOM" in msg and "MONOCHROME2" in msg


def test_bad_dicoms_become_errors_with_reasons(retina):
    data = dicom_photograph(retina, compression="jpeg")
    status, msg = _error(data[: len(data) * 3 // 5])  # cut inside the pixel data
    assert status == STATUS_ERROR and "DICOM" in msg
    status, msg = _error(data[:200])  # cut inside the header
    assert status == STATUS_ERROR and "DICOM" in msg
    ds = pydicom.dcmread(io.BytesIO(data))
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf)
    status, msg = _error(buf.getvalue())
    assert status == STATUS_ERROR and "without pixel data" in msg
    status, msg = _error(data, DecodeLimits(max_pixels=1_000_000))  # refused from the header, before decoding
    assert status == STATUS_ERROR and "too large" in msg and "1411x1411" in msg
    status, msg = _error(dicom_photograph(retina[:40, :40], compression="raw"))
    assert status == STATUS_ERROR and "too small" in msg


def test_a_folder_of_dicom_files_is_listed(retina, tmp_path):
    (tmp_path / "a.dcm").write_bytes(dicom_photograph(retina[::4, ::4], compression="raw"))
    (tmp_path / "b.DICOM").write_bytes(dicom_photograph(retina[::4, ::4], compression="raw"))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "IM000002").write_bytes(dicom_photograph(retina[::4, ::4], compression="raw"))
    listing = list_inputs(str(tmp_path))
    assert sorted(listing.table["image_id"].to_pylist()) == ["a.dcm", "b.DICOM"]
    # files without an image extension are not listed, but counted and named in the run's log line
    assert (listing.other_files, listing.other_example) == (2, "IM000002")
    assert "2 other files not listed" in listing.other_files_note() and "manifest" in listing.other_files_note()
    assert list_inputs(str(tmp_path / "*")).other_files == 2  # a glob says the same
