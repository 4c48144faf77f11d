"""Images that arrive as bytes (a hub dataset, a parquet column) become files named by their content.

Every `Source` then has a real `image_path`, so `load_image`, `sha256` and the manifest work the same
for every dataset, and odd or broken bytes meet the same checks as any other file. Writing the
original bytes (never a re-encoding) keeps the image exactly as published.
"""

from pathlib import Path

from monkey.atomic import atomic_write_bytes
from monkey.hashing import bytes_sha256
from monkey.paths import cache_dir

SIGNATURES = (
    (b"\xff\xd8\xff", ".jpg"),
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"GIF8", ".gif"),
    (b"BM", ".bmp"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
)


def suffix_for(data: bytes) -> str:
    """A file suffix from the bytes' signature (PIL reads by content anyway; this is for people)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return next((suffix for signature, suffix in SIGNATURES if data.startswith(signature)), ".img")


def blob_dir() -> Path:
    return cache_dir() / "images"


def materialise(data: bytes, root: Path | None = None) -> Path:
    """Store `data` once as <root>/<sha[:2]>/<sha><suffix> and return the path (no rewrite if present)."""
    digest = bytes_sha256(data)
    path = (root or blob_dir()) / digest[:2] / f"{digest}{suffix_for(data)}"
    if not path.is_file():
        atomic_write_bytes(path, data)
    return path
