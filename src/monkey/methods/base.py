"""One small seam between the runner and every method.

A method receives a batch of requests (subject image, exact prompt, seed, size) and returns one
image per request, optionally with artifacts (masks, overlays) and flags for the manifest. The
runner owns seeds, prompts, storage and resumption; a method owns only how an image is made.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import get_class
from omegaconf import DictConfig
from PIL import Image

from monkey.datasets.base import Source
from monkey.errors import ConfigError
from monkey.hashing import to_plain
from monkey.methods.presets import SPEC_KEYS, format_prompt
from monkey.models.profiles import Runtime
from monkey.plan import WorkItem

# Keys of a method config that change how a job runs but never what it makes (`share`: MONKEY's caches,
# which give the bytes an uncached run gives; `environment`: where an external method's own Python,
# checkout and weights live).
RUNTIME_ONLY_KEYS = frozenset({"_target_", "name", "batch_size", "share", "environment"})


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
    image: Image.Image | None  # None only with `error`
    artifacts: dict[str, Image.Image | np.ndarray] = field(default_factory=dict)  # saved beside the image
    info: dict[str, Any] = field(default_factory=dict)  # recorded in the manifest row (flags, fallbacks)
    error: str | None = None  # set: the item failed; its row says why (status failed) and a rerun retries it
    timings: dict[str, float] | None = None  # the method's own per-item timings (default: the batch's)


class Method(ABC):
    """Base class of every method. Subclasses take their knobs as keyword arguments from
    conf/method/<name>.yaml plus `name` and `runtime`."""

    prompt_form: str = "plan"  # set from the preset by build_method (monkey.methods.presets.PROMPT_FORMS)

    def __init__(self, name: str, runtime: Runtime):
        self.name = name
        self.runtime = runtime

    def prompt_for(self, item: WorkItem) -> str:
        """The prompt this method generates from: the plan's prompt under preset=fair, the form its
        `paper:` block names under preset=paper."""
        return format_prompt(self.prompt_form, item, self.caption_for)

    def caption_for(self, source: Source) -> str:
        """A caption of the subject image, for the caption prompt forms; methods with a captioner override it."""
        raise ConfigError(f"method {self.name} has no captioner, so it cannot use a caption prompt form")

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Return one result per request, in order."""


class StreamingMethod(Method):
    """A method that takes every unfinished item of a shard in one call and hands each result back as
    soon as it is made (an external process loads its models once, and a kill loses only the item in
    flight). The runner stores each result as it arrives."""

    work_dir: Path | None = None  # set by the runner: this shard writer's own folder inside the run folder

    @abstractmethod
    def stream(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, GenerationResult]]:
        """Yield (index into `requests`, result), in any order, at most once per request."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        results: dict[int, GenerationResult] = dict(self.stream(requests))
        missing = [request.item.item_id for index, request in enumerate(requests) if index not in results]
        if missing:
            raise RuntimeError(f"method {self.name} returned no result for {missing}")
        return [results[index] for index in range(len(requests))]


def batch_image_size(requests: Sequence[GenerationRequest], what: str) -> tuple[int, int]:
    """(height, width) that every request of one pipeline call shares; `what` names the batch in the error."""
    sizes = {(r.height, r.width) for r in requests}
    if len(sizes) != 1:
        raise ConfigError(f"one {what} batch must share one image size, got {sorted(sizes)}")
    return sizes.pop()


def same_source_runs(requests: Sequence[GenerationRequest]) -> list[list[GenerationRequest]]:
    """Split a batch into consecutive runs of one source image each (plan order keeps them together)."""
    runs: list[list[GenerationRequest]] = []
    for request in requests:
        if runs and runs[-1][0].item.source.source_id == request.item.source.source_id:
            runs[-1].append(request)
        else:
            runs.append([request])
    return runs


def generate_per_source(
    requests: Sequence[GenerationRequest],
    generate_one_source: Callable[[list[GenerationRequest]], list[GenerationResult]],
) -> list[GenerationResult]:
    """Results in request order from one call per run of one source image (one subject per pipeline call)."""
    return [result for run in same_source_runs(requests) for result in generate_one_source(run)]


def build_method(method_cfg: DictConfig | dict[str, Any], runtime: Runtime, prompt_form: str = "plan") -> Method:
    """Instantiate a method from its config: a MethodSpec's `method` (preset applied), or a raw method
    config, whose setup keys (`model`, `paper`, ...) are then ignored: `runtime` already says the model."""
    plain = to_plain(method_cfg)
    target = plain.get("_target_")
    if not target:
        raise ConfigError(f"method config '{plain.get('name')}' has no _target_ class")
    try:
        method_class = get_class(target)
    except (ImportError, ValueError) as err:
        raise ConfigError(f"method._target_={target!r} cannot be imported: {err}") from err
    if not issubclass(method_class, Method):
        raise ConfigError(f"method._target_={target!r} is not a monkey Method subclass")
    knobs = {k: v for k, v in plain.items() if k not in ("_target_", "batch_size", *SPEC_KEYS)}
    try:
        method = method_class(runtime=runtime, **knobs)
    except TypeError as err:
        raise ConfigError(f"method '{plain.get('name')}' ({target}): {err}") from err
    method.prompt_form = prompt_form
    return method
