"""Per-image score records in a run folder: one JSON file per (method, item), written atomically.

Layout:
    scores/<eval.name>/eval_config.json               what the scores mean (backbones, references)
    scores/<eval.name>/items/<method>/<item_id>.json  one record per scored image
    scores/<eval.name>/items/oracle/<item_id>.json    the real-image reference row of that item
    scores/<eval.name>/judge/<method>/<item_id>.json  the judge's ratings of that image (monkey.eval.judge_run)

One file per key keeps concurrent evaluators (shards scoring one folder in parallel) correct without
locks: they write disjoint keys, and two writers of one key write the same record. A record carries
the image's SHA-256 and file stat, so a regenerated image is rescored and an unchanged one never is.
"""

import json
import math
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
from monkey.eval.masked_columns import FLAG_COLUMN, TEXT_COLUMN

from monkey.atomic import atomic_write_json
from monkey.errors import RunFolderError
from monkey.hashing import stable_hash
from monkey.names import path_name

SCORES_DIR = "scores"
ORACLE = "oracle"  # reserved method label of the real-image reference rows
JUDGE_DIR = "judge"
MASKED_DIR = "masked"  # eval.masked's records (monkey.eval.masked), beside items/ and judge/
MASKED_FIELDS = (FLAG_COLUMN, TEXT_COLUMN)  # a masked record's text columns
FRAME_OMITS = ("scores", "metric_columns", "image_stat")  # bookkeeping, not data
TRANSFORMS = "transforms"  # eval_config.json: each backbone's preprocessing as it ran (descriptive)
IGNORED_BY_OPEN_CLIP = ("resize", "crop")  # open_clip uses its model's own transform


def comparable_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The part of an eval_config.json that decides the numbers: without the descriptive transforms,
    and without the resize/crop keys older files listed for open_clip backbones (never used)."""
    out = {k: v for k, v in settings.items() if k != TRANSFORMS}
    backbones = {}
    for key, spec in (out.get("backbones") or {}).items():
        if spec.get("kind") == "open_clip":
            spec = {k: v for k, v in spec.items() if k not in IGNORED_BY_OPEN_CLIP}
        backbones[key] = spec
    if "backbones" in out:
        out["backbones"] = backbones
    return out


def record_problem(record: Any) -> str | None:
    """Why a parsed score file is not a score record (naming the field), or None when it is one."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    for key in ("method", "item_id"):
        if not isinstance(record.get(key), str) or not record[key]:
            return f"field {key}={record.get(key)!r}, allowed: a non-empty string"
    scores = record.get("scores")
    if not isinstance(scores, dict):
        return f"field scores={scores!r}, allowed: an object of metric -> number or null"
    for metric, value in scores.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if value is not None and not (number and math.isfinite(value)):
            return f"field scores.{metric}={value!r}, allowed: a number or null"
    created = record.get("created", 0.0)  # written by every evaluator; read by none, so it may be absent
    if not isinstance(created, int | float) or isinstance(created, bool):
        return f"field created={created!r}, allowed: a number (seconds since the epoch)"
    return None


def read_record(path: Path) -> dict[str, Any] | None:
    """One score file, checked; a file that is not a record is skipped with one warning naming it and
    the field (the evaluate stage then rescores that item)."""
    try:
        record = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError):
        warnings.warn(f"{path}:1: unreadable score file skipped (it is rescored by the evaluate stage)", stacklevel=2)
        return None
    problem = record_problem(record)
    if problem is not None:
        warnings.warn(f"{path}:1: not a score record ({problem}); file skipped", stacklevel=2)
        return None
    return record


