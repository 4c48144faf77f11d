"""Shared pieces of the MONKEY tests (imported by tests; not a test module)."""

import functools
from typing import Any

import torch
from conftest import compose_config
from diffusers import DiffusionPipeline
from PIL import Image

from monkey.adapter.sampler import SubjectBatch
from monkey.adapter.settings import MonkeySettings
from monkey.datasets.dreambooth import load_dreambooth
from monkey.models.profiles import load_pipeline, profile_from_config, resolve_runtime

SIZE = 64
GUIDANCE = {  # LCM's embedded guidance; real CFG for SD and SDXL; SDXL-Turbo runs without CFG
    "tiny": 8.5,
    "tiny_sd15": 7.5,
    "tiny_sdxl": 5.0,
    "tiny_sdxl_plus": 5.0,
    "tiny_sdxl_turbo": 0.0,
}
PAPER_LAYER = "up_blocks.1.attentions.1.transformer_blocks.0.attn2"
LAYERS = (  # three resolutions (64 px: 8x8, 2x2, 1x1 grids)
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2",
    PAPER_LAYER,
    "mid_block.attentions.0.transformer_blocks.0.attn2",
)


def load_tiny(model: str) -> DiffusionPipeline:
    """The process's memoised pipeline of a tiny profile (load_pipeline keeps one at a time)."""
    runtime = resolve_runtime(profile_from_config(compose_config(f"model={model}").model), "cpu", "float32")
    return load_pipeline(runtime.model, runtime.device, runtime.dtype)


@functools.cache
def subject_image(index: int = 0) -> Image.Image:
    return load_dreambooth()[index].load_image()


@torch.no_grad()
def subject_embeds(pipe: DiffusionPipeline, index: int = 0) -> torch.Tensor:
    embeds, _ = pipe.encode_image(subject_image(index), "cpu", 1)  # [1, D]
    return embeds[None]  # [1, 1, D]


def make_batch(pipe: DiffusionPipeline, prompts: list[str], seeds: list[int], height: int = SIZE, width: int = SIZE):
    return SubjectBatch(prompts, seeds, subject_embeds(pipe), height, width)


def loop_range(pipe: DiffusionPipeline, steps: int) -> list[int]:
    """Every sampling-loop index for `steps` (PNDM runs one more than asked)."""
    pipe.scheduler.set_timesteps(steps)
    return list(range(len(pipe.scheduler.timesteps)))


def settings(model: str, **knobs: Any) -> MonkeySettings:
    return MonkeySettings(**{"guidance_scale": GUIDANCE[model], **knobs})


@torch.no_grad()
def stock_latents(
    pipe: DiffusionPipeline, model: str, batch: SubjectBatch, steps: int, scale: float | list[float]
) -> torch.Tensor:
    """Independent reference: the stock pipeline encoding the subject image itself, at one IP scale, or with
    a list its IP scale set to scale[i] before step i by its own step callback (the scales it found are
    put back: the pipeline is shared with other tests)."""
    scales = scale if isinstance(scale, list) else [scale] * steps
    processors = [p for p in pipe.unet.attn_processors.values() if hasattr(p, "to_k_ip")]
    saved = [list(p.scale) for p in processors]

    def switch(pipeline: DiffusionPipeline, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        if step + 1 < len(scales):
            pipeline.set_ip_adapter_scale(scales[step + 1])
        return {}

    pipe.set_ip_adapter_scale(scales[0])
    try:
        return pipe(
            prompt=batch.prompts,
            height=batch.height,
            width=batch.width,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE[model],
            generator=batch.generators(),
            ip_adapter_image=subject_image(0),
            output_type="latent",
            callback_on_step_end=switch,
        ).images
    finally:
        for processor, found in zip(processors, saved, strict=True):
            processor.scale = found


def ip_processor_state(pipe: DiffusionPipeline) -> list[tuple[str, int, list[float]]]:
    """(name, processor identity, scale) of every attention processor: to check a call restores them."""
    return [(name, id(p), list(getattr(p, "scale", []))) for name, p in pipe.unet.attn_processors.items()]


class UNetCalls:
    """Counts UNet evaluations of a pipeline (a forward hook; the sampler's own hooks are separate)."""

    def __init__(self, pipe):
        self.count = 0
        self.handle = pipe.unet.register_forward_hook(self.hook)

    def hook(self, *args) -> None:
        self.count += 1
