"""Write-then-rename helpers: a reader never sees a half-written file, a killed writer leaves none.

Every file the harness writes goes through `atomic_write` (images, manifests' configs, scores,
report tables, plots, parquet): a temp file in the target's folder, fsync, rename. The result gets
the mode `open()` would give it (0666 masked by the umask), so colleagues on a shared machine can
read it; `tempfile.mkstemp` alone would leave every file 0600.

A temp file's name carries its writer (`.<name>.<pid>@<host>.<random>.tmp`), so a stage starting
over a folder can tell the leftovers of a killed writer (`remove_stale_temp_files`) from the temp file
a live writer still holds.
"""

import errno
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from monkey.errors import OutputError

log = logging.getLogger(__name__)
_UMASK_LOCK = threading.Lock()
# errno values that mean "this folder cannot take the file": the user can act on them
UNWRITABLE = {
    errno.ENOSPC: "no space left",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EROFS: "read-only file system",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "a folder is in the way of the file",
    errno.ENAMETOOLONG: "a name in the path is too long",
}


def current_umask() -> int:
    """The process umask (reading it means setting it; the lock keeps threads from seeing 0)."""
    with _UMASK_LOCK:
        mask = os.umask(0)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open(path, "w")` gives a new file: 0666 minus the umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode `mkdir` gives a new folder: 0777 minus the umask."""
    return 0o777 & ~current_umask()


def apply_umask(tree: Path) -> None:
    """Give `tree` and everything below it the modes the umask asks for (folders 0777, files 0666,
    masked). `tempfile.mkdtemp` makes 0700 folders and some writers 0600 files; a cache shared by
    colleagues must not keep those."""
    folder_mode, plain_mode = dir_mode(), file_mode()
    os.chmod(tree, folder_mode)
    for parent, folders, files in os.walk(tree):
        for name in folders:
            os.chmod(os.path.join(parent, name), folder_mode)
        for name in files:
            path = os.path.join(parent, name)
            if not os.path.islink(path):
                os.chmod(path, plain_mode)


def host_tag() -> str:
    """8 hex digits naming this machine: a pid only means something on the machine that issued it."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}@{host_tag()}."


# .<target>.<pid>@<host>.<random>.tmp (mkstemp's random part has no dot)
TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)@(?P<host>[0-9a-f]{8})\.[^.]+\.tmp$")
# a temp file whose writer cannot be checked (another machine, or an old name without pid) is removed
# only when older than this: no atomic write of the harness takes that long between creation and rename
STALE_AFTER_S = 30 * 60


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_temp(path: Path, now: float, host: str) -> bool:
    """Whether `path` (a `.*.tmp` file) is a dead writer's leftover: its pid (on this machine) is gone,
    or it names no pid of this machine and is older than STALE_AFTER_S."""
    match = TEMP_NAME.match(path.name)
    if match and match["host"] == host:
        return not pid_alive(int(match["pid"]))
    try:
        return now - path.stat().st_mtime > STALE_AFTER_S
    except FileNotFoundError:  # renamed into place meanwhile
        return False


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Remove the `.*.tmp` files under `folder` that no live writer holds; return the removed ones.

    Called at a stage's start on the folders it writes, so killed writers' leftovers do not pile up;
    a live writer's temp file (its pid alive here) is never touched.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now, host, removed = time.time(), host_tag(), []
    for path in sorted(folder.rglob(".*.tmp")):
        if path.is_file() and not path.is_symlink() and stale_temp(path, now, host):
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.info("removed %d temp file(s) of killed writers under %s", len(removed), folder)
    return removed


def output_error(err: OSError, path: Path) -> OutputError | None:
    """A one-line error for a write the file system refused, naming the folder; None for other errors."""
    reason = UNWRITABLE.get(err.errno or 0)
    return OutputError(f"cannot write {path.name} in {path.parent}: {reason} ({err.strerror})") if reason else None


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write` on a temp file beside `path`, fsync it, then rename it over `path`.

    A file system that refuses the write (full, read-only, no permission) raises OutputError naming
    the folder; the temp file is removed and whatever was at `path` stays as it was.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        friendly = output_error(err, path)
        if friendly is None:
            raise
        raise friendly from err
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_savefig(fig: Any, path: str | Path, **kwargs: Any) -> None:
    """`fig.savefig(path, ...)` through the atomic path; the format comes from the suffix as usual."""
    fmt = kwargs.pop("format", None) or Path(path).suffix.lstrip(".").lower()
    atomic_write(path, lambda handle: fig.savefig(handle, format=fmt, **kwargs))


def atomic_to_parquet(frame: Any, path: str | Path, **kwargs: Any) -> None:
    """`frame.to_parquet(path)` through the atomic path (pandas writes to any binary handle)."""
    atomic_write(path, lambda handle: frame.to_parquet(handle, **kwargs))
