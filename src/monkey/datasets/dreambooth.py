"""DreamBooth in the `google/dreambooth` layout: dataset/<subject>/NN.jpg + prompts_and_classes.txt."""

import re
from pathlib import Path

from monkey.datasets.base import Source
from monkey.errors import ConfigError, DataError
from monkey.paths import bundled_dreambooth_root

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
LIVE_CLASSES = frozenset({"cat", "dog"})  # DreamBooth's 9 live subjects are its cats and dogs
IMAGE_CHOICES = ("first", "all")


def subject_word(subject: str) -> str:
    """The prompt's subject word as the paper's code makes it: digits dropped, '_' -> ' '."""
    return re.sub(r"\s+", " ", re.sub(r"\d", "", subject).replace("_", " ")).strip()


def read_classes(path: Path) -> dict[str, str]:
    """Parse the `subject_name,class` table at the top of prompts_and_classes.txt."""
    classes: dict[str, str] = {}
    in_table = False
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line == "subject_name,class":
            in_table = True
            continue
        if in_table:
            if not line or "," not in line:
                if classes:
                    break
                continue
            name, cls = (part.strip() for part in line.split(",", 1))
            classes[name] = cls
    if not classes:
        raise DataError(f"no 'subject_name,class' table found in {path}")
    return classes


def dataset_dir(root: Path) -> Path:
    """Accept either the repository root (holding dataset/) or the dataset/ folder itself."""
    return root / "dataset" if (root / "dataset").is_dir() else root


def load_dreambooth(root: str | None = None, images: str = "first", name: str = "dreambooth") -> list[Source]:
    """Load DreamBooth subjects from `root` (None: the bundled 30-image subset)."""
    if images not in IMAGE_CHOICES:
        raise ConfigError(f"dataset.images={images!r} is not allowed; choose one of {list(IMAGE_CHOICES)}")
    base = Path(root).expanduser() if root else bundled_dreambooth_root()
    if not base.is_dir():
        raise DataError(
            f"dataset.root={str(base)!r} does not exist; point it at a copy of google/dreambooth "
            "(a folder holding dataset/<subject>/NN.jpg and prompts_and_classes.txt), or leave it "
            "null for the bundled subset"
        )
    folder = dataset_dir(base)
    table = folder / "prompts_and_classes.txt"
    if not table.is_file():
        raise DataError(f"{table} is missing: the DreamBooth loader needs it for the subject classes")
    classes = read_classes(table)
    sources: list[Source] = []
    for subject in sorted(classes):
        subject_dir = folder / subject
        files = sorted(p for p in subject_dir.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            continue
        for path in files if images == "all" else files[:1]:
            cls = classes[subject]
            sources.append(
                Source(
                    dataset=name,
                    subject=subject,
                    image_id=path.stem,
                    image_path=path,
                    class_name=cls,
                    subject_word=subject_word(subject),
                    live=cls in LIVE_CLASSES,
                )
            )
    if not sources:
        raise DataError(f"no subject images found under {folder} (expected <subject>/NN.jpg)")
    return sources
