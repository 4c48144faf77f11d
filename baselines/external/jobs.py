"""The files an external method and the harness exchange: one JSONL job file in, `<id>.png` +
`<id>.json` per item out.

A job line holds everything the external tool needs and nothing it could get wrong by reading the
harness's config: the item, the subject image already normalised by the harness (so every method
sees the same pixels), the exact prompt, the template prompt, seed, size and the method's knobs.
The result JSON echoes its job line; a result whose echo differs from the current job (another
prompt, seed or knob) is stale and is never taken.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from monkey.atomic import atomic_write_bytes
from monkey.datasets.base import Source
from monkey.errors import RunFolderError
from monkey.methods.base import GenerationRequest, GenerationResult
from monkey.store import png_bytes

JOB_FILE = "jobs.jsonl"
OUT_DIR = "out"
SUBJECT_DIR = "subjects"
STATUS_OK = "ok"
SAFE_KEY = re.compile(r"^[A-Za-z0-9._=+-]+$")
ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # <stem>.<name>.png in the run folder


def job_key(item_id: str) -> str:
    """The file stem of an item's result: its id with `/` as `--` (`dreambooth--dog--00--p03--s0`)."""
    key = item_id.replace("/", "--")
    if not SAFE_KEY.match(key) or key.startswith("."):
        raise RunFolderError(
            f"item id {item_id!r} cannot name an external result file (allowed: A-Z a-z 0-9 . _ = + -)"
        )
    return key


def inside(root: Path, relative: str) -> Path:
    """`root / relative`, refusing names that would leave `root` (an external tool's file names)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise RunFolderError(f"external result names {relative!r}, outside its folder {root}")
    return path


def subject_image_file(work_dir: Path, source: Source) -> Path:
    """The subject image as every native method sees it (monkey.images.load_rgb), as a PNG the
    external tool reads; written once per source."""
    path = work_dir / SUBJECT_DIR / f"{job_key(source.source_id)}.png"
    if not path.is_file():
        atomic_write_bytes(path, png_bytes(source.load_image()))
    return path


@dataclass(frozen=True)
class Job:
    key: str
    record: dict[str, Any]  # the JSON line

    @classmethod
    def build(
        cls, request: GenerationRequest, subject_image: Path, template_prompt: str, knobs: dict[str, Any]
    ) -> "Job":
        item, source = request.item, request.item.source
        key = job_key(item.item_id)
        record = {
            "id": key,
            "item_id": item.item_id,
            "subject_image": str(subject_image),
            "source_path": str(source.image_path),
            "class_name": source.class_name,
            "subject_word": source.subject_word,
            "location": item.location,
            "prompt": request.prompt,
            "template_prompt": template_prompt,
            "seed": request.seed,
            "height": request.height,
            "width": request.width,
            "knobs": knobs,
        }
        return cls(key, json.loads(json.dumps(record)))  # as it reads back from the file


def write_jobs(path: Path, jobs: list[Job]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(job.record, sort_keys=True) + "\n" for job in jobs).encode())


def result_paths(out_dir: Path, key: str) -> tuple[Path, Path]:
    return out_dir / f"{key}.png", out_dir / f"{key}.json"


def clear_result(out_dir: Path, key: str) -> None:
    """Remove an earlier attempt's files, so only this run's answer can be read for `key`."""
    for path in result_paths(out_dir, key):
        path.unlink(missing_ok=True)


def load_png(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB") if image.mode not in ("RGB", "L") else image.copy()


def read_result(out_dir: Path, job: Job) -> GenerationResult | None:
    """The item's result, or None when there is none for this very job (absent or stale)."""
    image_path, json_path = result_paths(out_dir, job.key)
    if not json_path.is_file():
        return None
    try:
        data = json.loads(json_path.read_text())
    except json.JSONDecodeError:
        return None  # not written by the driver's atomic rename: an interrupted foreign writer
    if data.get("job") != job.record:
        return None
    status = data.get("status")
    info = {
        "external": {
            k: data[k] for k in ("status", "flags", "api", "commit", "device", "peak_gpu_mb") if data.get(k) is not None
        }
    }
    timings = data.get("timings") or None
    if status != STATUS_OK:
        error = f"{status}: {data.get('error') or 'no reason given'}"
        return GenerationResult(image=None, info=info, error=error, timings=timings)
    if not image_path.is_file():
        return GenerationResult(image=None, info=info, error=f"missing image: {image_path.name}", timings=timings)
    try:
        image, artifacts = load_png(image_path), read_artifacts(out_dir, data.get("artifacts"))
    except (RunFolderError, OSError, ValueError) as err:
        # a failed item (its row says why, no image stored); stream() clears the answer, so a rerun asks again
        return GenerationResult(image=None, info=info, error=f"refused answer: {one_line(err)}", timings=timings)
    asked = (job.record["width"], job.record["height"])
    if image.size != asked:  # e.g. a driver that swaps width and height: never stored as if it were right
        made = f"{image.size[0]}x{image.size[1]}"
        error = f"the driver's image is {made} px (width x height); the job asked {asked[0]}x{asked[1]}"
        return GenerationResult(image=None, info=info, error=error, timings=timings)
    return GenerationResult(image=image, artifacts=artifacts, info=info, timings=timings)


def one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def read_artifacts(out_dir: Path, listed: Any) -> dict[str, Image.Image]:
    """The extra images a result lists as {name: file}: each name must be a plain artifact name (it
    becomes part of a file name in the run folder), each file a PNG inside the exchange folder."""
    if not listed:
        return {}
    if not isinstance(listed, dict):
        raise ValueError(f"'artifacts' must map names to files, got {type(listed).__name__}")
    artifacts = {}
    for name, file in listed.items():
        if not ARTIFACT_NAME.match(name):
            raise ValueError(f"artifact name {name!r} is not allowed (letters, digits, '_' or '-')")
        if not isinstance(file, str):
            raise ValueError(f"artifact {name!r} names {file!r}, not a file name")
        artifacts[name] = load_png(inside(out_dir, file))
    return artifacts
