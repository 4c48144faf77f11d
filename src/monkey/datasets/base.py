"""The dataset row every other stage consumes, and the config entry point that builds the rows."""

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from monkey.errors import ConfigError, DataError
from monkey.hashing import file_sha256, to_plain
from monkey.images import DEFAULT_OPTIONS, ImageOptions, load_rgb
from monkey.names import path_name

log = logging.getLogger(__name__)

# Keys every dataset config may hold; load_sources handles them, so loaders never see them.
COMMON_KEYS = ("_target_", "image", "on_bad_image")
BAD_IMAGE_POLICIES = ("error", "skip")


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
    image_options: ImageOptions = DEFAULT_OPTIONS  # how load_image normalises it (dataset.image)
    meta: tuple[tuple[str, str], ...] = ()  # extra fields for the manifest (e.g. a card's artist and url)
    link_outside_root: str | None = None  # "<link> -> <target>" when a symlink leads out of dataset.root

    @property
    def source_id(self) -> str:
        return f"{self.dataset}/{self.subject}/{self.image_id}"

    def load_image(self) -> Image.Image:
        return load_rgb(self.image_path, self.image_options)

    def sha256(self) -> str:
        return file_sha256(self.image_path)

    def describe(self) -> dict[str, Any]:
        """The fields a manifest row records about its source."""
        fields = {
            "dataset": self.dataset,
            "source_id": self.source_id,
            "subject": self.subject,
            "image_id": self.image_id,
            "source_path": str(self.image_path),
            "class_name": self.class_name,
            "subject_word": self.subject_word,
            "live": self.live,
        }
        if self.meta:
            fields["source_meta"] = dict(self.meta)
        if self.link_outside_root:
            fields["source_link_outside_root"] = self.link_outside_root
        return fields


def require_set(cfg: DictConfig, group: str) -> None:
    """Refuse a config whose mandatory values (`???`) were not given, naming the keys to set."""
    missing = sorted(key if key.startswith(f"{group}.") else f"{group}.{key}" for key in OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"{group} '{cfg.get('name')}' needs {', '.join(missing)}: set it on the command line ({missing[0]}=...)"
        )


def load_sources(dataset_cfg: DictConfig) -> list[Source]:
    """Build the configured dataset (its `_target_` is the loader) and check it is usable."""
    require_set(dataset_cfg, "dataset")
    if "_target_" not in dataset_cfg:
        raise ConfigError(f"dataset config '{dataset_cfg.get('name')}' has no _target_ loader")
    try:
        loader = get_method(dataset_cfg._target_)
    except (ImportError, ValueError) as err:
        raise ConfigError(f"dataset._target_={dataset_cfg._target_!r} cannot be imported: {err}") from err
    options = image_options(dataset_cfg)
    bad_image_policy(dataset_cfg)  # validate now, before any work
    kwargs = {k: v for k, v in to_plain(dataset_cfg).items() if k not in COMMON_KEYS}
    try:
        sources = loader(**kwargs)
    except TypeError as err:
        raise ConfigError(f"dataset '{dataset_cfg.get('name')}' ({dataset_cfg._target_}): {err}") from err
    if not sources:
        raise DataError(f"dataset '{dataset_cfg.get('name')}' has no usable image (root: {dataset_cfg.get('root')})")
    for source in sources:  # names become folders: refuse any that would leave the run folder
        where = f"dataset '{dataset_cfg.get('name')}', {source.image_path}"
        path_name(source.dataset, "dataset.name")
        path_name(source.subject, f"subject of {where}", DataError)
        path_name(source.image_id, f"image id of {where}", DataError)
    ids = [source.source_id for source in sources]
    if len(set(ids)) != len(ids):
        raise DataError(f"dataset '{dataset_cfg.get('name')}' has duplicate source ids")
    sources = [replace(source, image_options=options) for source in sources]
    root = dataset_cfg.get("root")
    return mark_outside_links(sources, Path(root).expanduser()) if root else sources


def link_outside(path: Path, root: Path) -> Path | None:
    """The first folder or file on `path` below `root` that is a symlink leading out of `root`, or None."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return None  # not listed under the root (a hub dataset's export, say)
    real_root, current = root.resolve(), root
    for part in parts:
        current = current / part
        if current.is_symlink() and not current.resolve().is_relative_to(real_root):
            return current
    return None


def mark_outside_links(sources: list[Source], root: Path) -> list[Source]:
    """Say (one warning per link) and record in each source's rows when a subject folder or image is a
    symlink out of `dataset.root`: the dataset's bytes then live elsewhere and may change under it."""
    marked, warned = [], set()
    for source in sources:
        link = link_outside(source.image_path, root)
        if link is None:
            marked.append(source)
            continue
        text = f"{link} -> {link.resolve()}"
        if link not in warned:
            warned.add(link)
            log.warning("dataset.root=%s: %s is a symlink out of the root (recorded in its rows)", root, text)
        marked.append(replace(source, link_outside_root=text))
    return marked


def image_options(dataset_cfg: DictConfig) -> ImageOptions:
    """The `dataset.image` block (fit, min_side, max_side); missing keys keep their defaults."""
    block = to_plain(dataset_cfg.get("image")) or {}
    unknown = sorted(set(block) - set(ImageOptions.__dataclass_fields__))
    if unknown:
        raise ConfigError(
            f"dataset.image has unknown keys {unknown}; allowed: {list(ImageOptions.__dataclass_fields__)}"
        )
    return ImageOptions(**block)


def bad_image_policy(dataset_cfg: DictConfig) -> str:
    """`dataset.on_bad_image`: error (stop, naming the file) or skip (record the skip per item)."""
    policy = dataset_cfg.get("on_bad_image", "error")
    if policy not in BAD_IMAGE_POLICIES:
        raise ConfigError(f"dataset.on_bad_image={policy!r} is not allowed; choose one of {list(BAD_IMAGE_POLICIES)}")
    return policy
