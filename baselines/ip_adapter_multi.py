"""The multi-subject IP-Adapter baselines (docs/multi_subject.md): every subject of an item through the
same adapter as its own image, either with no masks (`regions: none`: diffusers attends over all
images' tokens jointly, and each subject may act anywhere) or with fixed masks (`regions: halves`: the
usual multi-subject recipe, subject i in the i-th of K vertical strips, left to right in prompt order;
made by diffusers' `IPAdapterMaskProcessor`, one mask per image)."""

from collections.abc import Sequence

import numpy as np
import torch
from diffusers.image_processor import IPAdapterMaskProcessor
from monkey.baselines.ip_adapter import IPAdapterMethod
from PIL import Image

from monkey.errors import ConfigError
from monkey.item_embeds import item_image_embeds
from monkey.methods.base import GenerationRequest, GenerationResult, batch_image_size
from monkey.models.profiles import Runtime
from monkey.multi.method import subject_embeds, subject_overlay
from monkey.subject_embeds import uses_cfg

REGIONS = ("none", "halves")


def strip_masks(count: int, height: int, width: int) -> torch.Tensor:
    """[1, K, H, W]: subject i's mask is the i-th of K vertical strips (K = 2: left and right halves),
    through IPAdapterMaskProcessor as diffusers documents masked IP-Adapter images."""
    edges = [round(index * width / count) for index in range(count + 1)]
    images = []
    for index in range(count):
        pixels = np.zeros((height, width), dtype=np.uint8)
        pixels[:, edges[index] : edges[index + 1]] = 255
        images.append(Image.fromarray(pixels))
    masks = IPAdapterMaskProcessor().preprocess(images, height=height, width=width)  # [K, 1, H, W]
    return masks.reshape(1, count, height, width)


class IPAdapterMultiMethod(IPAdapterMethod):
    multi_subject = True  # takes items of several subjects (monkey.multi.plan.check_method)

    def __init__(
        self,
        name: str,
        runtime: Runtime,
        regions: str = "none",
        scale: float = 1.0,
        num_inference_steps: int = 8,
        guidance_scale: float = 8.5,
        control: dict | None = None,
    ):
        if regions not in REGIONS:
            raise ConfigError(f"method.regions={regions!r} is not allowed; choose one of {list(REGIONS)}")
        if control is not None:  # its pipeline call takes no ControlNet yet: refuse rather than run without it
            raise ConfigError(f"method.control: {name} takes no ControlNet yet (monkey, ip_adapter_* do)")
        super().__init__(name, runtime, scale, num_inference_steps, guidance_scale)
        self.regions = regions

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        height, width = batch_image_size(requests, "IP-Adapter")
        self.pipe.set_ip_adapter_scale(self.scale)
        embeds = subject_embeds(self.embedder, requests)  # [n, K, D] (or [n, K, S, D])
        masks = strip_masks(embeds.shape[1], height, width) if self.regions == "halves" else None
        attention = {"ip_adapter_masks": [masks]} if masks is not None else None  # [1, K, H, W]: every row
        guided = uses_cfg(self.pipe, self.guidance_scale)
        with item_image_embeds(self.pipe.unet, embeds, guided, self.embedder.negative_embeds()) as ip_embeds:
            images = self.call_pipe(requests, height, width, ip_embeds, cross_attention_kwargs=attention)
        results = []
        for image in images:
            artifacts = {"overlay": subject_overlay(image, masks[0])} if masks is not None else {}
            results.append(GenerationResult(image=image, artifacts=artifacts, info={"regions": self.regions}))
        return results
