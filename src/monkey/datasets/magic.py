"""Magic: the paper's card-art dataset (`jlbaker361/mtg` on the Hugging Face hub) or a local export.

Sources, by `dataset.path`:
    null                       the hub dataset `hub_id` (split `split`), via `datasets.load_dataset`
                               (its cache works offline once downloaded)
    <folder> from save_to_disk a `datasets` folder (Dataset or DatasetDict; `split` picks the split)
    <file>.parquet / <folder>  parquet in the hub schema (e.g. a `hf download` snapshot: data/*.parquet)
    <file>.csv                 one row per image: image (path, relative to the CSV) + optional columns
    <folder> of images         one card per image file, named after the file

Columns of the hub schema: image, image_url, artist, name, type_line. Each row is one source image;
its subject is the card name, its image id the row number (so `plan.pairing=cycle` pairs row k with
prompt k mod 20 as the paper's code did). The prompt's subject word is "character" (the paper's code)
unless `subject_word` or `subject_word_column` says otherwise. The art is copyrighted: the harness
never ships it; images are cached by content hash under $MONKEY_CACHE/images.
"""

import csv
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monkey.atomic import atomic_write_json
from monkey.datasets.base import Source
from monkey.datasets.blobs import materialise
from monkey.datasets.layout import image_files
from monkey.errors import ConfigError, DataError
from monkey.text_files import read_text

HUB_ID = "jlbaker361/mtg"
META_COLUMNS = ("name", "artist", "type_line", "image_url")
IMAGE_COLUMNS = ("image", "image_path")


@dataclass(frozen=True)
class Record:
    """One row of any Magic source: its image as bytes or as a file, and its metadata."""

    index: int
    image_bytes: bytes | None
    image_file: Path | None
    meta: dict[str, str]


def offline_message(hub_id: str, split: str, err: Exception) -> str:
    return (
        f"cannot load the Magic dataset {hub_id!r} (split {split!r}) from the Hugging Face hub: {err}. "
        "With no network, use a local copy: download it once where there is a network "
        f"(`monkey-data download magic --dest DIR`, or `hf download --repo-type dataset {hub_id} --local-dir DIR`), "
        "copy DIR here and run with dataset.path=DIR (a save_to_disk folder, parquet files, or a CSV "
        "with an image column of file paths)"
        + ("; or unset HF_HUB_OFFLINE if the hub is reachable" if os.environ.get("HF_HUB_OFFLINE") else "")
    )


def load_hub_dataset(hub_id: str, split: str, revision: str | None = None) -> Any:
    import datasets

    try:
        return datasets.load_dataset(hub_id, split=split, revision=revision)
    except (OSError, ValueError) as err:  # ConnectionError, DatasetNotFoundError, unknown split
        raise DataError(offline_message(hub_id, split, err)) from err


def image_value(value: Any, base: Path | None) -> tuple[bytes | None, Path | None]:
    """An image cell as the hub stores it ({bytes, path}), raw bytes, or a file path."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return bytes(value["bytes"]), None
        value = value.get("path")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), None
    if isinstance(value, str) and value.strip():
        path = Path(value.strip()).expanduser()
        return None, path if path.is_absolute() or base is None else base / path
    return b"", None  # no image at all: an empty blob, which the image checks report for this row


def meta_of(row: dict[str, Any]) -> dict[str, str]:
    return {key: str(row[key]) for key in META_COLUMNS if row.get(key) is not None}


def dataset_records(dataset: Any, origin: str) -> Iterator[Record]:
    """Rows of a `datasets.Dataset`, images kept as their stored bytes (never decoded here)."""
    import datasets

    if "image" not in dataset.column_names:
        raise DataError(f"{origin} has no 'image' column (columns: {dataset.column_names})")
    if isinstance(dataset.features["image"], datasets.Image):
        dataset = dataset.cast_column("image", datasets.Image(decode=False))
    for index, row in enumerate(dataset):
        image, file = image_value(row["image"], None)
        yield Record(index, image, file, meta_of(row))


def parquet_records(files: list[Path]) -> Iterator[Record]:
    """Stream parquet rows in batches (a full Magic export does not need to fit in memory)."""
    import pyarrow.parquet as pq

    index = 0
    for path in files:
        handle = pq.ParquetFile(path)
        names = handle.schema_arrow.names
        image_column = next((c for c in IMAGE_COLUMNS if c in names), None)
        if image_column is None:
            raise DataError(f"{path} has no 'image' column (columns: {names})")
        columns = [image_column, *(c for c in META_COLUMNS if c in names)]
        for batch in handle.iter_batches(batch_size=64, columns=columns):
            for row in batch.to_pylist():
                image, file = image_value(row[image_column], path.parent)
                yield Record(index, image, file, meta_of(row))
                index += 1


def csv_records(path: Path) -> Iterator[Record]:
    with io.StringIO(read_text(path), newline="") as handle:
        reader = csv.DictReader(handle)
        image_column = next((c for c in IMAGE_COLUMNS if c in (reader.fieldnames or [])), None)
        if image_column is None:
            raise DataError(f"{path} needs an 'image' column of image file paths (columns: {reader.fieldnames})")
        for index, row in enumerate(reader):
            image, file = image_value(row[image_column], path.parent)
            yield Record(index, image, file, meta_of({k: v for k, v in row.items() if v}))


def folder_records(folder: Path) -> Iterator[Record]:
    for index, path in enumerate(image_files(folder)):
        yield Record(index, None, path, {"name": path.stem})


def is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def split_files(files: list[Path], split: str) -> list[Path]:
    """Of a hub snapshot's parquet files (data/train-00000-of-00002.parquet ...), those of `split`."""
    named = [path for path in files if path.name.startswith(f"{split}-") or path.parent.name == split]
    return named or files


