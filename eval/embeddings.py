"""Embeddings by content, once per backbone: `<run folder>/cache/embeddings/<backbone identity>/`.

Keys are the SHA-256 of an image file's bytes or of a prompt's text, so an image or prompt shared by
many items (a source, a prompt used by every subject) is embedded once, a regenerated image gets a
new key, and concurrent shards write identical files under the same name (atomic, per key).
"""

from collections.abc import Callable
from pathlib import Path

import torch
from monkey.eval.backbones import Backbone
from PIL import Image
from tqdm.auto import tqdm

from monkey.cache import ContentCache
from monkey.hashing import bytes_sha256

CACHE_DIR = "cache/embeddings"


def text_key(text: str) -> str:
    return bytes_sha256(b"text\0" + text.encode("utf-8"))


class EmbeddingCache:
    """A backbone's embeddings on disk and in memory; missing ones are computed in batches."""

    def __init__(self, run_dir: Path, backbone: Backbone):
        self.backbone = backbone
        self.disk = ContentCache(run_dir / CACHE_DIR, backbone.identity)
        self.memo: dict[str, torch.Tensor] = {}  # key -> [D]

    def _lookup(self, keys: list[str]) -> list[str]:
        """Fill the memo from disk; return the keys still missing (unique, in order)."""
        missing = []
        for key in dict.fromkeys(keys):
            if key in self.memo:
                continue
            stored = self.disk.get_tensors(key)
            if stored is None:
                missing.append(key)
            else:
                self.memo[key] = stored["embedding"]
        return missing

    def _store(self, keys: list[str], embeddings: torch.Tensor) -> None:
        for key, embedding in zip(keys, embeddings, strict=True):
            self.memo[key] = embedding.clone()
            self.disk.put_tensors(key, {"embedding": self.memo[key]})

    def images(
        self, keys: list[str], load: Callable[[str], Image.Image], desc: str = "images"
    ) -> dict[str, torch.Tensor]:
        """key -> [D] for image keys; `load(key)` opens an image not yet embedded."""
        missing = self._lookup(keys)
        step = self.backbone.batch_size
        with tqdm(total=len(missing), desc=f"{self.backbone.spec.key}: {desc}", unit="img", disable=not missing) as bar:
            for start in range(0, len(missing), step):
                chunk = missing[start : start + step]
                self._store(chunk, self.backbone.embed_images([load(key) for key in chunk]))
                bar.update(len(chunk))
        return {key: self.memo[key] for key in keys}

    def texts(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """text -> [D]."""
        by_key = {text_key(text): text for text in texts}
        missing = self._lookup(list(by_key))
        if missing:
            self._store(missing, self.backbone.embed_texts([by_key[key] for key in missing]))
        return {text: self.memo[text_key(text)] for text in texts}
