"""A content-addressed cache on disk: one file per key, written atomically.

Keys are content hashes (of an image file, a prompt, a config), so concurrent writers of the same key
write the same bytes and the last rename wins harmlessly. Shared by the subject-embedding cache,
evaluation embeddings and MONKEY's pass-1 maps.
"""

from pathlib import Path

import torch
from safetensors.torch import load_file, save

from monkey.atomic import atomic_write_bytes


class ContentCache:
    def __init__(self, root: str | Path, namespace: str):
        self.root = Path(root) / namespace
        self.hits = 0
        self.misses = 0

    def path(self, key: str, suffix: str = ".safetensors") -> Path:
        return self.root / key[:2] / f"{key}{suffix}"

    def get_tensors(self, key: str) -> dict[str, torch.Tensor] | None:
        path = self.path(key)
        if not path.is_file():
            self.misses += 1
            return None
        self.hits += 1
        return load_file(path)

    def put_tensors(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        plain = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
        atomic_write_bytes(self.path(key), save(plain))

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()