def local_records(path: Path, split: str) -> Iterator[Record]:
    if not path.exists():
        raise DataError(f"dataset.path={str(path)!r} does not exist (a save_to_disk folder, parquet, CSV or images)")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            return parquet_records([path])
        if suffix == ".csv":
            return csv_records(path)
        raise DataError(f"dataset.path={str(path)!r}: a file must be .parquet or .csv")
    if is_saved_dataset(path):
        import datasets

        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"{path} holds splits {list(loaded)}, not dataset.split={split!r}")
            loaded = loaded[split]
        return dataset_records(loaded, str(path))
    parquet = sorted(path.rglob("*.parquet"))
    if parquet:
        return parquet_records(split_files(parquet, split))
    if image_files(path):
        return folder_records(path)
    raise DataError(f"dataset.path={str(path)!r} holds no saved dataset, parquet file or image")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def load_magic(
    path: str | None = None,
    name: str = "magic",
    hub_id: str = HUB_ID,
    split: str = "train",
    revision: str | None = None,
    subject_word: str = "character",
    subject_word_column: str | None = None,
    class_name: str = "character",
    live: bool = False,
    limit: int | None = None,
) -> list[Source]:
    """One Source per row (see the module docstring); `limit` keeps the first N rows."""
    if subject_word_column is not None and subject_word_column not in META_COLUMNS:
        raise ConfigError(f"dataset.subject_word_column={subject_word_column!r}: choose one of {list(META_COLUMNS)}")
    if limit is not None and limit < 1:
        raise ConfigError(f"dataset.limit={limit} must be >= 1 or null")
    if path:
        records = local_records(Path(path).expanduser(), split)
    else:
        records = dataset_records(load_hub_dataset(hub_id, split, revision), hub_id)
    sources = []
    for record in records:
        if limit is not None and record.index >= limit:
            break
        word = record.meta.get(subject_word_column, "").strip() if subject_word_column else subject_word
        if not word:
            raise DataError(
                f"row {record.index} of the Magic source has an empty {subject_word_column!r} (the subject word)"
            )
        sources.append(
            Source(
                dataset=name,
                subject=slug(record.meta.get("name", "")) or f"row_{record.index:05d}",
                image_id=f"{record.index:05d}",
                image_path=record.image_file or materialise(record.image_bytes or b""),
                class_name=class_name,
                subject_word=word,
                live=live,
                meta=tuple(sorted({**record.meta, "row": str(record.index)}.items())),
            )
        )
    return sources


def export_hub_dataset(dest: Path, hub_id: str = HUB_ID, split: str = "train", revision: str | None = None) -> Path:
    """Fetch the hub dataset (network needed) and save it as a folder that `dataset.path` reads offline."""
    dataset = load_hub_dataset(hub_id, split, revision)
    dest.mkdir(parents=True, exist_ok=True)
    dataset.save_to_disk(str(dest))
    atomic_write_json(dest / "monkey-source.json", {"hub_id": hub_id, "split": split, "revision": revision})
    return dest
