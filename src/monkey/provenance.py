"""Which exact inputs and weights made a row: source-image hashes and checkpoint identities.

A config hash names the settings, not the bytes they point at: a replaced subject photo or a
re-downloaded checkpoint gave the same hash, so a resumed folder silently mixed images of two
inputs. Each row therefore records `source_sha256` and `weights`; resume compares them with the
files as they are now and refuses the run, naming the file, when they differ.

A checkpoint is identified by its hub snapshot commit when it comes from the hub cache (the folder
`.../snapshots/<commit>/` it resolves to), else by the SHA-256 of its files. File hashes are cached
by (path, size, mtime) under the cache root, so a 5 GB local model is hashed once, not every run.
The full file list of a checkpoint is kept in the run folder (`configs/weights-<digest>.json`), so
a refusal can name the file that changed while each row carries only the digest.
"""

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monkey.atomic import atomic_write_bytes, atomic_write_json
from monkey.errors import RunFolderError
from monkey.hashing import file_sha256, stable_hash
from monkey.paths import cache_dir

HASH_CACHE = "file-sha256"  # namespace under the cache root: one small file per (path, size, mtime)
WEIGHTS_PREFIX = "weights-"  # configs/weights-<digest>.json: a checkpoint's files and their hashes


def cached_file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered by (real path, size, mtime_ns): a changed file gets a new key."""
    real = path.resolve()
    stat = real.stat()
    key = stable_hash([str(real), stat.st_size, stat.st_mtime_ns], 32)
    memo = cache_dir() / HASH_CACHE / key[:2] / key
    if memo.is_file():
        text = memo.read_text().strip()
        if len(text) == 64:
            return text
    digest = file_sha256(real)
    atomic_write_bytes(memo, digest.encode())
    return digest


class FileHashes:
    """SHA-256 of files (source images, evaluated images), once per path per process.

    `missing` decides what a path that is not a file raises: None leaves it to reading the file (an
    OSError, for callers that check existence themselves, as check_inputs does); a function of the
    path gives the caller's own error instead (evaluation: a RunFolderError naming the image)."""

    def __init__(self, missing: Callable[[str], Exception] | None = None) -> None:
        self.memo: dict[str, str] = {}
        self.missing = missing

    def __call__(self, path: str | Path) -> str:
        key = str(path)
        if key not in self.memo:
            if self.missing is not None and not Path(key).is_file():
                raise self.missing(key)
            self.memo[key] = file_sha256(key)
        return self.memo[key]


def folder_files(root: Path) -> dict[str, str]:
    """relative path -> SHA-256 of every file under `root` (or of `root` itself when it is a file)."""
    if root.is_file():
        return {root.name: cached_file_sha256(root)}

    def hidden(path: Path) -> bool:  # e.g. `hf download --local-dir`'s .cache/ metadata, rewritten at will
        return any(part.startswith(".") for part in path.relative_to(root).parts)

    files = sorted(p for p in root.rglob("*") if p.is_file() and not hidden(p))
    return {p.relative_to(root).as_posix(): cached_file_sha256(p) for p in files}


def hub_snapshot(repo_id: str, filename: str, revision: str | None) -> str | None:
    """The snapshot commit the hub cache resolves `repo_id`/`filename` at `revision` to (None: not cached)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
    except ValueError:  # not a valid repo id
        return None
    if not isinstance(found, str):
        return None
    parts = Path(found).parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else None


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint a row used: a local folder/file, or a hub repo (probed through `probe`, a file in it)."""

    role: str  # base, adapter, image_encoder, or a metric backbone's key
    source: str  # a local path or a hub id
    probe: str = "model_index.json"  # a hub file whose snapshot names the commit
    revision: str | None = None  # the pinned revision (None: the cache's main)

    def identity(self) -> tuple[dict[str, Any], dict[str, str] | None]:
        """(the row's record of this checkpoint, its file hashes when local)."""
        path = Path(self.source).expanduser()
        if path.exists():
            files = folder_files(path)
            return {"source": str(path), "files": stable_hash(files)}, files
        snapshot = hub_snapshot(self.source, self.probe, self.revision)
        return {"source": self.source, "revision": self.revision, "snapshot": snapshot}, None


