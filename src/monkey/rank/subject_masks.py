"""Where the ranking's subject masks come from: PNG files, or a segmentation model run once.

Files: `<dir>/<subject>/<image_id>.png`, any mode; a pixel is subject when non-zero (after `L`
conversion). A mask is either of the image as the harness loads it (the dataset's `image.fit` already
applied) or of the original file, in which case the same geometry is applied to it (shrink to
`max_side`, centre crop or pad with background).

A segmenter is any object called as `segmenter(image, source) -> [H, W] bool array` on the loaded
image (a `Segmenter`; `monkey.rank.segmenters` wraps transformers models). Its masks are written once
to `<out>/masks/<subject>/<image_id>.png` with `<out>/masks/segmenter.json` naming it, and read
from there by later runs with the same segmenter.
"""

import json
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from monkey.atomic import atomic_write_bytes
from monkey.datasets.base import Source
from monkey.errors import ConfigError, DataError
from monkey.names import path_name


class Segmenter(Protocol):
    def __call__(self, image: Image.Image, source: Source) -> np.ndarray:
        """[H, W] bool: where `source`'s subject is in `image` (the image as the harness loads it)."""


def fit_mask(mask: Image.Image, source: Source) -> Image.Image:
    """The mask of the original file through the geometry `load_rgb` applies to the image."""
    options = source.image_options
    if max(mask.size) > options.max_side:
        scale = options.max_side / max(mask.size)
        mask = mask.resize((max(1, round(mask.width * scale)), max(1, round(mask.height * scale))), Image.NEAREST)
    if options.fit == "none" or mask.width == mask.height:
        return mask
    side = min(mask.size) if options.fit == "crop" else max(mask.size)
    square = Image.new("L", (side, side), 0)
    square.paste(mask, ((side - mask.width) // 2, (side - mask.height) // 2))
    return square


def read_grey(path: Path, what: str = "mask") -> Image.Image:
    """A mask file as an `L` image, or a DataError naming `what` and the file."""
    try:
        with Image.open(path) as handle:
            return handle.convert("L")
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {what} {path}: {err}") from err


def read_mask(path: Path, source: Source, image_size: tuple[int, int]) -> torch.Tensor:
    """[H, W] bool aligned with `source.load_image()` (of size `image_size`, (W, H))."""
    mask = read_grey(path)
    if mask.size != image_size:
        with Image.open(source.image_path) as original:
            original_size = original.size
        if mask.size != original_size:
            raise DataError(
                f"mask {path} is {mask.width}x{mask.height} px; it must match its image as loaded "
                f"({image_size[0]}x{image_size[1]}) or its file {source.image_path} "
                f"({original_size[0]}x{original_size[1]})"
            )
        mask = fit_mask(mask, source)
        if mask.size != image_size:  # a JPEG reduced on decode: scale the fitted mask to the image
            mask = mask.resize(image_size, Image.NEAREST)
    return torch.from_numpy(np.asarray(mask) > 0)


def mask_path(root: Path, source: Source) -> Path:
    subject = path_name(source.subject, "subject", DataError)
    return root / subject / f"{path_name(source.image_id, 'image_id', DataError)}.png"


class FolderMasks:
    """Masks given as files under `root`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"masks.dir={str(root)!r} is not a folder (expected <dir>/<subject>/<image_id>.png)")

    def __call__(self, source: Source, image: Image.Image) -> torch.Tensor:
        path = mask_path(self.root, source)
        if not path.is_file():
            raise DataError(
                f"no mask for {source.source_id}: expected {path} (masks.dir=<dir>/<subject>/<image_id>.png)"
            )
        return read_mask(path, source, image.size)


class SegmentedMasks:
    """Masks made by a segmenter once and kept as files under `root` (`<out>/masks`)."""

    def __init__(self, segmenter: Segmenter, identity: dict[str, Any], root: Path):
        self.segmenter = segmenter
        self.root = Path(root)
        self.identity = identity
        stamp = self.root / "segmenter.json"
        if stamp.is_file():
            kept = json.loads(stamp.read_text(encoding="utf-8"))
            if kept != identity:
                raise ConfigError(
                    f"{self.root} holds masks of another segmenter ({kept}); masks.segmenter is {identity}. "
                    "Use another out= folder or delete that one"
                )
        self.made = 0  # segmenter calls, for tests and logs

    def __call__(self, source: Source, image: Image.Image) -> torch.Tensor:
        path = mask_path(self.root, source)
        if path.is_file():
            return read_mask(path, source, image.size)
        mask = np.asarray(self.segmenter(image, source), dtype=bool)
        if mask.shape != (image.height, image.width):
            raise DataError(
                f"the segmenter returned a {mask.shape} mask for {source.source_id}, "
                f"whose image is {image.height}x{image.width}"
            )
        self.made += 1
        buffer = BytesIO()
        Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, format="PNG")
        atomic_write_bytes(path, buffer.getvalue())
        stamp = self.root / "segmenter.json"
        if not stamp.is_file():  # with the first mask: a folder of masks always says whose they are
            atomic_write_bytes(stamp, json.dumps(self.identity, indent=2).encode())
        return torch.from_numpy(mask)
