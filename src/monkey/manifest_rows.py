"""What a manifest row must hold, checked field by field: the one gate every stage reads rows through.

Rows are written by the harness, but a manifest is a text file that people edit, copy between
folders and truncate. Every reader (resume, evaluate, report, gallery, study) sorts rows by
`created` and `plan_index`, joins on `config_hash`, and opens `image`: a row whose field has the
wrong type crashed deep inside a stage, and an `image` such as `../../x.png` or `/abs/other.png` was
read as this method's picture. `row_problem` names the first field that is wrong, so the reader
can skip that row with one warning line naming file:line and the field.
"""

import math
import re
from pathlib import Path
from typing import Any

from monkey.names import name_problem

STATUS_OK = "ok"
STATUS_SKIPPED = "skipped"  # not generated: the subject image is unusable (dataset.on_bad_image=skip)
STATUS_FAILED = "failed"  # the method tried and failed (an external process's item): no image, retried on rerun
STATUSES = (STATUS_OK, STATUS_SKIPPED, STATUS_FAILED)
SHA256 = re.compile(r"[0-9a-f]{64}")


def _text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


def _optional(check):
    return lambda value: value is None or check(value)


# field -> (check, what is allowed); every row must hold these
REQUIRED: dict[str, tuple[Any, str]] = {
    "method": (lambda v: _text(v) and name_problem(v) is None, "a method name (one path component)"),
    "item_id": (_text, "a non-empty string"),
    "status": (lambda v: v in STATUSES, f"one of {list(STATUSES)}"),
    "config_hash": (_text, "a non-empty string"),
    "plan_index": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "created": (_number, "a number (seconds since the epoch)"),
    "dataset": (_text, "a non-empty string"),
    "subject": (_text, "a non-empty string"),
    "source_path": (_text, "a non-empty string"),
    "plan_prompt": (lambda v: isinstance(v, str), "a string"),
    "seed": (_integer, "an integer"),
}
# field -> (check, what is allowed); checked when present
OPTIONAL: dict[str, tuple[Any, str]] = {
    "prompt": (_optional(lambda v: isinstance(v, str)), "a string or null"),
    "paper_clip_t_prompt": (_optional(lambda v: isinstance(v, str)), "a string or null"),
    "prompt_index": (_integer, "an integer"),
    "seed_index": (_integer, "an integer"),
    "artifacts": (lambda v: isinstance(v, dict) and all(isinstance(p, str) for p in v.values()), "an object of paths"),
    "info": (_optional(lambda v: isinstance(v, dict)), "an object"),
    "timings": (_optional(lambda v: isinstance(v, dict)), "an object"),
    "batch": (_optional(lambda v: isinstance(v, dict)), "an object or null"),
    "device": (_optional(lambda v: isinstance(v, str)), "a string or null"),
    "source_sha256": (_optional(lambda v: isinstance(v, str) and SHA256.fullmatch(v) is not None), "a sha256"),
    "weights": (_optional(lambda v: isinstance(v, dict)), "an object or null"),
}


def image_problem(image: Any, root: Path | None) -> str | None:
    """Why `image` cannot name a file of this run folder: a relative path of plain names that stays
    inside `root` once symlinks are followed (None when it can)."""
    if not isinstance(image, str) or not image:
        return "not a path"
    for part in image.split("/"):
        problem = name_problem(part)
        if problem is not None:
            return f"{problem} in the path; images live inside the run folder"
    if root is not None:
        real_root = root.resolve()
        if not (root / image).resolve().is_relative_to(real_root):
            return "a link that leaves the run folder"
    return None


def row_problem(row: Any, root: Path | None = None) -> str | None:
    """Why a parsed JSON line is not a manifest row (naming the field and what is allowed), or None."""
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not an object"
    for key, (check, allowed) in REQUIRED.items():
        if key not in row:
            return f"field {key} missing"
        if not check(row[key]):
            return f"field {key}={row[key]!r}, allowed: {allowed}"
    for key, (check, allowed) in OPTIONAL.items():
        if key in row and not check(row[key]):
            return f"field {key}={row[key]!r}, allowed: {allowed}"
    image = row.get("image")
    if row["status"] == STATUS_OK or image is not None:
        problem = image_problem(image, root)
        if problem is not None:
            return f"field image={image!r}: {problem}"
    for name, path in (row.get("artifacts") or {}).items():
        problem = image_problem(path, root)
        if problem is not None:
            return f"field artifacts.{name}={path!r}: {problem}"
    if row["status"] == STATUS_OK and not isinstance(row.get("prompt"), str):
        return f"field prompt={row.get('prompt')!r}, allowed: a string (the row says ok)"
    return None
