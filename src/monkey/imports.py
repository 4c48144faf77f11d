"""Images made elsewhere, added to a run folder as one more method, scored like native ones.

A mapping (CSV or JSONL; or the columns of a Hugging Face dataset) says which work item of the plan
each image belongs to. An item is identified by `item_id`, or by `subject` (optionally `dataset`,
`image_id`) together with the prompt (`prompt_index`, `location`, or `prompt` equal to the plan's
prompt) and the seed (`seed`, the plan's derived seed, or `seed_index`). Columns that are given
must all agree with exactly one plan item; nothing is guessed. `prompt`, when given, is the exact
text the image was generated from (stored in the row, scored by CLIP-T); without it the plan's
prompt is stored and the row says so. Other columns are kept in the row's info.

Matching problems (no such item, several items, two rows for one item, a missing or unreadable
image) are listed and stop the import unless told to skip them; plan items with no image are
reported. `jobs` writes the plan as a mapping template for the external tool to fill.
"""

import csv
import io
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from monkey.atomic import atomic_write_bytes
from monkey.errors import DataError, RunFolderError
from monkey.hashing import bytes_sha256
from monkey.images import ImageOptions, load_rgb, to_rgb
from monkey.plan import WorkItem
from monkey.provenance import FileHashes
from monkey.store import STATUS_OK, RunStore
from monkey.text_files import read_text

INT_COLUMNS = ("prompt_index", "seed", "seed_index", "generation_seed")
IDENTITY_COLUMNS = ("item_id", "dataset", "subject", "image_id", "prompt_index", "location", "seed", "seed_index")
# Generated images are taken as made: no crop, no size floor, no reduction below 16k px.
AS_MADE = ImageOptions(fit="none", min_side=1, max_side=16384)
JOB_COLUMNS = (
    "item_id",
    "dataset",
    "subject",
    "image_id",
    "source_path",
    "class_name",
    "subject_word",
    "prompt_index",
    "location",
    "prompt",
    "seed_index",
    "seed",
    "file",
)


@dataclass
class MappingRow:
    where: str  # "jobs.csv:5" or "dataset[3]": how the report names the row
    fields: dict[str, Any]
    image: Image.Image | None = None  # from a dataset's image column; None: read `file`


@dataclass
class Problem:
    where: str
    message: str


