"""The one gate for every name that becomes part of a path: method, dataset, run, subject, image,
score-set and import names.

A name is one path component. `path_name` refuses anything else ('..', an absolute path, a separator,
an empty name) with an error naming the key, so nothing a user types or a dataset holds can write
outside the run root. `folder_slug` is the non-raising twin for the one place that cannot raise a
user error (Hydra's output folder, resolved before the app runs): it keeps a bad name inside the run
root until `path_name` refuses it at the app's entry.
"""

import re

from monkey.errors import ConfigError, MonkeyError

ALLOWED = "a non-empty name without '/', '\\' or control characters, not '.' or '..'"
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
    """`value` when it is a safe single path component; otherwise `error` naming `key`."""
    problem = name_problem(value)
    if problem is not None:
        raise error(f"{key}={value!r} cannot name a folder or file ({problem}); allowed: {ALLOWED}")
    return value  # type: ignore[return-value]


def folder_slug(value: object) -> str:
    """A safe single path component for any value: itself when safe, else its bad characters replaced."""
    text = str(value)
    if name_problem(text) is None:
        return text
    slug = _BAD_CHARS.sub("_", text).strip().strip(".") or "_"
    return slug if name_problem(slug) is None else "_"
