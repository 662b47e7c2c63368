"""Decoding: every awkward file becomes an upright BGR image or a status, never a crash."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
from images import (
    cmyk_jpeg,
    encode,
    exif_rotated_jpeg,
    huge_png,
    pillow_bytes,
    png16,
    portrait,
    rgba_png,
)
from PIL import Image

from facevalue.decode import (
    EMPTY,
    TOO_LARGE,
    UNREADABLE,
    DecodeError,
    decode,
    image_size,
)


def status_of(data: bytes, **kwargs: int) -> str:
    with pytest.raises(DecodeError) as error:
        decode(data, **kwargs)
    return error.value.status


def test_plain_jpeg_decodes_at_full_size() -> None:
    image = portrait()
    decoded = decode(encode(image))
    assert decoded.image.shape == (600, 512, 3) and decoded.image.dtype == np.uint8
    assert (decoded.height, decoded.width) == (600, 512)
    assert decoded.scale == (1.0, 1.0)
    assert np.abs(decoded.image.astype(int) - image).mean() < 3


def test_exif_orientation_is_applied() -> None:
    image = portrait()
    decoded = decode(exif_rotated_jpeg(image))
    assert decoded.image.shape == (600, 512, 3)  # upright, not the stored 512 x 600
    assert np.abs(decoded.image.astype(int) - image).mean() < 4


def test_cmyk_jpeg_keeps_its_colours() -> None:
    image = portrait()
    decoded = decode(cmyk_jpeg(image))
    assert decoded.image.shape == image.shape
    assert np.abs(decoded.image.astype(int) - image).mean() < 8


def test_sixteen_bit_png_becomes_eight_bit() -> None:
    image = portrait()
    decoded = decode(png16(image))
    assert decoded.image.dtype == np.uint8
    assert np.abs(decoded.image.astype(int) - image).max() <= 1


def test_rgba_png_is_flattened_on_white() -> None:
    image = portrait()
    decoded = decode(rgba_png(image))
    assert decoded.image.shape == image.shape
    assert (decoded.image[0, 0] == 255).all()  # transparent corner: white, not black
    assert np.array_equal(decoded.image[300, 256], image[300, 256])  # opaque centre


def test_grayscale_and_palette_images() -> None:
    gray = cv2.cvtColor(portrait(), cv2.COLOR_BGR2GRAY)
    assert decode(encode(gray, ".png")).image.shape == (600, 512, 3)
    palette = Image.fromarray(gray).convert("P")
    flat = decode(pillow_bytes(palette, "PNG", transparency=0))
    assert flat.image.shape == (600, 512, 3)


def test_one_pixel_image() -> None:
    decoded = decode(encode(np.zeros((1, 1, 3), np.uint8), ".png"))
    assert decoded.image.shape == (1, 1, 3)


def test_broken_files_get_a_status() -> None:
    jpeg = encode(portrait())
    assert status_of(b"") == EMPTY
    assert status_of(jpeg[: len(jpeg) // 2]) == UNREADABLE
    assert status_of(b"just some text\n" * 10) == UNREADABLE
    assert status_of(b"\xff\xd8\xff\xe0garbage") == UNREADABLE


def test_huge_dimensions_are_refused_from_the_header() -> None:
    data = huge_png(60000, 60000)
    assert len(data) < 200
    with pytest.raises(DecodeError, match="60000 x 60000 pixels exceeds") as error:
        decode(data)
    assert error.value.status == TOO_LARGE


def test_pixel_limit_is_configurable() -> None:
    jpeg = encode(portrait())  # 512 x 600 = 307,200 pixels
    assert status_of(jpeg, max_pixels=300_000) == TOO_LARGE
    assert decode(jpeg, max_pixels=307_200).width == 512


def test_large_jpeg_decodes_reduced_with_original_size() -> None:
    big = cv2.resize(portrait(), (2561, 3000))
    decoded = decode(encode(big), min_side=1280)
    assert decoded.image.shape == (1500, 1281, 3)  # 1/2 scale, libjpeg rounds up
    assert (decoded.height, decoded.width) == (3000, 2561)
    assert decoded.scale == pytest.approx((2.0, 2.0), abs=1e-3)


def test_reduced_decoding_follows_exif_rotation() -> None:
    big = cv2.resize(portrait(), (2400, 2800))
    decoded = decode(exif_rotated_jpeg(big), min_side=600)
    assert decoded.image.shape == (700, 600, 3)  # 1/4 scale, upright
    assert (decoded.height, decoded.width) == (2800, 2400)


@pytest.mark.parametrize(("fmt", "options"), [
    ("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}), ("BMP", {}), ("TIFF", {}),
    ("WEBP", {"lossless": False}), ("WEBP", {"lossless": True}),
    ("WEBP", {"exif": b"Exif\x00\x00"}),  # extended (VP8X) container
])
def test_header_sizes(fmt: str, options: dict[str, object]) -> None:
    image = Image.fromarray(np.zeros((37, 53, 3), np.uint8))
    assert image_size(pillow_bytes(image, fmt, **options)) == (53, 37)


def test_header_size_of_big_endian_tiff_and_unknown_data() -> None:
    # A big-endian ("MM") directory: width as SHORT (type 3), length as LONG (type 4).
    ifd = struct.pack(">H", 2) + struct.pack(">HHIHH", 256, 3, 1, 70000 % 65536, 0)
    ifd += struct.pack(">HHII", 257, 4, 1, 70000)
    assert image_size(b"MM\x00*" + struct.pack(">I", 8) + ifd) == (70000 % 65536, 70000)
    assert image_size(b"GIF89a....") is None
    assert image_size(b"\xff\xd8\xff") is None
