"""Errors a user can act on.

Every message names the file, config key or value at fault and what is allowed, so the CLI can
print it without a traceback. Anything else escaping the harness is a bug and keeps its traceback.
"""


class MonkeyError(Exception):
    """Base class: a problem with input or configuration that the user can fix."""


class ConfigError(MonkeyError):
    """A config key has a value that is not allowed."""


class DataError(MonkeyError):
    """A dataset root, image or prompt file cannot be used."""


class ModelLoadError(MonkeyError):
    """A model named by hub id or local path cannot be loaded (often: offline and not cached)."""


class RunFolderError(MonkeyError):
    """A run folder holds results that conflict with the requested run."""


class OutputError(MonkeyError):
    """The file system refused a write (no space left, read-only, no permission): names the folder."""
