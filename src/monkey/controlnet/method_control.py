"""What a method holds for its `control:` block: the loaded ControlNet and, per call, each item's
control image, with what a manifest row records about it."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from monkey.controlnet.hook import ControlBatch
from monkey.controlnet.images import control_image, to_tensor
from monkey.controlnet.model import controlnet_checkpoint, load_controlnet
from monkey.controlnet.settings import control_settings
from monkey.methods.base import GenerationRequest
from monkey.models.profiles import Runtime

ARTIFACT = "control"  # the control image is kept beside each image as <stem>.control.png


@dataclass
class CallControl:
    """One call's control and, per item, its image and its manifest record."""

    batch: ControlBatch
    images: list[Image.Image]
    rows: list[dict[str, Any]]  # per item: {"control": {...}} for GenerationResult.info


class MethodControl:
    def __init__(self, block: dict[str, Any], runtime: Runtime):
        settings = control_settings(block)
        assert settings is not None
        self.settings = settings
        self.controlnet = load_controlnet(settings, runtime)
        self.weights = controlnet_checkpoint(settings, runtime).identity()[0]

    @classmethod
    def optional(cls, block: dict[str, Any] | None, runtime: Runtime) -> "MethodControl | None":
        """A method's control, or None without a block (the method then runs as it always did)."""
        return None if control_settings(block) is None else cls(block, runtime)  # type: ignore[arg-type]

    def for_call(self, requests: Sequence[GenerationRequest]) -> CallControl:
        made = [control_image(self.settings, r.item, r.height, r.width) for r in requests]
        record = {**self.settings.describe(), "weights": self.weights}
        batch = ControlBatch(
            controlnet=self.controlnet,
            settings=self.settings,
            images=to_tensor([m.image for m in made]),
            identity={**record, "images": [m.info["image_sha256"] for m in made]},
        )
        rows = [{"control": {**record, **m.info}} for m in made]
        return CallControl(batch=batch, images=[m.image for m in made], rows=rows)
