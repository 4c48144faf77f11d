"""What counts as an image file in a folder, and how a folder or file name becomes a subject word."""

import re
from dataclasses import dataclass
from pathlib import Path

from monkey.datasets.base import Source
from monkey.errors import ConfigError

# Lower-case suffixes read as images; .jpg also covers MPO (phone multi-picture) files named .jpg.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".mpo")
IMAGE_CHOICES = ("first", "all")


def subject_word(name: str) -> str:
    """The prompt's subject word as the paper's code makes it: digits dropped, '_' (and '-') -> ' '.

    "bear_plushie" -> "bear plushie", "dog6" -> "dog".
    """
    return re.sub(r"\s+", " ", re.sub(r"\d", "", name).replace("_", " ").replace("-", " ")).strip()


def image_files(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted by name. Hidden files (".DS_Store", macOS "._x.jpg"
    resource forks) are not images and are left out."""
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES
    )


def pick_images(files: list[Path], images: str) -> list[Path]:
    """`images=first`: the first file of a subject (by name); `all`: every file."""
    return files if images == "all" else files[:1]


def check_image_choice(images: str) -> None:
    if images not in IMAGE_CHOICES:
        raise ConfigError(f"dataset.images={images!r} is not allowed; choose one of {list(IMAGE_CHOICES)}")


@dataclass(frozen=True)
class SubjectInfo:
    """What a dataset says about a subject, beyond its images."""

    class_name: str
    subject_word: str
    live: bool


def subject_sources(dataset: str, subject: str, files: list[Path], info: SubjectInfo) -> list[Source]:
    """One Source per image file of a subject folder; the image id is the file's stem."""
    return [
        Source(
            dataset=dataset,
            subject=subject,
            image_id=path.stem,
            image_path=path,
            class_name=info.class_name,
            subject_word=info.subject_word,
            live=info.live,
        )
        for path in files
    ]