@dataclass(frozen=True)
class Weights:
    """What rows record about their checkpoints, and the file lists behind local ones' digests."""

    record: dict[str, dict[str, Any]]  # role -> identity: what each row carries as `weights`
    file_lists: dict[str, dict[str, str]]  # digest -> {relative path: sha256}

    def resolved(self) -> bool:
        return all(resolved(identity) for identity in self.record.values())


def weights_record(checkpoints: list[Checkpoint]) -> Weights:
    """The identity of every checkpoint (role -> record), with the file lists of local ones."""
    record, file_lists = {}, {}
    for checkpoint in checkpoints:
        identity, files = checkpoint.identity()
        record[checkpoint.role] = identity
        if files is not None:
            file_lists[identity["files"]] = files
    return Weights(record, file_lists)


def keep_file_lists(store_root: Path, weights: Weights) -> None:
    """Keep each local checkpoint's file list in the run folder (once the run is accepted), so a later
    refusal can name the file that changed."""
    for digest, files in weights.file_lists.items():
        path = store_root / "configs" / f"{WEIGHTS_PREFIX}{digest}.json"
        if not path.exists():
            atomic_write_json(path, files)


def resolved(identity: dict[str, Any]) -> bool:
    return identity.get("files") is not None or identity.get("snapshot") is not None


def weights_change(old: dict[str, Any], new: Weights, store_root: Path) -> str | None:
    """What differs between two weights records (one phrase naming the checkpoint and file), or None.
    A checkpoint absent from either side, or a hub snapshot not yet in the cache, is not compared."""
    for role in sorted(set(old) & set(new.record)):
        before, now = old[role], new.record[role]
        if not (isinstance(before, dict) and resolved(before) and resolved(now)):
            continue
        if before.get("files") is not None and now.get("files") is not None:  # local: the bytes, wherever they lie
            if before["files"] != now["files"]:
                changed = changed_files(before["files"], now["files"], store_root, new)
                return f"{role} weights in {now['source']}: {changed}"
        elif (before.get("source"), before.get("snapshot")) != (now.get("source"), now.get("snapshot")):
            return (
                f"{role} weights {before.get('source')}@{before.get('snapshot') or 'local files'} -> "
                f"{now.get('source')}@{now.get('snapshot') or 'local files'}"
            )
    return None


def changed_files(old_digest: str, new_digest: str, store_root: Path, new: Weights) -> str:
    """The files of a local checkpoint whose hashes differ: the old list is the one kept in the run folder."""

    def load(digest: str) -> dict[str, str] | None:
        if digest in new.file_lists:
            return new.file_lists[digest]
        path = store_root / "configs" / f"{WEIGHTS_PREFIX}{digest}.json"
        try:
            return json.loads(path.read_text()) if path.is_file() else None
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            return None

    old, new = load(old_digest), load(new_digest)
    if old is None or new is None:
        return f"file hashes {old_digest} -> {new_digest}"
    names = sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))
    shown = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
    return f"{shown} changed"


def check_inputs(store_root: Path, rows: list[dict[str, Any]], sources: FileHashes) -> None:
    """Refuse when a finished row's recorded source image now has other bytes (or is gone)."""
    for row in rows:
        recorded = row.get("source_sha256")
        if recorded is None:
            continue  # rows written before hashes were recorded: nothing to compare
        path = row["source_path"]
        now = sources(path) if os.path.isfile(path) else None
        if now != recorded:
            state = "is gone" if now is None else f"changed (sha256 {recorded[:12]}... -> {now[:12]}...)"
            raise RunFolderError(
                f"source image {path} {state} since item {row['item_id']} of method '{row['method']}' was made from "
                f"it in {store_root}: restore the file, or use another run.name for the new input"
            )


def check_weights(store_root: Path, label: str, rows: list[dict[str, Any]], weights: Weights) -> None:
    """Refuse to add rows made with other weights to a folder whose finished rows record theirs."""
    for row in rows:
        old = row.get("weights")
        if not isinstance(old, dict):
            continue
        change = weights_change(old, weights, store_root)
        if change is not None:
            raise RunFolderError(
                f"run folder {store_root} holds images of method '{label}' made with other weights ({change}): "
                "use another run.name, pin the old revision, or delete that folder to regenerate"
            )
