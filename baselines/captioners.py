"""Captioners: text for a subject image, e.g. MasaCtrl's source prompt. Injectable from a method
config (`captioner: {_target_: ..., ...}`), so tests and users can swap them without code changes."""

from abc import ABC, abstractmethod
from typing import Any

import torch
from hydra.utils import instantiate

from monkey.datasets.base import Source
from monkey.errors import ConfigError, ModelLoadError
from monkey.hub_needs import HubNeed, transformers_model
from monkey.models.profiles import is_local, load_cause, offline_hint

TEMPLATE_FIELDS = ("class_name", "subject_word")


class Captioner(ABC):
    @abstractmethod
    def caption(self, source: Source) -> str:
        """One caption of the source image."""

    def to(self, device: torch.device) -> "Captioner":
        """Move any model to `device`; templates have none."""
        return self


class TemplateCaptioner(Captioner):
    """A caption from the dataset's metadata alone, e.g. "a photo of a dog". Deterministic, no model."""

    def __init__(self, template: str = "a photo of a {class_name}"):
        try:
            template.format(**dict.fromkeys(TEMPLATE_FIELDS, ""))
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(f"captioner template {template!r} may only use {list(TEMPLATE_FIELDS)}: {err}") from err
        self.template = template

    def caption(self, source: Source) -> str:
        text = self.template.format(class_name=source.class_name, subject_word=source.subject_word)
        return " ".join(text.split())


class BlipCaptioner(Captioner):
    """BLIP image captioning (the paper's MasaCtrl fork used BLIP-base), loaded by hub id or local folder."""

    @staticmethod
    def hub_needs(
        pretrained: str = "Salesforce/blip-image-captioning-base",
        revision: str | None = None,
        tiny: bool = False,
        **_: Any,
    ) -> list[HubNeed]:
        """What __init__ reads from the hub: the model and its processor from one folder (none when tiny)."""
        if tiny or is_local(pretrained):
            return []
        return [transformers_model(pretrained, "BLIP captioner", revision=revision, processor=True)]

    def __init__(
        self,
        pretrained: str = "Salesforce/blip-image-captioning-base",
        revision: str | None = None,
        max_new_tokens: int = 30,
        tiny: bool = False,
    ):
        """`tiny`: load a tiny random BLIP written by code instead (offline tests and demo)."""
        from transformers import BlipForConditionalGeneration, BlipProcessor

        if tiny:
            from monkey.models.tiny_blip import materialize_tiny_blip

            pretrained, revision = str(materialize_tiny_blip()), None
        kwargs: dict[str, Any] = {"revision": revision} if revision else {}
        try:
            self.processor = BlipProcessor.from_pretrained(pretrained, **kwargs)
            self.model = BlipForConditionalGeneration.from_pretrained(pretrained, **kwargs).eval()
        except (OSError, ValueError) as err:
            raise ModelLoadError(
                f"cannot load captioner {pretrained!r} {offline_hint(pretrained)}. Cause: {load_cause(err)}"
            ) from err
        self.max_new_tokens = max_new_tokens

    def to(self, device: torch.device) -> "BlipCaptioner":
        self.model.to(device)
        return self

    @torch.no_grad()
    def caption(self, source: Source) -> str:
        inputs = self.processor(images=source.load_image(), return_tensors="pt").to(self.model.device)
        tokens = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)  # greedy: deterministic
        return " ".join(self.processor.decode(tokens[0], skip_special_tokens=True).split())


def build_captioner(config: dict[str, Any], device: torch.device) -> Captioner:
    if not isinstance(config, dict) or "_target_" not in config:
        raise ConfigError(f"method.captioner must be a mapping with a _target_ Captioner class, got {config!r}")
    try:
        captioner = instantiate(config)
    except Exception as err:  # hydra wraps the constructor's error; keep ours when it is one
        cause = err.__cause__ if isinstance(err.__cause__, ConfigError | ModelLoadError) else None
        if cause is not None:
            raise cause from err
        raise ConfigError(f"method.captioner={config!r} cannot be built: {err}") from err
    if not isinstance(captioner, Captioner):
        raise ConfigError(f"method.captioner._target_={config['_target_']!r} is not a monkey Captioner")
    return captioner.to(device)
