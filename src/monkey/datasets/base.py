"""The dataset row every other stage consumes, and the config entry point that builds the rows."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import get_method
from omegaconf import DictConfig
from PIL import Image

from monkey.errors import ConfigError, DataError
from monkey.hashing import file_sha256, to_plain
from monkey.images import load_rgb


@dataclass(frozen=True)
class Source:
    """One subject image of a dataset: the reference that methods personalise from."""

    dataset: str  # dataset name, e.g. "dreambooth"
    subject: str  # subject folder/name, e.g. "bear_plushie"
    image_id: str  # image name within the subject, e.g. "00"
    image_path: Path
    class_name: str  # e.g. "stuffed animal"
    subject_word: str  # word(s) that enter the prompt, e.g. "bear plushie"
    live: bool  # live subject (animal) rather than object

    @property
    def source_id(self) -> str:
        return f"{self.dataset}/{self.subject}/{self.image_id}"

    def load_image(self) -> Image.Image:
        return load_rgb(self.image_path)

    def sha256(self) -> str:
        return file_sha256(self.image_path)

    def describe(self) -> dict[str, Any]:
        """The fields a manifest row records about its source."""
        return {
            "dataset": self.dataset,
            "source_id": self.source_id,
            "subject": self.subject,
            "image_id": self.image_id,
            "source_path": str(self.image_path),
            "class_name": self.class_name,
            "subject_word": self.subject_word,
            "live": self.live,
        }


def load_sources(dataset_cfg: DictConfig) -> list[Source]:
    """Build the configured dataset (its `_target_` is the loader) and check it is usable."""
    if "_target_" not in dataset_cfg:
        raise ConfigError(f"dataset config '{dataset_cfg.get('name')}' has no _target_ loader")
    try:
        loader = get_method(dataset_cfg._target_)
    except (ImportError, ValueError) as err:
        raise ConfigError(f"dataset._target_={dataset_cfg._target_!r} cannot be imported: {err}") from err
    kwargs = {k: v for k, v in to_plain(dataset_cfg).items() if k != "_target_"}
    try:
        sources = loader(**kwargs)
    except TypeError as err:
        raise ConfigError(f"dataset '{dataset_cfg.get('name')}' ({dataset_cfg._target_}): {err}") from err
    if not sources:
        raise DataError(f"dataset '{dataset_cfg.get('name')}' has no usable image (root: {dataset_cfg.get('root')})")
    ids = [source.source_id for source in sources]
    if len(set(ids)) != len(ids):
        raise DataError(f"dataset '{dataset_cfg.get('name')}' has duplicate source ids")
    return sources