class ScoreSet:
    def __init__(self, run_dir: str | Path, name: str):
        self.run_dir = Path(run_dir)
        self.name = path_name(name, "eval.name")
        self.root = self.run_dir / SCORES_DIR / name

    def check(self, settings: dict[str, Any]) -> str:
        """Refuse a folder whose score set `name` means something else; return the settings' hash."""
        old = self.settings()
        if old is not None:
            old = comparable_settings(old)
        if old is not None and old != settings:
            from monkey.runner import diff_keys  # imported on use: it pulls in the generation stack

            changes = "; ".join(diff_keys(old, settings)[:8])
            raise RunFolderError(
                f"{self.root / 'eval_config.json'} holds scores made with other settings ({changes}). Give the "
                f"new settings another eval.name, or delete {self.root} to rescore."
            )
        return stable_hash(settings)

    def register(self, settings: dict[str, Any], transforms: dict[str, Any] | None = None) -> str:
        """Record what these scores mean (before the first record is written), with the preprocessing
        each loaded backbone actually runs (`transforms`: a description, not part of the comparison)."""
        digest = self.check(settings)
        if self.settings() is None:
            atomic_write_json(self.root / "eval_config.json", {**settings, TRANSFORMS: transforms or {}})
        return digest

    def settings(self) -> dict[str, Any] | None:
        path = self.root / "eval_config.json"
        if not path.is_file():
            return None
        try:
            settings = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RunFolderError(f"{path} is not readable JSON ({err}): delete {self.root} to rescore") from err
        if not isinstance(settings, dict):
            raise RunFolderError(f"{path} holds a JSON {type(settings).__name__}, not an object: delete {self.root}")
        return settings

    def path(self, method: str, item_id: str) -> Path:
        parts = [path_name(method, "method"), *(path_name(part, "item id") for part in item_id.split("/"))]
        return self.root.joinpath("items", *parts[:-1], f"{parts[-1]}.json")

    def read(self, method: str, item_id: str) -> dict[str, Any] | None:
        path = self.path(method, item_id)
        return read_record(path) if path.is_file() else None

    def write(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.path(record["method"], record["item_id"]), record)

    def records(self) -> list[dict[str, Any]]:
        records = (read_record(path) for path in sorted((self.root / "items").rglob("*.json")))
        return [record for record in records if record is not None]

    def judge_path(self, method: str, item_id: str) -> Path:
        items = self.path(method, item_id)  # the same names, under judge/ instead of items/
        return self.root / JUDGE_DIR / items.relative_to(self.root / "items")

    def read_judge(self, method: str, item_id: str) -> dict[str, Any] | None:
        path = self.judge_path(method, item_id)
        return json.loads(path.read_text()) if path.is_file() else None

    def write_judge(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.judge_path(record["method"], record["item_id"]), record)

    def judge_scores(self, record: dict[str, Any]) -> dict[str, Any]:
        """The judge's columns of a score record: only from ratings of these very image bytes."""
        if record["method"] == ORACLE:
            return {}
        judged = self.read_judge(record["method"], record["item_id"])
        if judged is None or judged.get("image_sha256") != record.get("image_sha256"):
            return {}
        return {key: value for key, value in judged.items() if key.startswith("judge_") and key != "judge_model"}

    def masked_path(self, method: str, item_id: str) -> Path:
        items = self.path(method, item_id)  # the same names, under masked/ instead of items/
        return self.root / MASKED_DIR / items.relative_to(self.root / "items")

    def read_masked(self, method: str, item_id: str) -> dict[str, Any] | None:
        path = self.masked_path(method, item_id)
        return read_record(path) if path.is_file() else None

    def write_masked(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.masked_path(record["method"], record["item_id"]), record)

    def masked_columns(self, record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(scores, text fields) of a score record's masked metrics: only from these very image bytes."""
        masked = self.read_masked(record["method"], record["item_id"])
        if masked is None or masked.get("image_sha256") != record.get("image_sha256"):
            return {}, {}
        return masked["scores"], {key: masked.get(key) for key in MASKED_FIELDS}

    def frame(self) -> pd.DataFrame:
        """One row per record; the `scores` dict (and the judge's ratings and the masked metrics, when there
        are any) becomes one column per metric (None -> NaN)."""
        records = self.records()
        if not records:
            return pd.DataFrame()
        for record in records:
            masked, fields = self.masked_columns(record)
            record["scores"] = {**record["scores"], **self.judge_scores(record), **masked}
            record.update(fields)
        rows = [{**{k: v for k, v in r.items() if k not in FRAME_OMITS}, **r["scores"]} for r in records]
        frame = pd.DataFrame(rows)
        for metric in {m for r in records for m in r["scores"]}:
            frame[metric] = pd.to_numeric(frame[metric], errors="coerce").astype(float)
        return frame


def score_set_names(run_dir: str | Path) -> list[str]:
    root = Path(run_dir) / SCORES_DIR
    return sorted(p.parent.name for p in root.glob("*/eval_config.json"))
