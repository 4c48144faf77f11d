"""The one gate for every name that becomes part of a path: method, dataset, run, subject, image,
score-set and import names.

A name is one path component. `path_name` refuses anything else ('..', an absolute path, a separator,
an empty name) with an error naming the key, so nothing a user types or a dataset holds can write
outside the run root. `folder_slug` is the non-raising twin for the one place that cannot raise a
user error (Hydra's output folder, resolved before the app runs): it keeps a bad name inside the run
root until `path_name` refuses it at the app's entry.

File systems refuse a component over 255 bytes (ENAMETOOLONG), and a folder's name is built from what
the user typed (`run.name`, every override of a run: 30 subject names make ~600 bytes). Folder names
are therefore cut to a readable prefix plus a hash of the whole name (`short_name`), the same way in
Hydra's folders and in the app's own paths (`folder_name`), so two long names never share a folder.
A name that becomes a file name (a method in `<method>--<writer>.jsonl`) is refused when longer.
"""

import re

from monkey.errors import ConfigError, MonkeyError
from monkey.hashing import stable_hash

ALLOWED = "a non-empty name without '/', '\\' or control characters, not '.' or '..'"
# UTF-8 bytes, under the file systems' NAME_MAX of 255: the longest folder name kept as typed, and the
# longest name that also names files (`<method>--<writer>.jsonl`, `.<method>-<hash>.json.<random>.tmp`)
MAX_FOLDER_BYTES = 200
MAX_FILE_NAME_BYTES = 100
HASH_LENGTH = 12  # hex digits of sha256 after a shortened name's prefix
_BAD_CHARS = re.compile(r"[/\\\x00-\x1f]")


def name_problem(value: object) -> str | None:
    """Why `value` cannot be one path component, or None when it can."""
    if not isinstance(value, str):
        return f"a name must be text, got {type(value).__name__}"
    if not value.strip():
        return "empty"
    if value in (".", ".."):
        return "it names a folder itself"
    if value.startswith("/"):
        return "an absolute path"
    if _BAD_CHARS.search(value):
        return "a path separator or control character"
    return None


def path_name(value: object, key: str, error: type[MonkeyError] = ConfigError) -> str:
    """`value` when it is a safe single path component that fits a file name; otherwise `error` naming `key`."""
    folder_name(value, key, error)
    size = len(str(value).encode())
    if size > MAX_FILE_NAME_BYTES:
        raise error(
            f"{key}={str(value)[:40]!r}... is too long to name a file ({size} bytes of UTF-8); allowed: at most "
            f"{MAX_FILE_NAME_BYTES} bytes"
        )
    return value  # type: ignore[return-value]


def folder_name(value: object, key: str, error: type[MonkeyError] = ConfigError) -> str:
    """The folder `value` names (`short_name` when long), or `error` naming `key` when it is no single
    path component: `run.name` becomes runs/<folder_name(run.name)>/, as Hydra's `folder_slug` makes it."""
    problem = name_problem(value)
    if problem is not None:
        raise error(f"{key}={value!r} cannot name a folder or file ({problem}); allowed: {ALLOWED}")
    return short_name(value)  # type: ignore[arg-type]


def short_name(name: str) -> str:
    """`name` itself up to MAX_FOLDER_BYTES; else its first bytes (cut at a character), '-' and a hash of all of it."""
    data = name.encode()
    if len(data) <= MAX_FOLDER_BYTES:
        return name
    prefix = data[: MAX_FOLDER_BYTES - HASH_LENGTH - 1].decode(errors="ignore").rstrip()
    return f"{prefix}-{stable_hash(name, HASH_LENGTH)}"


def folder_slug(value: object) -> str:
    """A safe single path component for any value: itself when safe and short, else its bad characters
    replaced and (when long) shortened like `folder_name`, so Hydra's folder and the app's paths agree."""
    text = str(value)
    if name_problem(text) is None:
        return short_name(text)
    slug = _BAD_CHARS.sub("_", text).strip().strip(".") or "_"
    return short_name(slug) if name_problem(slug) is None else "_"
