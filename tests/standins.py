"""Generated stand-ins for test data: images in every odd format, and Magic in the hub schema.

Nothing here is real data: the Magic art is copyrighted and never shipped, so tests build rows with
the same columns (image, image_url, artist, name, type_line) around random pixels.
"""

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

MAGIC_ROWS = (
    ("Llanowar Elves", "Anson Maddocks", "Creature — Elf Druid"),
    ("Serra Angel", "Douglas Shuler", "Creature — Angel"),
    ("Llanowar Elves", "Chris Rahn", "Creature — Elf Druid"),
)


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def magic_standin(rows=MAGIC_ROWS, size: tuple[int, int] = (80, 96)):
    """A `datasets.Dataset` in the jlbaker361/mtg schema with random images (portrait, like card art)."""
    import datasets

    features = datasets.Features(
        {
            "image": datasets.Image(),
            "image_url": datasets.Value("string"),
            "artist": datasets.Value("string"),
            "name": datasets.Value("string"),
            "type_line": datasets.Value("string"),
        }
    )
    columns = {
        "image": [noise(*size, seed=index) for index in range(len(rows))],
        "image_url": [f"https://example.invalid/card/{index}.jpg" for index in range(len(rows))],
        "artist": [artist for _, artist, _ in rows],
        "name": [name for name, _, _ in rows],
        "type_line": [type_line for _, _, type_line in rows],
    }
    return datasets.Dataset.from_dict(columns, features=features)


def png_16bit_rgb(path: Path, pixels: np.ndarray) -> None:
    """Write a 16-bit-per-channel RGB PNG by hand (PIL cannot write one): pixels [H, W, 3] uint16."""
    height, width, _ = pixels.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


def jpeg_with_orientation(path: Path, image: Image.Image, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, "JPEG", quality=95, exif=exif)


def truncated_jpeg(path: Path, size: int = 96) -> None:
    noise(size, size).save(path, "JPEG", quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
