"""Plain IP-Adapter generation: the paper's baseline at scale 0.5 and 1.0 (and 0.0, text only)."""

from collections.abc import Sequence

import torch

from monkey.methods.base import GenerationRequest, GenerationResult, Method, generate_per_source
from monkey.models.profiles import Runtime, load_pipeline
from monkey.subject_embeds import SubjectEmbedder, pipeline_image_embeds, uses_cfg


class IPAdapterMethod(Method):
    def __init__(
        self,
        name: str,
        runtime: Runtime,
        scale: float = 1.0,
        num_inference_steps: int = 8,
        guidance_scale: float = 8.5,
    ):
        super().__init__(name, runtime)
        self.scale = scale
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.pipe = load_pipeline(runtime.model, runtime.device, runtime.dtype)
        self.embedder = SubjectEmbedder(self.pipe)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.pipe.set_ip_adapter_scale(self.scale)
        return generate_per_source(requests, self.generate_one_subject)

    def generate_one_subject(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """One pipeline call per subject: diffusers repeats `ip_adapter_image_embeds` once per prompt,
        so a call can carry only one subject's embedding ([1, 1, D])."""
        embeds = self.embedder.batch([requests[0].item.source])  # [1, 1, D]
        images = self.pipe(
            prompt=[r.prompt for r in requests],
            height=requests[0].height,
            width=requests[0].width,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            generator=[torch.Generator("cpu").manual_seed(r.seed) for r in requests],
            ip_adapter_image_embeds=pipeline_image_embeds(embeds, uses_cfg(self.pipe, self.guidance_scale)),
            output_type="pil",
        ).images
        return [GenerationResult(image=image) for image in images]
