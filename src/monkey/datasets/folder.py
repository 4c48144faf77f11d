"""Any folder of subjects: a researcher's own images, optionally described by a subjects.csv.

Layout (both may be mixed):
    root/<subject>/<image>.jpg    a subject with one or more images (like DreamBooth)
    root/<image>.jpg              a subject of one image, named after the file
    root/subjects.csv             optional: name,class,subject_word,live (one row per subject)

Without subjects.csv a subject's word is made from its name as for DreamBooth ("my_dog2" -> "my
dog"), its class is that word, and it is an object. With it, every subject must have a row and every
row a subject, so a typo is an error rather than a silently default class.
"""

import csv
import io
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
from monkey.text_files import read_text

SUBJECT_COLUMNS = ("name", "class", "subject_word", "live")
LIVE_VALUES = {
    "live": True,
    "object": False,
    "true": True,
    "false": False,
    "yes": True,
    "no": False,
    "1": True,
    "0": False,
}


def folder_subjects(root: Path) -> dict[str, list[Path]]:
    """subject name -> its image files: one per sub-folder, plus one per loose image."""
    subjects: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = image_files(folder)
        if files:
            subjects[folder.name] = files
    for path in image_files(root):
        if path.stem in subjects:
            other = subjects[path.stem][0]
            raise DataError(f"{path} and {other} both name subject {path.stem!r}; rename one of them")
        subjects[path.stem] = [path]
    return dict(sorted(subjects.items()))


def parse_live(value: str, where: str) -> bool:
    key = value.strip().lower()
    if key == "":
        return False
    if key not in LIVE_VALUES:
        raise DataError(f"{where}: live={value!r} is not allowed; use one of {sorted(LIVE_VALUES)}")
    return LIVE_VALUES[key]


def read_subjects_csv(path: Path) -> dict[str, SubjectInfo]:
    """Parse subjects.csv (UTF-8 or UTF-16 as monkey.text_files reads it). Only `name` is required;
    an empty class falls back to the subject word, an empty subject word to the name's word."""
    with io.StringIO(read_text(path), newline="") as handle:
        reader = csv.DictReader(handle)
        header = [column.strip() for column in reader.fieldnames or []]
        if "name" not in header:
            raise DataError(f"{path} needs a header row with a 'name' column; allowed columns: {list(SUBJECT_COLUMNS)}")
        unknown = sorted(set(header) - set(SUBJECT_COLUMNS))
        if unknown:
            raise DataError(f"{path} has unknown columns {unknown}; allowed: {list(SUBJECT_COLUMNS)}")
        info: dict[str, SubjectInfo] = {}
        for line, raw in enumerate(reader, start=2):
            if None in raw:  # DictReader keeps a row's surplus fields under the key None
                raise DataError(
                    f"{path}:{line}: {len(header) + len(raw[None])} fields, the header has {len(header)} "
                    f"({','.join(header)}); quote a value that holds a comma"
                )
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            name = row["name"]
            if not name:
                raise DataError(f"{path}:{line}: empty name")
            if name in info:
                raise DataError(f"{path}:{line}: subject {name!r} is listed twice")
            word = row.get("subject_word") or subject_word(name)
            info[name] = SubjectInfo(
                class_name=row.get("class") or word,
                subject_word=word,
                live=parse_live(row.get("live", ""), f"{path}:{line}"),
            )
    return info


def load_folder(
    root: str | None = None, name: str = "folder", images: str = "all", subjects_file: str = "subjects.csv"
) -> list[Source]:
    """Load every subject image under `root` (see the module docstring for the layout)."""
    check_image_choice(images)
    if not root:
        raise DataError(
            "dataset.root is not set: point it at a folder of subject images (dataset=folder dataset.root=DIR)"
        )
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"dataset.root={str(base)!r} is not a folder of subject images")
    subjects = folder_subjects(base)
    if not subjects:
        raise DataError(f"no image files under {base} (allowed: <subject>/<image> or <image> with a known suffix)")
    table_path = base / subjects_file
    if table_path.is_file():
        table = read_subjects_csv(table_path)
        missing, extra = sorted(set(subjects) - set(table)), sorted(set(table) - set(subjects))
        if missing or extra:
            raise DataError(
                f"{table_path} does not match the folder: subjects without a row {missing}, rows without "
                f"images {extra}. Add or fix the rows (or delete the file to use defaults)"
            )
    else:
        table = {subject: SubjectInfo(subject_word(subject), subject_word(subject), False) for subject in subjects}
    sources: list[Source] = []
    for subject, files in subjects.items():
        if not table[subject].subject_word:
            raise DataError(f"subject {subject!r} under {base} has no subject word: set one in {subjects_file}")
        sources += subject_sources(name, subject, pick_images(files, images), table[subject])
    return sources
