"""Plain IP-Adapter generation: the paper's baseline at scale 0.5 and 1.0 (and 0.0, text only)."""

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from monkey.adapter.sampler import loop_steps
from monkey.controlnet.hook import control_unet
from monkey.controlnet.method_control import ARTIFACT, MethodControl
from monkey.item_embeds import item_image_embeds
from monkey.methods.base import GenerationRequest, GenerationResult, Method, batch_image_size
from monkey.models.profiles import Runtime, load_runtime_pipeline
from monkey.subject_embeds import SubjectEmbedder, uses_cfg


class IPAdapterMethod(Method):
    def __init__(
        self,
        name: str,
        runtime: Runtime,
        scale: float = 1.0,
        num_inference_steps: int = 8,
        guidance_scale: float = 8.5,
        control: dict[str, Any] | None = None,
    ):
        super().__init__(name, runtime)
        self.scale = scale
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.pipe = load_runtime_pipeline(runtime)
        self.embedder = SubjectEmbedder(self.pipe)
        self.control = MethodControl.optional(control, runtime)  # method.control: a ControlNet (docs/controlnet.md)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """One pipeline call for the whole batch, whatever its subjects: diffusers repeats
        `ip_adapter_image_embeds` once per prompt, so each item's own embedding reaches the UNet
        through a forward pre-hook (monkey.item_embeds)."""
        height, width = batch_image_size(requests, "IP-Adapter")
        self.pipe.set_ip_adapter_scale(self.scale)
        embeds = self.embedder.batch([r.item.source for r in requests])  # [n, 1, D] (or [n, 1, S, D])
        guided = uses_cfg(self.pipe, self.guidance_scale)
        negative = self.embedder.negative_embeds()
        control = self.control.for_call(requests) if self.control is not None else None
        with (
            item_image_embeds(self.pipe.unet, embeds, guided, negative) as ip_embeds,
            control_unet(
                self.pipe.unet, control.batch if control else None, loop_steps(self.pipe, self.num_inference_steps)
            ),
        ):
            images = self.call_pipe(requests, height, width, ip_embeds)
        if control is None:
            return [GenerationResult(image=image) for image in images]
        return [
            GenerationResult(image=image, artifacts={ARTIFACT: control.images[i]}, info=control.rows[i])
            for i, image in enumerate(images)
        ]

    def call_pipe(
        self,
        requests: Sequence[GenerationRequest],
        height: int,
        width: int,
        ip_embeds: list[torch.Tensor],
        **extra: Any,
    ) -> list[Image.Image]:
        """One diffusers call for the batch: each item's prompt and seed, the method's steps and guidance,
        and the caller's `extra` pipeline arguments (the multi-subject masks)."""
        return self.pipe(
            prompt=[r.prompt for r in requests],
            height=height,
            width=width,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            generator=[torch.Generator("cpu").manual_seed(r.seed) for r in requests],
            ip_adapter_image_embeds=ip_embeds,
            output_type="pil",
            **extra,
        ).images


