"""Reading subject images as people have them into one clean RGB image, with errors that name the file.

Every dataset goes through `load_rgb`, so a photo straight from a phone (MPO named .jpg, EXIF
rotation), a scan (CMYK, 16-bit), a sticker (RGBA, palette) or a panorama gives the same kind of
image to every method. The steps, in order (see docs/datasets.md):

1. open and identify the file (zero-byte, unknown format -> BadImageError);
2. reject images whose shorter side is below `min_side`;
3. reduce images whose longer side exceeds `max_side` (JPEG decodes at reduced scale), before
   anything else touches the pixels;
4. decode fully (truncated file -> BadImageError), first frame only (MPO, GIF);
5. apply EXIF orientation;
6. convert to RGB: alpha composited on white, palette/greyscale/CMYK expanded (PIL's formula, no
   colour management), 16-bit greyscale scaled to 8 bits;
7. make it square by centre crop or white padding (`fit`), or leave it (`fit=none`).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from monkey.errors import ConfigError, DataError

FITS = ("crop", "pad", "none")
WHITE = (255, 255, 255)
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # PNG/TIFF greyscale with 0..65535 values


class BadImageError(DataError):
    """A subject image that cannot be used (unreadable, truncated, empty, too small). Under
    `dataset.on_bad_image=skip` the runner records it and skips the image's items."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot use image {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class ImageOptions:
    """How a subject image is normalised: the `dataset.image` config block."""

    fit: str = "crop"  # crop: centre square; pad: white square around it; none: keep the aspect
    min_side: int = 64  # images whose shorter side is smaller are rejected (BadImageError)
    max_side: int = 2048  # images whose longer side is larger are reduced first (aspect kept)

    def __post_init__(self) -> None:
        if self.fit not in FITS:
            raise ConfigError(f"dataset.image.fit={self.fit!r} is not allowed; choose one of {list(FITS)}")
        if not 1 <= self.min_side <= self.max_side:
            raise ConfigError(
                f"dataset.image.min_side={self.min_side} and max_side={self.max_side} must satisfy "
                "1 <= min_side <= max_side"
            )


# a generated or scored image as its file holds it: no crop, no size limit that could change it (evaluation)
AS_STORED = ImageOptions(fit="none", min_side=1, max_side=1 << 15)


DEFAULT_OPTIONS = ImageOptions()


def load_rgb(path: str | Path, options: ImageOptions = DEFAULT_OPTIONS) -> Image.Image:
    """Open an image file as RGB following the steps in the module docstring.

    Reads the whole file now, so a truncated file fails here, naming the file, not later inside a
    model call.
    """
    path = Path(path)
    if not path.is_file():
        raise BadImageError(path, "file not found")
    if path.stat().st_size == 0:
        raise BadImageError(path, "the file is empty (0 bytes)")
    try:
        with Image.open(path) as handle:
            width, height = handle.size
            if min(width, height) < options.min_side:
                raise BadImageError(
                    path,
                    f"{width}x{height} px is smaller than dataset.image.min_side={options.min_side} "
                    "(lower it to accept small images)",
                )
            reduce_on_decode(handle, options.max_side)
            handle.load()
            image = ImageOps.exif_transpose(handle)  # a new image: the handle can close
    except Image.DecompressionBombError as err:
        raise BadImageError(path, f"too many pixels for PIL's decompression-bomb guard ({err})") from err
    except UnidentifiedImageError as err:
        raise BadImageError(path, "not an image file PIL can identify") from err
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        raise BadImageError(path, f"cannot decode ({err}); the file may be truncated or corrupt") from err
    try:
        image = to_rgb(shrink(image, options.max_side))
    except ValueError as err:
        raise BadImageError(path, f"PIL mode {image.mode} cannot be converted to RGB ({err})") from err
    return fit_square(image, options.fit)


def reduce_on_decode(handle: Image.Image, max_side: int) -> None:
    """JPEG (and MPO) can decode at 1/2, 1/4 or 1/8 scale: ask for the smallest that still covers
    `max_side`, so a 50-megapixel photo never occupies full-size memory."""
    width, height = handle.size
    if max(width, height) <= max_side or handle.format not in ("JPEG", "MPO"):
        return
    scale = max_side / max(width, height)
    handle.draft(None, (max(1, round(width * scale)), max(1, round(height * scale))))


def shrink(image: Image.Image, max_side: int) -> Image.Image:
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if image.mode not in ("RGB", "RGBA", "L", "LA", "CMYK"):
        image = to_rgb(image)  # resampling needs a continuous mode (not palette or 16-bit)
    return image.resize(size, Image.Resampling.LANCZOS)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; alpha is composited on white rather than dropped to black."""
    if image.mode in SIXTEEN_BIT_MODES:
        return sixteen_bit_to_rgb(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "RGB":
        return image.copy()
    return image.convert("RGB")


def sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit greyscale holds 0..65535: scale to 0..255 (PIL's own convert clips, giving white)."""
    values = np.asarray(image, dtype=np.float64)  # [H, W]
    grey = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def fit_square(image: Image.Image, fit: str) -> Image.Image:
    """Centre-crop to the shorter side, pad with white to the longer side, or leave as is."""
    width, height = image.size
    if fit == "none" or width == height:
        return image
    if fit == "crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return image.crop((left, top, left + side, top + side))
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), WHITE)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas
