"""The run folder: images named by work item, and one append-only manifest file per writer.

Layout of a run folder:
    images/<method>/<dataset>/<subject>/<image>_pNN_sK.png   one file per finished item
    manifest/<method>--<writer>.jsonl                         rows appended by one process only
    configs/<method>-<config_hash>.json                       the generation config behind a hash

Each shard (or importer) appends to its own manifest file under an exclusive lock, so writers never
share a file; readers take the union. An image is renamed into place before its row is appended,
so a row always points at a complete image, and a killed run resumes by skipping rows marked ok.
"""

import contextlib
import fcntl
import io
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from monkey.atomic import atomic_write_bytes, atomic_write_json
from monkey.errors import RunFolderError
from monkey.manifest_rows import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED, row_problem  # noqa: F401 (re-exported)
from monkey.names import path_name

MANIFEST_DIR = "manifest"
CONFIG_DIR = "configs"


def png_bytes(image: Image.Image, text: dict[str, str] | None = None) -> bytes:
    """Encode a PNG; `text` goes into tEXt chunks so a copied image still says how it was made."""
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


class ManifestWriter:
    """Appends JSON rows to one manifest file that this process alone holds (flock)."""

    def __init__(self, path: Path, before_first_row: Callable[[], None] | None = None):
        """`before_first_row` runs once, just before the first row is written (the runner registers its
        config there): a run refused before its first row leaves neither that nor an empty manifest."""
        self.path = path
        self.before_first_row = before_first_row
        self.rows_written = 0
        created_folder = not path.parent.is_dir()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)  # the umask decides, as for open()
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(self.fd)
            raise RunFolderError(
                f"another process is writing {path}: two processes were given the same shard (check shard/num_shards)"
            ) from err
        self._drop_partial_tail()
        # empty when opened: removed again on close if this writer adds no row
        self.empty_at_start = os.fstat(self.fd).st_size == 0
        self.created_folder = created_folder

    def _drop_partial_tail(self) -> None:
        """A writer killed mid-append leaves a line without newline: cut it before appending."""
        size = os.fstat(self.fd).st_size
        if size == 0:
            return
        data = os.pread(self.fd, size, 0)
        if data.endswith(b"\n"):
            return
        os.ftruncate(self.fd, data.rfind(b"\n") + 1)

    def append(self, row: dict[str, Any]) -> None:
        if self.rows_written == 0 and self.before_first_row is not None:
            self.before_first_row()
        line = json.dumps(row, sort_keys=True, default=str) + "\n"
        os.write(self.fd, line.encode())  # one write() of one line, on an O_APPEND descriptor
        os.fsync(self.fd)
        self.rows_written += 1

    def close(self) -> None:
        if self.fd >= 0:
            if self.rows_written == 0 and self.empty_at_start and os.fstat(self.fd).st_size == 0:
                self.path.unlink(missing_ok=True)  # still under our lock: nobody else appends to it
                if self.created_folder:
                    with contextlib.suppress(OSError):  # another writer's file is there: keep the folder
                        self.path.parent.rmdir()
            os.close(self.fd)  # closing releases the lock
            self.fd = -1

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_manifest_file(path: Path, root: Path | None = None) -> list[dict[str, Any]]:
    """The rows of one manifest file, each checked field by field (monkey.manifest_rows; `image` must stay
    inside `root`). A line that is not a row (garbage, or JSON with a missing or mistyped field) is
    skipped with one warning naming the file, the line and the field, so one bad line never blocks a folder."""
    rows = []
    lines = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if number == len(lines):  # a partial last line of a killed writer: not a finished item
                continue
            warnings.warn(f"{path}:{number}: unreadable manifest line skipped", stacklevel=2)
            continue
        problem = row_problem(row, root)
        if problem is not None:
            warnings.warn(f"{path}:{number}: not a manifest row ({problem}); line skipped", stacklevel=2)
            continue
        rows.append(row)
    return rows


class RunStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # ---- files -------------------------------------------------------------------------------
    def write_image(self, relpath: str, image: Image.Image, text: dict[str, str] | None = None) -> None:
        atomic_write_bytes(self.inside(relpath), png_bytes(image, text))

    def write_bytes(self, relpath: str, data: bytes) -> None:
        atomic_write_bytes(self.inside(relpath), data)

    def inside(self, relpath: str) -> Path:
        """root/relpath, every component a plain name (monkey.names), so no write leaves the folder."""
        parts = relpath.split("/")
        for part in parts:
            path_name(part, f"path component of {relpath!r}", RunFolderError)
        return self.root.joinpath(*parts)

    def artifact_relpath(self, image_relpath: str, name: str, artifact: Image.Image | np.ndarray) -> str:
        """Where an artifact goes beside its image (<stem>.<name>.png or .npy), its name checked: the
        runner asks before writing the image, so a refused name leaves no image without its row."""
        path_name(name, "artifact name", RunFolderError)  # one plain name: no folder of its own
        relpath = f"{image_relpath.removesuffix('.png')}.{name}.{'png' if isinstance(artifact, Image.Image) else 'npy'}"
        self.inside(relpath)
        return relpath

    def write_artifact(self, image_relpath: str, name: str, artifact: Image.Image | np.ndarray) -> str:
        """Save an artifact beside its image (<stem>.<name>.png or .npy); return its relative path."""
        relpath = self.artifact_relpath(image_relpath, name, artifact)
        if isinstance(artifact, Image.Image):
            self.write_image(relpath, artifact)
        else:
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(artifact), allow_pickle=False)
            self.write_bytes(relpath, buffer.getvalue())
        return relpath

    # ---- manifest ----------------------------------------------------------------------------
    def writer(self, method: str, writer_id: str, before_first_row: Callable[[], None] | None = None) -> ManifestWriter:
        name = f"{path_name(method, 'method.name')}--{path_name(writer_id, 'manifest writer')}.jsonl"
        return ManifestWriter(self.root / MANIFEST_DIR / name, before_first_row)

    def manifest_files(self) -> list[Path]:
        return sorted((self.root / MANIFEST_DIR).glob("*.jsonl"))

    def rows(self, method: str | None = None) -> list[dict[str, Any]]:
        """Latest row per (method, item_id) over every writer's file, in plan order when known."""
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for path in self.manifest_files():
            for row in read_manifest_file(path, self.root):
                if method is not None and row.get("method") != method:
                    continue
                key = (row["method"], row["item_id"])
                if key not in latest or row["created"] >= latest[key]["created"]:
                    latest[key] = row
        return sorted(latest.values(), key=lambda r: (r["method"], r["plan_index"], r["item_id"]))

    def finished(self, method: str) -> dict[str, dict[str, Any]]:
        """item_id -> row for the items of `method` whose image is stored."""
        return {
            row["item_id"]: row
            for row in self.rows(method)
            if row.get("status") == STATUS_OK and (self.root / row["image"]).is_file()
        }

    # ---- configs -----------------------------------------------------------------------------
    def register_config(self, method: str, config_hash: str, config: dict[str, Any]) -> None:
        """Keep the config behind a hash so a conflicting rerun can say which keys differ."""
        path = self.root / CONFIG_DIR / f"{path_name(method, 'method.name')}-{config_hash}.json"
        if not path.exists():
            atomic_write_json(path, config)

    def load_config(self, method: str, config_hash: str) -> dict[str, Any] | None:
        path = self.root / CONFIG_DIR / f"{path_name(method, 'method.name')}-{config_hash}.json"
        return json.loads(path.read_text()) if path.is_file() else None


def now() -> float:
    return time.time()
