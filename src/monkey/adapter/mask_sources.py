"""Where MONKEY's subject mask comes from (`method.mask_source`).

- `attention` (the paper): pass 1's attention map, thresholded (masks.py).
- `segmenter`: a segmenter's subject mask of the pass-1 image, through the interface the evaluation
  uses (`segmenter(image, source) -> [H, W] bool`, monkey.rank.segmenters; `method.segmenter` is its
  config with a `_target_`).
- `refined`: the attention mask refined with SAM's automatic masks of the pass-1 image by the reference
  code's `overlap` / `exclusive` rules (refine.py; `method.refine`).

Both image sources need pass 1 run to its end and decoded (sharing.py caches that image beside the
maps). Their mask replaces the attention mask at image size; an empty one follows `method.degenerate`
as an empty attention mask does.
"""

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from hydra.utils import instantiate
from PIL import Image

from monkey.adapter.masks import DegenerateMaskError, ItemMask
from monkey.adapter.refine import RefineRule, refine_mask
from monkey.adapter.settings import MASK_SOURCES, MonkeySettings
from monkey.datasets.base import Source
from monkey.errors import ConfigError
from monkey.hashing import to_plain


@dataclass
class SourcedMask:
    mask: torch.Tensor  # [H, W] float at the pass-1 image's size
    info: dict[str, Any] = field(default_factory=dict)  # for the manifest row


class ImageMaskSource(Protocol):
    """A mask source that reads the pass-1 image."""

    name: str

    def __call__(self, image: Image.Image, attention: torch.Tensor, source: Source | None) -> SourcedMask:
        """`attention`: the item's attention mask at image size [H, W]."""


@dataclass(frozen=True)
class RefineSettings:
    """`method.refine`, typed: the rule and the automatic masker's config (with its `_target_`)."""

    rule: RefineRule
    auto_masks: dict[str, Any]

    @classmethod
    def from_config(cls, refine: dict[str, Any] | None, exclusive_product: bool = False) -> "RefineSettings":
        plain = {**dict(to_plain(refine) or {}), "paper_bug_exclusive_product": bool(exclusive_product)}
        auto_masks = plain.pop("auto_masks", None)
        if not isinstance(auto_masks, dict) or "_target_" not in auto_masks:
            raise ConfigError(
                f"method.refine.auto_masks={auto_masks!r} must be a config with a _target_ "
                "(e.g. monkey.adapter.auto_masks.SamAutoMasker)"
            )
        try:
            rule = RefineRule(**plain)
        except TypeError as err:
            allowed = [key for key in RefineRule.__dataclass_fields__ if not key.startswith("paper_")] + ["auto_masks"]
            raise ConfigError(f"method.refine has an unknown key ({err}); allowed: {allowed}") from err
        return cls(rule, auto_masks)


class SegmenterMaskSource:
    """The segmenter's subject mask of the pass-1 image; the attention mask is not used."""

    name = "segmenter"

    def __init__(self, segmenter: Any):
        self.segmenter = segmenter

    def __call__(self, image: Image.Image, attention: torch.Tensor, source: Source | None) -> SourcedMask:
        if source is None:
            raise ValueError("mask_source=segmenter needs each item's Source (its subject word)")
        mask = torch.as_tensor(self.segmenter(image, source)).bool()
        if tuple(mask.shape) != (image.height, image.width):
            raise ValueError(f"the segmenter returned a {tuple(mask.shape)} mask for a {image.size} pass-1 image")
        return SourcedMask(mask.float(), {"mask_source": self.name})


class RefinedMaskSource:
    """The attention mask refined with the automatic masks of the pass-1 image."""

    name = "refined"

    def __init__(self, auto_masker: Any, rule: RefineRule):
        self.auto_masker, self.rule = auto_masker, rule

    def __call__(self, image: Image.Image, attention: torch.Tensor, source: Source | None) -> SourcedMask:
        refined = refine_mask(attention, self.auto_masker(image), self.rule)
        info = {"mask_source": self.name, "refine_segments": refined.segments, "refine_kept": refined.kept}
        return SourcedMask(refined.mask, info)


def with_device(config: dict[str, Any], device: str) -> dict[str, Any]:
    """The component's config with the run's device unless it names its own."""
    plain = dict(to_plain(config))
    return plain if "device" in plain else {**plain, "device": device}


def build_mask_source(
    settings: MonkeySettings, segmenter: dict[str, Any] | None, refine: dict[str, Any] | None, device: str
) -> ImageMaskSource | None:
    """The image mask source of `method.mask_source`; None for `attention`. Models load only when used."""
    kind = settings.mask_source
    if kind not in MASK_SOURCES:
        raise ConfigError(f"method.mask_source={kind!r} is not allowed; choose one of {list(MASK_SOURCES)}")
    if kind == "attention":
        return None
    if kind == "segmenter":
        if not isinstance(segmenter, dict) or "_target_" not in segmenter:
            raise ConfigError(
                f"method.mask_source=segmenter needs method.segmenter={{_target_: ...}} (a Segmenter, see "
                f"monkey.rank.segmenters), got {segmenter!r}"
            )
        return SegmenterMaskSource(instantiate(with_device(segmenter, device)))
    refined = RefineSettings.from_config(refine, settings.paper_bug_exclusive_product)
    return RefinedMaskSource(instantiate(with_device(refined.auto_masks, device)), refined.rule)


def sourced_item_mask(sourced: SourcedMask, attention: ItemMask, settings: MonkeySettings, label: str) -> ItemMask:
    """The item's mask from an image source, [H, W] at image size, keeping the attention map for the
    artifacts; an empty or non-finite one follows `method.degenerate` (full mask + flag, or an error)."""
    mask = sourced.mask.float()
    bad = not bool(torch.isfinite(mask).all())
    empty = not bad and not bool(mask.any())
    if not (bad or empty):
        return ItemMask(mask, attention.attention, False, None, source_info=sourced.info)
    reason = "constant" if bad else "empty"
    if settings.degenerate == "error":
        raise DegenerateMaskError(
            f"{label or 'item'}: the {settings.mask_source} mask is {'not finite' if bad else 'empty'} "
            "(method.degenerate=full uses the full mask instead and flags the item in the manifest)"
        )
    return ItemMask(torch.ones_like(mask), attention.attention, True, "full", reason, source_info=sourced.info)
