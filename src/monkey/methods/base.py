"""One small seam between the runner and every method.

A method receives a batch of requests (subject image, exact prompt, seed, size) and returns one
image per request, optionally with artifacts (masks, overlays) and flags for the manifest. The
runner owns seeds, prompts, storage and resumption; a method owns only how an image is made.
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hydra.utils import get_class
from omegaconf import DictConfig
from PIL import Image

from monkey.errors import ConfigError
from monkey.hashing import to_plain
from monkey.models.profiles import Runtime
from monkey.plan import WorkItem

# Keys of a method config that change how a job runs but never what it makes.
RUNTIME_ONLY_KEYS = frozenset({"_target_", "name", "batch_size"})


@dataclass
class GenerationRequest:
    item: WorkItem
    prompt: str  # the exact text the method generates from (stored with the image, scored by CLIP-T)
    seed: int
    height: int
    width: int

    @property
    def subject_image(self) -> Image.Image:
        return self.item.source.load_image()


@dataclass
class GenerationResult:
    image: Image.Image
    artifacts: dict[str, Image.Image | np.ndarray] = field(default_factory=dict)  # saved beside the image
    info: dict[str, Any] = field(default_factory=dict)  # recorded in the manifest row (flags, fallbacks)


class Method(ABC):
    """Base class of every method. Subclasses take their knobs as keyword arguments from
    conf/method/<name>.yaml plus `name` and `runtime`."""

    def __init__(self, name: str, runtime: Runtime):
        self.name = name
        self.runtime = runtime

    def prompt_for(self, item: WorkItem) -> str:
        """The prompt this method generates from; presets may derive it from the plan's prompt."""
        return item.prompt

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Return one result per request, in order."""


def same_source_runs(requests: Sequence[GenerationRequest]) -> list[list[GenerationRequest]]:
    """Split a batch into consecutive runs of one source image each (plan order keeps them together)."""
    runs: list[list[GenerationRequest]] = []
    for request in requests:
        if runs and runs[-1][0].item.source.source_id == request.item.source.source_id:
            runs[-1].append(request)
        else:
            runs.append([request])
    return runs


def build_method(method_cfg: DictConfig, runtime: Runtime) -> Method:
    if "_target_" not in method_cfg:
        raise ConfigError(f"method config '{method_cfg.get('name')}' has no _target_ class")
    try:
        method_class = get_class(method_cfg._target_)
    except (ImportError, ValueError) as err:
        raise ConfigError(f"method._target_={method_cfg._target_!r} cannot be imported: {err}") from err
    if not issubclass(method_class, Method):
        raise ConfigError(f"method._target_={method_cfg._target_!r} is not a monkey Method subclass")
    knobs = {k: v for k, v in to_plain(method_cfg).items() if k not in ("_target_", "batch_size")}
    try:
        return method_class(runtime=runtime, **knobs)
    except TypeError as err:
        raise ConfigError(f"method '{method_cfg.get('name')}' ({method_cfg._target_}): {err}") from err
