"""Photo builders for the tests: every awkward input a real collection holds, made in memory.

Real faces come from the sample portraits (a detector finds no face in noise); the broken
and unusual files are generated with OpenCV, Pillow and a hand-written PNG header.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SAMPLE_PHOTOS = Path(__file__).resolve().parents[1] / "sample_data" / "photos"
GRACE = SAMPLE_PHOTOS / "navy" / "grace_hopper.jpg"  # 512 x 600, one face
ASTRONAUT = SAMPLE_PHOTOS / "nasa" / "astronaut.jpg"  # 512 x 512, one face
LANDSCAPE = SAMPLE_PHOTOS / "nasa" / "landscape.jpg"  # no face


def portrait() -> np.ndarray:
    """Grace Hopper's portrait as BGR uint8 (600, 512, 3)."""
    return cv2.imread(str(GRACE))


def encode(image: np.ndarray, ext: str = ".jpg") -> bytes:
    """OpenCV-encode an image (BGR, gray, BGRA or 16-bit) to bytes."""
    ok, buf = cv2.imencode(ext, image)
    if not ok:
        raise ValueError(f"cannot encode {ext}")
    return buf.tobytes()


def pillow_bytes(image: Image.Image, fmt: str, **options: object) -> bytes:
    """Save a Pillow image to bytes (Pillow writes EXIF tags and CMYK, OpenCV does not)."""
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def exif_rotated_jpeg(image: np.ndarray) -> bytes:
    """The image stored sideways (turned 90 degrees anticlockwise) with EXIF orientation 6,
    which tells viewers to turn it back clockwise: upright when decoded correctly."""
    stored = cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb = Image.fromarray(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB))
    return pillow_bytes(rgb, "JPEG", exif=exif, quality=92)


def cmyk_jpeg(image: np.ndarray) -> bytes:
    """A CMYK JPEG, as press and print workflows produce."""
    rgb = Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return pillow_bytes(rgb.convert("CMYK"), "JPEG", quality=92)


def png16(image: np.ndarray) -> bytes:
    """A 16-bit PNG (scans and HDR exports)."""
    return encode(image.astype(np.uint16) * 257, ".png")


def rgba_png(image: np.ndarray) -> bytes:
    """A cut-out portrait: BGRA PNG, transparent (and black underneath) outside a central box."""
    height, width = image.shape[:2]
    bgra = np.zeros((height, width, 4), np.uint8)
    top, left = height // 8, width // 8
    bgra[top:-top, left:-left, :3] = image[top:-top, left:-left]
    bgra[top:-top, left:-left, 3] = 255
    return encode(bgra, ".png")


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def huge_png(width: int = 60000, height: int = 60000) -> bytes:
    """A valid-looking PNG header claiming ``width`` x ``height`` pixels, under 100 bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b""))


def two_faces() -> np.ndarray:
    """Two copies of the portrait side by side (the detector needs faces this large)."""
    image = portrait()
    return np.hstack([image, cv2.flip(image, 1)])


def bad_inputs(folder: Path) -> dict[str, str]:
    """Write one file of every awkward kind under ``folder``; return path -> expected status."""
    image = portrait()
    jpeg = encode(image)
    files = {
        "empty.jpg": (b"", "empty"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "unreadable"),
        "text.jpg": (b"this is a text file, not a photo\n", "unreadable"),
        "cmyk.jpg": (cmyk_jpeg(image), "ok"),
        "sixteen_bit.png": (png16(image), "ok"),
        "rgba.png": (rgba_png(image), "ok"),
        "exif_rotated.jpg": (exif_rotated_jpeg(image), "ok"),
        "one_pixel.png": (encode(np.zeros((1, 1, 3), np.uint8), ".png"), "no_face"),
        "huge.png": (huge_png(), "too_large"),
        "landscape.jpg": (LANDSCAPE.read_bytes(), "no_face"),
        "two_faces.jpg": (encode(two_faces()), "ok"),
    }
    expected = {}
    for name, (data, status) in files.items():
        path = folder / "acme" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[f"acme/{name}"] = status
    return expected


def gif_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A small GIF whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    screen = struct.pack("<6sHHBBB", b"GIF89a", width, height, 0x80, 0, 0)
    palette = b"\x00\x00\x00\xff\xff\xff"
    image = struct.pack("<BHHHHB", 0x2C, 0, 0, width, height, 0)
    # LZW minimum code size 2, then a few data sub-blocks of zeros and the trailer
    return screen + palette + image + b"\x02" + b"\xff" + b"\x00" * 255 + b"\x00;"


def trap_tree(root: Path, outside: Path) -> dict[str, str]:
    """A photo tree with every trap a file system can set; return path -> expected status.

    A Latin-1 (non-UTF-8) name and a name that spells its escape (``caf\\xe9.jpg``, two
    photos that once shared a path), a company folder that is a symlink to a folder elsewhere,
    two links back up the tree (loops), a dangling link, a FIFO, a GIF bomb named .jpg and
    a huge sparse file. Real photos must each be scored exactly once.
    """
    import os

    jpeg = GRACE.read_bytes()
    (root / "acme").mkdir(parents=True)
    (root / "acme" / "ok.jpg").write_bytes(jpeg)
    with open(os.path.join(os.fsencode(root / "acme"), b"caf\xe9.jpg"), "wb") as f:
        f.write(jpeg)
    (root / "acme" / "caf\\xe9.jpg").write_bytes(jpeg)
    outside.mkdir(parents=True)
    (outside / "ceo.jpg").write_bytes(jpeg)
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "acme" / "loop").symlink_to("..", target_is_directory=True)
    (root / "acme" / "loop2").symlink_to("../acme", target_is_directory=True)
    (root / "acme" / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    os.mkfifo(root / "acme" / "fifo.jpg")
    (root / "acme" / "bomb.jpg").write_bytes(gif_bomb())
    with open(root / "acme" / "sparse.jpg", "wb") as f:
        f.truncate(2**40)  # a terabyte that takes no disk
    return {"acme/ok.jpg": "ok", "acme/caf\\xe9.jpg": "ok", "acme/caf\\x5cxe9.jpg": "ok",
            "linked/ceo.jpg": "ok",
            "acme/dangling.jpg": "unreadable", "acme/fifo.jpg": "unreadable",
            "acme/bomb.jpg": "unreadable", "acme/sparse.jpg": "too_large"}
