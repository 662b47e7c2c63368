"""Turn photo bytes into an upright 8-bit BGR image, or a status saying why not.

Real photo collections hold empty files, truncated downloads, CMYK press photos, 16-bit
scans, cut-out PNGs and phone photos stored sideways with an EXIF orientation tag. Each
becomes either a usable image or a ``DecodeError`` whose ``status`` goes into the output row;
nothing here ends a run. The image size is read from the file header before decoding, so a
decompression bomb (a small file claiming 60000 x 60000 pixels) is refused without
allocating it.
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass

import cv2
import numpy as np

from facevalue.columns import EMPTY, TOO_LARGE, UNREADABLE, PhotoError
from facevalue.defaults import DEFAULT_MAX_PIXELS

log = logging.getLogger(__name__)

# JPEGs are decoded at 1/2, 1/4 or 1/8 scale (libjpeg does this almost for free) as long as
# the long side stays at least this large: a face a twentieth of the photo wide still gets
# more pixels than the classifier's 48 x 48 input.
DEFAULT_MIN_SIDE = 1280
REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
           8: cv2.IMREAD_REDUCED_COLOR_8}
JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers


class DecodeError(PhotoError):
    """Bytes that are not an image this scorer decodes (or one too large to decode)."""


@dataclass(frozen=True)
class Decoded:
    """An upright uint8 BGR image, maybe decoded at reduced scale, and its full size.

    ``height`` and ``width`` are the original image's size after EXIF rotation: the frame
    that output boxes are reported in.
    """

    image: np.ndarray
    height: int
    width: int

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) factors from decoded pixels to original pixels."""
        return self.width / self.image.shape[1], self.height / self.image.shape[0]


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
           min_side: int = DEFAULT_MIN_SIDE) -> Decoded:
    """Decode image bytes upright (EXIF orientation applied) to uint8 BGR.

    Raises DecodeError with status ``empty``, ``too_large`` or ``unreadable``.
    """
    if not data:
        raise DecodeError(EMPTY, "file is empty (0 bytes)")
    size = image_size(data)
    if size is None:
        # Every format decoded here has its size read from its header first; anything
        # else (GIF, PPM, JPEG 2000 ... under a photo's name) could claim any size.
        raise DecodeError(UNREADABLE, "not a JPEG, PNG, BMP, WebP or TIFF file (or its "
                          "header is damaged)")
    _check_pixels(size[0], size[1], max_pixels)
    factor = _reduction(data, size, min_side)
    buf = np.frombuffer(data, np.uint8)
    try:
        if _png_has_alpha(data):
            image = _flatten(cv2.imdecode(buf, cv2.IMREAD_UNCHANGED))
        else:
            image = cv2.imdecode(buf, REDUCED.get(factor, cv2.IMREAD_COLOR))
    except cv2.error as e:
        raise DecodeError(UNREADABLE, f"OpenCV cannot decode it: {_first_line(e)}") from e
    if image is None or image.size == 0:
        raise DecodeError(UNREADABLE, "not an image OpenCV can decode (corrupt, truncated "
                          "or another format)")
    height, width = _original_shape(image.shape[:2], size, factor)
    return Decoded(np.ascontiguousarray(image), height, width)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise DecodeError(TOO_LARGE, f"{width} x {height} pixels exceeds the limit of "
                          f"{max_pixels:,} pixels (see --max-pixels)")
    if width <= 0 or height <= 0:
        raise DecodeError(UNREADABLE, f"header claims a {width} x {height} image")


def _reduction(data: bytes, size: tuple[int, int], min_side: int) -> int:
    """The largest JPEG reduction that keeps the long side at least ``min_side``."""
    if not data.startswith(b"\xff\xd8"):
        return 1
    return next((f for f in (8, 4, 2) if max(size) / f >= min_side), 1)


def _original_shape(decoded: tuple[int, int], size: tuple[int, int],
                    factor: int) -> tuple[int, int]:
    """The full-size (height, width) after EXIF rotation, from the header and decoded shape."""
    if factor == 1:
        return decoded
    width, height = size
    reduced = (math.ceil(height / factor), math.ceil(width / factor))
    # EXIF orientations 5-8 swap the axes; libjpeg rounds reduced sizes up.
    return (height, width) if decoded == reduced else (width, height)


def _flatten(image: np.ndarray | None) -> np.ndarray | None:
    """A transparent or 16-bit PNG as 8-bit BGR on white, as a viewer would show it.

    Transparent pixels often hold black or leftover colour that a viewer never shows. (PNG
    EXIF orientation, which ``IMREAD_UNCHANGED`` ignores, is vanishingly rare in practice.)
    """
    if image is None:
        return None
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 3:
        return image
    alpha = image[:, :, 3:4].astype(np.float32) / 255.0
    flat = image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.rint(flat).astype(np.uint8)


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG, PNG, BMP, WebP or TIFF header; None if not understood.

    Headers are trusted only for the pixel limit; OpenCV still validates the file when it
    decodes it.
    """
    for reader in (_jpeg_size, _png_size, _bmp_size, _webp_size, _tiff_size):
        try:
            size = reader(data)
        except (struct.error, IndexError):
            size = None
        if size is not None:
            return size
    return None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _png_has_alpha(data: bytes) -> bool:
    """Whether a PNG has an alpha channel or a transparent palette entry (colour type, tRNS)."""
    if _png_size(data) is None or len(data) < 26:
        return False
    return data[25] in (4, 6) or b"tRNS" in data[: data.find(b"IDAT")]


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if not data.startswith(b"BM"):
        return None
    if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return width, abs(height)  # negative height means a top-down bitmap


def _webp_size(data: bytes) -> tuple[int, int] | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return (int.from_bytes(data[24:27], "little") + 1,
                int.from_bytes(data[27:30], "little") + 1)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the JPEG markers to the first start-of-frame, which holds the size."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in JPEG_SOF:
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        elif marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length
            i += 2
        else:
            i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """Width and length tags of the first TIFF image directory."""
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(data[:4])
    if order is None:
        return None
    offset = struct.unpack(order + "I", data[4:8])[0]
    count = struct.unpack(order + "H", data[offset:offset + 2])[0]
    found = {}
    for n in range(count):
        entry = offset + 2 + 12 * n
        tag, kind = struct.unpack(order + "HH", data[entry:entry + 4])
        if tag in (256, 257) and kind in (3, 4):
            fmt = order + ("H" if kind == 3 else "I")
            found[tag] = struct.unpack(fmt, data[entry + 8:entry + 8 + struct.calcsize(fmt)])[0]
    return (found[256], found[257]) if len(found) == 2 else None
