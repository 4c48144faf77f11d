"""One control image per work item, at the generation size, from the block's named source.

- `folder`: `<folder>/<location slug>.<png|jpg|jpeg|webp>`, the slug being the item's location in
  lower case with every run of other characters than a-z and 0-9 made one '_' ("in the jungle" ->
  `in_the_jungle.png`). A missing file is an error naming the file and the folder; so are two files of
  one slug. The file is read as RGB (16-bit gray, e.g. a depth map, scaled to 8 bits: monkey.images).
- `canny`: the item's subject image (as the dataset loads it) through canny.py.

Either way the image is resized to the generation size with Lanczos, as diffusers' ControlNet
pipeline resizes a PIL control image (`VaeImageProcessor`, resample="lanczos"), and the edges are
found at that size. `pixel_sha256` names the exact pixels the ControlNet gets.
"""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from monkey.controlnet.canny import canny
from monkey.controlnet.settings import ControlSettings
from monkey.errors import DataError
from monkey.images import ImageOptions, load_rgb
from monkey.names import path_name
from monkey.plan import WorkItem
from monkey.provenance import cached_file_sha256  # many items share one location's file

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
AS_IS = ImageOptions(fit="none", min_side=1)  # a control file is used whole, whatever its size


def location_slug(location: str) -> str:
    """The file stem a location's control image has in a control folder."""
    slug = re.sub(r"[^a-z0-9]+", "_", location.lower()).strip("_")
    return path_name(slug or "_", "control image name")


def pixel_sha256(image: Image.Image) -> str:
    """SHA-256 of an RGB image's size and row-major 8-bit pixels (independent of any file encoding)."""
    rgb = image.convert("RGB")
    header = f"{rgb.width}x{rgb.height}:RGB:".encode()
    return hashlib.sha256(header + rgb.tobytes()).hexdigest()


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """[n, 3, H, W] float32 in [0, 1], as diffusers' control image processor makes it (no normalisation)."""
    arrays = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0 for image in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()


@dataclass(frozen=True)
class ControlImage:
    image: Image.Image  # RGB at the generation size: what the ControlNet sees
    info: dict[str, str]  # for the manifest row: the file and its hash (folder), the pixels' hash


def folder_file(folder: Path, location: str) -> Path:
    """The one control file of `location` in `folder`."""
    slug = location_slug(location)
    found = [folder / f"{slug}{ext}" for ext in EXTENSIONS if (folder / f"{slug}{ext}").is_file()]
    if not found:
        names = ", ".join(f"{slug}{ext}" for ext in EXTENSIONS)
        raise DataError(
            f"method.control.folder={str(folder)!r} has no control image for location {location!r}: expected "
            f"one of {names} in that folder"
        )
    if len(found) > 1:
        raise DataError(
            f"method.control.folder={str(folder)!r} has {len(found)} control images for location {location!r} "
            f"({', '.join(p.name for p in found)}); keep one"
        )
    return found[0]


def control_image(settings: ControlSettings, item: WorkItem, height: int, width: int) -> ControlImage:
    """The item's control image at height x width, from `settings.source`."""
    info: dict[str, str] = {}
    if settings.source == "folder":
        assert settings.folder is not None  # ControlSettings checks
        path = folder_file(Path(settings.folder).expanduser(), item.location)
        image = load_rgb(path, AS_IS).resize((width, height), Image.Resampling.LANCZOS)
        info = {"image_file": str(path), "file_sha256": cached_file_sha256(path)}
    else:
        resized = item.source.load_image().resize((width, height), Image.Resampling.LANCZOS)
        edges = canny(np.asarray(resized.convert("L")), settings.low, settings.high)  # [H, W] bool
        image = Image.fromarray(np.where(edges, 255, 0).astype(np.uint8)).convert("RGB")
    return ControlImage(image=image, info={**info, "image_sha256": pixel_sha256(image)})
