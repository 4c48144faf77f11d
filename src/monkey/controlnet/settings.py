"""`method.control`, read once into a frozen record with every value checked."""

import math
from dataclasses import asdict, dataclass
from typing import Any

from monkey.errors import ConfigError

SOURCES = ("canny", "folder")
TINY = "tiny"  # `model: tiny`: the twin written by code for the run's tiny model profile (tiny.py)


@dataclass(frozen=True)
class ControlSettings:
    """One ControlNet, its conditioning scale, the part of each pass it acts on and its image source."""

    model: str  # hub id, local folder in the hub layout, or `tiny`
    revision: str | None = None  # a hub commit (or branch/tag) of `model` to pin
    subfolder: str | None = None  # the ControlNet's folder inside `model`, when not at its root
    scale: float = 1.0  # controlnet_conditioning_scale
    start: float = 0.0  # control_guidance_start: fraction of a pass's loop before which the control is off
    end: float = 1.0  # control_guidance_end: fraction after which it is off
    source: str = "canny"  # canny: edges of the item's subject image; folder: <folder>/<location slug>.<ext>
    folder: str | None = None  # source=folder: the folder of control images
    low: float = 100.0  # source=canny: hysteresis thresholds on the L1 Sobel magnitude of the 0-255 gray image
    high: float = 200.0

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"method.control.model={self.model!r} must name a ControlNet (hub id, folder or tiny)")
        for key in ("scale", "start", "end", "low", "high"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"method.control.{key}={value!r} must be a finite number")
            object.__setattr__(self, key, float(value))
        if not 0.0 <= self.start < self.end <= 1.0:
            raise ConfigError(
                f"method.control.start={self.start} and end={self.end}: allowed 0 <= start < end <= 1 "
                "(fractions of each pass's sampling loop)"
            )
        if self.source not in SOURCES:
            raise ConfigError(f"method.control.source={self.source!r} is not allowed; choose one of {list(SOURCES)}")
        if self.source == "folder" and not self.folder:
            raise ConfigError("method.control.source=folder needs method.control.folder (a folder of control images)")
        if self.source == "canny" and not 0 <= self.low <= self.high:
            raise ConfigError(f"method.control.low={self.low} and high={self.high}: allowed 0 <= low <= high")

    def describe(self) -> dict[str, Any]:
        """What a manifest row records: every setting, the folder and thresholds only where they apply."""
        plain = asdict(self)
        if self.source != "folder":
            plain.pop("folder")
        if self.source != "canny":
            plain.pop("low")
            plain.pop("high")
        return plain


def control_settings(block: dict[str, Any] | None) -> ControlSettings | None:
    """`method.control` as a record; None (or no block) runs without a ControlNet."""
    if block is None:
        return None
    if not isinstance(block, dict):
        raise ConfigError(f"method.control must be a mapping of settings or null, got {block!r}")
    allowed = list(ControlSettings.__dataclass_fields__)
    unknown = sorted(set(block) - set(allowed))
    if unknown:
        raise ConfigError(f"method.control has unknown key(s) {unknown}; allowed: {allowed}")
    if "model" not in block:
        raise ConfigError(f"method.control needs `model` (a ControlNet: hub id, folder or {TINY})")
    return ControlSettings(**block)


def keep(step: int, loop_steps: int, start: float, end: float) -> bool:
    """Whether the ControlNet acts on loop step `step` of `loop_steps`: diffusers' rule
    (StableDiffusionControlNetPipeline's `controlnet_keep`): off when step/N < start or (step+1)/N > end."""
    return not (step / loop_steps < start or (step + 1) / loop_steps > end)
