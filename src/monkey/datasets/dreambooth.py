"""DreamBooth in the `google/dreambooth` layout: dataset/<subject>/NN.jpg + prompts_and_classes.txt."""

from pathlib import Path

from monkey.datasets.base import Source
from monkey.datasets.layout import (
    SubjectInfo,
    check_image_choice,
    image_files,
    pick_images,
    subject_sources,
    subject_word,
)
from monkey.errors import DataError
from monkey.paths import bundled_dreambooth_root
from monkey.text_files import read_text

LIVE_CLASSES = frozenset({"cat", "dog"})  # DreamBooth's 9 live subjects are its cats and dogs


def read_classes(path: Path) -> dict[str, str]:
    """Parse the `subject_name,class` table at the top of prompts_and_classes.txt."""
    classes: dict[str, str] = {}
    in_table = False
    for line in read_text(path).splitlines():
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
    """Load DreamBooth subjects from `root` (None: the bundled 30-image subset).

    `root` may be the original google/dreambooth copy (full-size, 42 files are MPO named .jpg; see
    `monkey-data download dreambooth`) or a resized one: both have the same layout.
    """
    check_image_choice(images)
    base = Path(root).expanduser() if root else bundled_dreambooth_root()
    if not base.is_dir():
        raise DataError(
            f"dataset.root={str(base)!r} does not exist; point it at a copy of google/dreambooth "
            "(a folder holding dataset/<subject>/NN.jpg and prompts_and_classes.txt; "
            "`monkey-data download dreambooth --dest DIR` fetches one), or leave it null for the bundled subset"
        )
    folder = dataset_dir(base)
    table = folder / "prompts_and_classes.txt"
    if not table.is_file():
        raise DataError(f"{table} is missing: the DreamBooth loader needs it for the subject classes")
    classes = read_classes(table)
    sources: list[Source] = []
    for subject in sorted(classes):
        info = SubjectInfo(classes[subject], subject_word(subject), classes[subject] in LIVE_CLASSES)
        sources += subject_sources(name, subject, pick_images(image_files(folder / subject), images), info)
    if not sources:
        raise DataError(f"no subject images found under {folder} (expected <subject>/NN.jpg)")
    return sources