@dataclass
class ImportPlan:
    matched: list[tuple[MappingRow, WorkItem]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    missing: list[WorkItem] = field(default_factory=list)  # plan items with no mapping row


# ---- reading mappings ----------------------------------------------------------------------------
def read_mapping(path: Path) -> list[MappingRow]:
    """CSV with a header row, or JSON Lines (.jsonl/.json), one image per row."""
    if not path.is_file():
        raise DataError(f"mapping file not found: {path}")
    text = read_text(path)
    if path.suffix in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                fields = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: not a JSON object: {err}") from err
            if not isinstance(fields, dict):
                raise DataError(f"{path}:{number}: each line must be a JSON object")
            rows.append(MappingRow(f"{path.name}:{number}", fields))
        return rows
    if path.suffix != ".csv":
        raise DataError(f"mapping file {path} must be .csv (with a header) or .jsonl")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    return [
        MappingRow(f"{path.name}:{reader.line_num}", {k: v for k, v in row.items() if v not in ("", None)})
        for row in reader
    ]


def read_dataset(name: str, split: str, image_column: str) -> list[MappingRow]:
    """A Hugging Face dataset (hub id, or a folder saved with `save_to_disk`) whose other columns are
    the mapping."""
    import datasets

    path = Path(name).expanduser()
    try:
        if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
            loaded = datasets.load_from_disk(str(path))
            data = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        else:
            data = datasets.load_dataset(name, split=split)
    except (OSError, ValueError, KeyError, ConnectionError) as err:
        raise DataError(
            f"cannot load dataset {name!r} split {split!r}: {err}. Offline, save it once with "
            "`datasets.load_dataset(...).save_to_disk(folder)` and pass the folder"
        ) from err
    if image_column not in data.column_names:
        raise DataError(f"dataset {name!r} has no image column {image_column!r}; columns: {data.column_names}")
    rows = []
    for index, record in enumerate(data):
        image = record.pop(image_column)
        if not isinstance(image, Image.Image):
            raise DataError(f"dataset {name!r}[{index}].{image_column} is not an image ({type(image).__name__})")
        rows.append(MappingRow(f"{path.name or name}[{index}]", record, image))
    return rows


# ---- matching --------------------------------------------------------------------------------------
def as_int(row: MappingRow, column: str) -> int | None:
    value = row.fields.get(column)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DataError(f"{row.where}: {column}={value!r} is not an integer") from None


def candidates(row: MappingRow, plan: list[WorkItem]) -> tuple[list[WorkItem], str]:
    """Plan items agreeing with every identity column the row gives, and a description of them."""
    tests: list[tuple[str, Any, Any]] = []  # (column, value, item -> value)
    for column in ("item_id", "dataset", "subject", "image_id", "location"):
        if column in row.fields:
            tests.append((column, str(row.fields[column]).strip(), lambda item, c=column: identity(item, c)))
    for column in ("prompt_index", "seed", "seed_index"):
        if column in row.fields:
            tests.append((column, as_int(row, column), lambda item, c=column: identity(item, c)))
    if not {"item_id", "prompt_index", "location"} & set(row.fields) and "prompt" in row.fields:
        tests.append(("prompt", str(row.fields["prompt"]).strip(), lambda item: item.prompt))
    found = [item for item in plan if all(get(item) == value for _, value, get in tests)]
    return found, " ".join(f"{column}={value!r}" for column, value, _ in tests)


def identity(item: WorkItem, column: str) -> Any:
    return {
        "item_id": item.item_id,
        "dataset": item.source.dataset,
        "subject": item.source.subject,
        "image_id": item.source.image_id,
        "location": item.location,
        "prompt_index": item.prompt_index,
        "seed": item.seed,
        "seed_index": item.seed_index,
    }[column]


def match(rows: list[MappingRow], plan: list[WorkItem], images_root: Path | None) -> ImportPlan:
    result = ImportPlan()
    claimed: dict[str, str] = {}
    for row in rows:
        if not {"item_id", "subject"} & set(row.fields):
            result.problems.append(Problem(row.where, "names no item: give item_id, or subject with prompt and seed"))
            continue
        try:
            found, described = candidates(row, plan)
        except DataError as err:
            result.problems.append(Problem(row.where, str(err).removeprefix(f"{row.where}: ")))
            continue
        if not found:
            result.problems.append(Problem(row.where, f"no plan item has {described}"))
            continue
        if len(found) > 1:
            ids = ", ".join(item.item_id for item in found[:3]) + (" ..." if len(found) > 3 else "")
            result.problems.append(
                Problem(row.where, f"{described} fits {len(found)} plan items ({ids}): add seed, location or item_id")
            )
            continue
        item = found[0]
        try:
            as_int(row, "generation_seed")
        except DataError as err:
            result.problems.append(Problem(row.where, str(err).removeprefix(f"{row.where}: ")))
            continue
        if item.item_id in claimed:
            result.problems.append(Problem(row.where, f"{item.item_id} already given by {claimed[item.item_id]}"))
            continue
        if row.image is None:
            problem = check_file(row, images_root)
            if problem:
                result.problems.append(Problem(row.where, problem))
                continue
        claimed[item.item_id] = row.where
        result.matched.append((row, item))
    result.missing = [item for item in plan if item.item_id not in claimed]
    return result


def image_file(row: MappingRow, images_root: Path | None) -> Path:
    path = Path(str(row.fields["file"])).expanduser()
    return path if path.is_absolute() or images_root is None else images_root / path


def check_file(row: MappingRow, images_root: Path | None) -> str | None:
    if "file" not in row.fields:
        return "has no `file` column naming its image"
    path = image_file(row, images_root)
    if not path.is_file():
        return f"image file not found: {path}"
    try:
        load_rgb(path, AS_MADE)
    except DataError as err:
        return str(err)
    return None


# ---- writing -----------------------------------------------------------------------------------------
def pixels_sha256(image: Image.Image) -> str:
    """The decoded RGB content: the same picture gives the same hash whatever file format it came in."""
    return bytes_sha256(f"{image.width}x{image.height}:".encode() + image.tobytes())


def import_config(images: Path | None, dataset: str | None) -> dict[str, Any]:
    """What an imported method's config hash covers: where its images came from."""
    return {"origin": "imported", "images": str(images.resolve()) if images else None, "dataset": dataset}


def write_import(
    store: RunStore,
    name: str,
    plan_index: dict[str, int],
    matched: Iterable[tuple[MappingRow, WorkItem]],
    images_root: Path | None,
    config_hash: str,
) -> tuple[int, int]:
    """Write images and manifest rows; returns (written, already present with the same image)."""
    done = store.finished(name)
    source_hashes = FileHashes()
    written = skipped = 0
    with store.writer(name, f"import-{name}") as writer:
        for row, item in matched:
            image = to_rgb(row.image) if row.image is not None else load_rgb(image_file(row, images_root), AS_MADE)
            sha = pixels_sha256(image)
            previous = done.get(item.item_id)
            if previous is not None:
                if previous.get("info", {}).get("pixels_sha256") != sha:
                    raise RunFolderError(
                        f"{store.root}: {item.item_id} of method '{name}' is already imported with another image "
                        f"(now from {row.where}); import under another name or into another run folder"
                    )
                skipped += 1
                continue
            relpath = item.image_relpath(name)
            prompt = str(row.fields.get("prompt", item.prompt)).strip()
            store.write_image(
                relpath,
                image,
                text={"prompt": prompt, "method": name, "item_id": item.item_id, "origin": "imported"},
            )
            known = (*IDENTITY_COLUMNS, *JOB_COLUMNS, "generation_seed")  # the jobs template's own columns
            extra = {k: v for k, v in row.fields.items() if k not in known}
            writer.append(
                {
                    **item.describe(),
                    "config_hash": config_hash,
                    "writer": f"import-{name}",
                    "device": None,
                    "dtype": None,
                    "origin": "imported",
                    "preset": None,
                    "batch": None,  # made elsewhere: no batch of this harness
                    "weights": None,  # made elsewhere: the harness loaded no checkpoint
                    "threads": None,  # nor ran torch threads for it
                    "source_sha256": source_hashes(item.source.image_path),  # the photo the dataset held
                    "method": name,
                    "prompt": prompt,
                    "generation_seed": as_int(row, "generation_seed"),
                    "height": image.height,
                    "width": image.width,
                    "image": relpath,
                    "artifacts": {},
                    "status": STATUS_OK,
                    "info": {
                        "imported_from": str(image_file(row, images_root)) if row.image is None else row.where,
                        "mapping_row": row.where,
                        "prompt_source": "mapping" if "prompt" in row.fields else "plan (the mapping gave none)",
                        "pixels_sha256": sha,
                        "columns": extra,
                    },
                    "timings": {},
                    "plan_index": plan_index[item.item_id],
                    "created": time.time(),
                }
            )
            written += 1
    return written, skipped


def jobs_table(plan: list[WorkItem], method: str) -> list[dict[str, Any]]:
    """The plan as a mapping template: one row per item, `file` the name the image may be saved under."""
    rows = []
    for item in plan:
        described = item.describe()
        rows.append(
            {
                **{column: described.get(column) for column in JOB_COLUMNS if column in described},
                "prompt": item.prompt,
                "file": item.image_relpath(method).removeprefix(f"images/{method}/"),
            }
        )
    return rows


def write_jobs(path: Path, rows: list[dict[str, Any]]) -> None:
    if path.suffix in (".jsonl", ".json"):
        atomic_write_bytes(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode("utf-8"))
        return
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(JOB_COLUMNS))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, text.getvalue().encode("utf-8"))


def report_text(name: str, run_dir: Path, rows: int, result: ImportPlan, written: int, skipped: int, plan: int) -> str:
    lines = [
        f"import '{name}' -> {run_dir}",
        f"  mapping rows              {rows:6d}",
        f"  matched to plan items     {len(result.matched):6d}",
        f"  written                   {written:6d}",
        f"  already imported          {skipped:6d}",
        f"  problems                  {len(result.problems):6d}",
        f"  plan items with no image  {len(result.missing):6d} of {plan}",
    ]
    if result.problems:
        lines.append("problems (row: what is wrong):")
        lines += [f"  {problem.where}: {problem.message}" for problem in result.problems]
    if result.missing:
        shown = result.missing[:10]
        lines.append("plan items with no image:" + ("" if len(result.missing) <= 10 else " (first 10)"))
        lines += [f"  {item.item_id}  {item.prompt!r} seed {item.seed}" for item in shown]
    return "\n".join(lines)
