"""Write-then-rename helpers: a reader never sees a half-written file, a killed writer leaves none.

Every file the harness writes goes through `atomic_write` (images, manifests' configs, scores,
report tables, plots, parquet): a temp file in the target's folder, fsync, rename. The result gets
the mode `open()` would give it (0666 masked by the umask), so colleagues on a shared machine can
read it; `tempfile.mkstemp` alone would leave every file 0600.
"""

import errno
import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from monkey.errors import OutputError

_UMASK_LOCK = threading.Lock()
# errno values that mean "this folder cannot take the file": the user can act on them
UNWRITABLE = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded", errno.EACCES: "permission denied",
              errno.EROFS: "read-only file system", errno.EPERM: "operation not permitted",
              errno.ENOTDIR: "a part of the path is a file, not a folder",
              errno.EISDIR: "a folder is in the way of the file", errno.ENAMETOOLONG: "a name in the path is too long"}


def current_umask() -> int:
    """The process umask (reading it means setting it; the lock keeps threads from seeing 0)."""
    with _UMASK_LOCK:
        mask = os.umask(0)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open(path, "w")` gives a new file: 0666 minus the umask."""
    return 0o666 & ~current_umask()


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
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
