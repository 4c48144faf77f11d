"""Where packaged data lives and where generated caches go."""

import os
from importlib import resources
from pathlib import Path


def data_dir() -> Path:
    """The `data/` folder, from a source checkout or an installed wheel alike."""
    return Path(str(resources.files("monkey.data")))


def bundled_dreambooth_root() -> Path:
    return data_dir() / "dreambooth"


def cache_dir() -> Path:
    """Cache root for tiny checkpoints and shared content caches (MONKEY_CACHE overrides it)."""
    root = os.environ.get("MONKEY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "monkey-bench"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
