"""Reading subject images into RGB, with errors that name the file."""

from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from monkey.errors import DataError


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image as RGB, EXIF orientation applied, transparency composited on white.

    Reads the whole file now, so a truncated file fails here, naming the file, not later inside a
    model call.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    try:
        with Image.open(path) as handle:
            handle.load()
            image = ImageOps.exif_transpose(handle)
            return to_rgb(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"cannot read image {path}: {err}") from err


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; alpha is composited on white rather than dropped to black."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "RGB":
        return image.copy()
    return image.convert("RGB")
