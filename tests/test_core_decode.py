"""Decoding real and broken files: every failure is classified with a message, good variants decode."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from pipeline.demo import jpeg_with_orientation
from retsam_core.errors import STATUS_ERROR, STATUS_UNGRADABLE, ImageError
from retsam_core.image_io import DecodeLimits, decode_image


@pytest.fixture(scope="module")
def retina() -> np.ndarray:
    return skimage.data.retina()


def _jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _png(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def _status_of(data: bytes) -> tuple[str, str]:
    with pytest.raises(ImageError) as info:
        decode_image(data)
    return info.value.status, str(info.value)


def test_real_jpeg_decodes_to_rgb(retina):
    d = decode_image(_jpeg(retina))
    assert d.rgb.shape == retina.shape and d.rgb.dtype == np.uint8
    assert abs(float(d.rgb.mean()) - float(retina.mean())) < 2.0
    assert d.decode_scale == 1.0 and d.format == "JPEG" and d.warnings == []


def test_draft_decoding_shrinks_large_jpeg_and_records_scale(retina):
    big = cv2.resize(retina, (2822, 2822))
    d = decode_image(_jpeg(big), DecodeLimits(target_side=1024))
    assert d.original_width == 2822 and d.rgb.shape[1] < 2822
    assert d.rgb.shape[1] * d.decode_scale == pytest.approx(2822, rel=0.01)


def test_empty_file():
    status, msg = _status_of(b"")
    assert status == STATUS_ERROR and "empty" in msg


def test_truncated_jpeg(retina):
    data = _jpeg(retina)
    status, msg = _status_of(data[: len(data) // 2])
    assert status == STATUS_ERROR and "truncated" in msg


def test_text_file_is_not_an_image():
    status, msg = _status_of(b"participant_id,eye\n1,left\n")
    assert status == STATUS_ERROR and "not an image" in msg


def test_grayscale_is_ungradable(retina):
    gray = cv2.cvtColor(retina, cv2.COLOR_RGB2GRAY)
    status, msg = _status_of(_png(gray))
    assert status == STATUS_UNGRADABLE and "grayscale" in msg


def test_grayscale_stored_as_rgb_is_ungradable(retina):
    gray = cv2.cvtColor(retina, cv2.COLOR_RGB2GRAY)
    status, msg = _status_of(_jpeg(np.dstack([gray] * 3), quality=100))
    assert status == STATUS_UNGRADABLE and "grayscale" in msg


def test_16bit_gray_png_is_ungradable(retina):
    gray16 = cv2.cvtColor(retina, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    status, _ = _status_of(_png(gray16))
    assert status == STATUS_UNGRADABLE


def test_16bit_colour_png_decodes_with_a_note(retina):
    bgr16 = cv2.cvtColor(retina, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257
    d = decode_image(_png(bgr16))
    assert d.rgb.dtype == np.uint8
    assert np.abs(d.rgb.astype(int) - retina.astype(int)).max() <= 1
    assert any("16-bit" in w for w in d.warnings)


def test_rgba_png_drops_alpha_with_a_note(retina):
    bgra = cv2.cvtColor(retina, cv2.COLOR_RGB2BGRA)
    d = decode_image(_png(bgra))
    assert d.rgb.shape == retina.shape and np.array_equal(d.rgb, retina)
    assert any("alpha" in w for w in d.warnings)


def test_multi_page_tiff_uses_the_first_page_and_says_so(retina):
    """A TIFF holding two photographs (a stereo pair, a montage) gives its first page, with a warning naming the
    count; a one-page TIFF gives none."""
    first, second = Image.fromarray(retina), Image.fromarray(np.ascontiguousarray(retina[:, ::-1]))
    buf = io.BytesIO()
    first.save(buf, format="TIFF", save_all=True, append_images=[second])
    d = decode_image(buf.getvalue())
    assert np.array_equal(d.rgb, retina) and d.warnings == ["multi-frame TIFF (2 frames): the first frame used"]
    buf = io.BytesIO()
    first.save(buf, format="TIFF")
    assert decode_image(buf.getvalue()).warnings == []


def test_multi_picture_jpeg_is_draft_decoded_like_a_jpeg(retina):
    """An MPO file (a JPEG with a second picture appended, as phones and stereo cameras write) gives its first
    picture with the same DCT draft scaling and pixels as the plain JPEG, and names the extra picture."""
    big = Image.fromarray(retina).resize((2 * retina.shape[1], 2 * retina.shape[0]))
    mpo, jpeg = io.BytesIO(), io.BytesIO()
    big.save(mpo, format="MPO", quality=90, save_all=True, append_images=[Image.fromarray(retina[::4, ::4])])
    big.save(jpeg, format="JPEG", quality=90)
    limits = DecodeLimits(target_side=1024)
    m, j = decode_image(mpo.getvalue(), limits), decode_image(jpeg.getvalue(), limits)
    assert m.format == "MPO" and m.decode_scale == j.decode_scale == 2.0 and np.array_equal(m.rgb, j.rgb)
    assert m.warnings == ["multi-frame MPO (2 frames): the first frame used"] and j.warnings == []


def test_tiny_image(retina):
    status, msg = _status_of(_jpeg(cv2.resize(retina, (40, 40))))
    assert status == STATUS_ERROR and "too small" in msg


def test_huge_image_refused_by_limit_without_decoding():
    # A header-only check: the pixels are never decoded, so the test costs nothing.
    data = _png(np.zeros((900, 1200, 3), np.uint8))
    with pytest.raises(ImageError, match="too large"):
        decode_image(data, DecodeLimits(max_pixels=1_000_000))


def test_8000x6000_jpeg_is_accepted_and_draft_decoded(retina):
    huge = cv2.resize(retina, (8000, 6000), interpolation=cv2.INTER_NEAREST)
    d = decode_image(_jpeg(huge, 70), DecodeLimits(target_side=1024))
    assert (d.original_width, d.original_height) == (8000, 6000)
    assert max(d.rgb.shape[:2]) <= 2000


# what a camera stores so that a viewer applying the tag shows the upright photograph (inverse of the tag's transform)
_STORED_FOR = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("orientation", sorted(_STORED_FOR))
def test_exif_orientation_gives_the_upright_photograph(retina, orientation):
    upright = np.ascontiguousarray(retina[:, 80:1280])  # 1411 x 1200: not square, so a quarter turn shows in the dims
    stored = np.asarray(Image.fromarray(upright).transpose(_STORED_FOR[orientation]))
    d = decode_image(jpeg_with_orientation(stored, orientation))
    plain = decode_image(_jpeg(upright, 92))
    assert (d.original_height, d.original_width) == upright.shape[:2] and d.rgb.shape == upright.shape
    assert np.abs(d.rgb.astype(int) - plain.rgb.astype(int)).mean() < 2.0  # JPEG noise only
    assert any(f"EXIF orientation {orientation}" in w for w in d.warnings)
    assert not plain.warnings


def test_exif_quarter_turn_with_draft_decoding_keeps_the_scale_right(retina):
    upright = cv2.resize(retina, (2400, 2822))  # width 2400, height 2822
    stored = np.asarray(Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90))
    d = decode_image(jpeg_with_orientation(stored, 6, 80), DecodeLimits(target_side=1024))
    assert (d.original_width, d.original_height) == (2400, 2822)
    assert d.rgb.shape[0] > d.rgb.shape[1]  # portrait, as shown
    assert d.decode_scale == pytest.approx(2400 / d.rgb.shape[1]) and d.decode_scale > 1.0


def test_upright_exif_tag_adds_no_note(retina):
    d = decode_image(jpeg_with_orientation(retina, 1))
    assert not d.warnings and d.rgb.shape == retina.shape
