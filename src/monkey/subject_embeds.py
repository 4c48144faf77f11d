"""The subject's CLIP image embedding, computed once per source image and reused for all prompts.

What the adapter reads follows diffusers' own rule (`prepare_ip_adapter_image_embeds`): h94's base
adapters (`ImageProjection`) take the projected image embedding [1, D]; every other projection (the
plus adapters' Resampler) takes the encoder's penultimate hidden states [1, S, D]. Under
classifier-free guidance the negative is what `encode_image` makes: zeros for the former, the
encoder's hidden states of an all-zero image for the latter.
"""

import torch
from diffusers import DiffusionPipeline
from diffusers.models.embeddings import ImageProjection

from monkey.datasets.base import Source


class SubjectEmbedder:
    """Memoises `pipe.encode_image` per source id (sources are fixed for the life of a run)."""

    def __init__(self, pipe: DiffusionPipeline):
        self.pipe = pipe
        self.memo: dict[str, torch.Tensor] = {}
        self.computed = 0  # encoder calls, for tests and logs
        self.hidden_states = uses_hidden_states(pipe)
        self.negative: torch.Tensor | None = None  # [1, D] or [1, S, D]: the CFG negative, the same for all

    @torch.no_grad()
    def embed(self, source: Source) -> torch.Tensor:
        key = source.source_id
        if key not in self.memo:
            device = self.pipe._execution_device
            embeds, negative = self.pipe.encode_image(
                source.load_image(), device, 1, output_hidden_states=self.hidden_states or None
            )  # [1, D] or [1, S, D]
            self.memo[key] = embeds
            if self.negative is None:
                self.negative = negative
            self.computed += 1
        return self.memo[key]

    def batch(self, sources: list[Source]) -> torch.Tensor:
        return torch.stack([self.embed(source) for source in sources])  # [B, 1, D] or [B, 1, S, D]

    def negative_embeds(self) -> torch.Tensor | None:
        """[1, 1, ...]: the CFG negative in the layout of `batch`, once one source was embedded."""
        return None if self.negative is None else self.negative[None]


def uses_hidden_states(pipe: DiffusionPipeline) -> bool:
    """Whether the loaded adapter reads the image encoder's hidden states (every projection but h94's
    base `ImageProjection`, as diffusers decides in `prepare_ip_adapter_image_embeds`)."""
    projection = getattr(pipe.unet, "encoder_hid_proj", None)
    layers = getattr(projection, "image_projection_layers", None)
    return bool(layers) and not isinstance(layers[0], ImageProjection)


def uses_cfg(pipe: DiffusionPipeline, guidance_scale: float) -> bool:
    """Whether a pipeline call batches [unconditional; conditional]: Stable Diffusion pipelines do for
    guidance > 1, guidance-distilled ones (LCM: `time_cond_proj_dim` set) never do."""
    return guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None


def pipeline_image_embeds(
    embeds: torch.Tensor, guided: bool, negative: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """`ip_adapter_image_embeds` for a pipeline call from one subject embedding [1, 1, D] (or
    [1, 1, S, D] for hidden states).

    Under CFG diffusers splits the tensor into (negative, positive) halves; the negative is
    `negative` ([1, 1, ...], from SubjectEmbedder.negative_embeds) or, when None, the zero embedding,
    as `encode_image` makes it for IP-Adapter's base image projection."""
    if guided:
        negative = torch.zeros_like(embeds) if negative is None else negative.to(embeds.device, embeds.dtype)
        embeds = torch.cat([negative, embeds])  # [2, 1, ...]
    return [embeds]
