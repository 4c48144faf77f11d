"""The subject's CLIP image embedding, computed once per source image and reused for all prompts."""

import torch
from diffusers import DiffusionPipeline

from monkey.datasets.base import Source


class SubjectEmbedder:
    """Memoises `pipe.encode_image` per source id (sources are fixed for the life of a run)."""

    def __init__(self, pipe: DiffusionPipeline):
        self.pipe = pipe
        self.memo: dict[str, torch.Tensor] = {}
        self.computed = 0  # encoder calls, for tests and logs

    @torch.no_grad()
    def embed(self, source: Source) -> torch.Tensor:
        key = source.source_id
        if key not in self.memo:
            device = self.pipe._execution_device
            embeds, _ = self.pipe.encode_image(source.load_image(), device, 1)  # [1, D]
            self.memo[key] = embeds
            self.computed += 1
        return self.memo[key]

    def batch(self, sources: list[Source]) -> torch.Tensor:
        return torch.stack([self.embed(source) for source in sources])  # [B, 1, D]


def uses_cfg(pipe: DiffusionPipeline, guidance_scale: float) -> bool:
    """Whether a pipeline call batches [unconditional; conditional]: Stable Diffusion pipelines do for
    guidance > 1, guidance-distilled ones (LCM: `time_cond_proj_dim` set) never do."""
    return guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None


def pipeline_image_embeds(embeds: torch.Tensor, guided: bool) -> list[torch.Tensor]:
    """`ip_adapter_image_embeds` for a pipeline call from one subject embedding [1, 1, D].

    Under CFG diffusers splits the tensor into (negative, positive) halves; the negative is the zero
    embedding, as `encode_image` makes it for IP-Adapter's image projection."""
    if guided:
        embeds = torch.cat([torch.zeros_like(embeds), embeds])  # [2, 1, D]
    return [embeds]
