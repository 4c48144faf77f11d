"""The generation stage's workload on LCM Dreamshaper v7's architecture: the prompts and subjects of a
batch, the three ways to make its images (IP-Adapter, MONKEY, MONKEY with a shared pass 1), and the
pipeline built from configs in code (random weights, no download)."""

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from benchtools import timed
from lcm_arch import Shapes, build_pipeline

from monkey.adapter.sampler import MonkeySampler, SubjectBatch
from monkey.item_embeds import item_image_embeds

SUBJECTS = ["dog", "cat", "bear plushie", "backpack", "vase", "teapot", "sneaker", "robot toy"]
LOCATIONS = ["in the jungle", "in the snow", "on the beach", "on a cobblestone street", "on top of pink fabric"]
WORDS = " ".join(SUBJECTS + LOCATIONS).split()  # what the benchmark's tokenizer knows
# issue 30's goals at 512 px in half precision on one H100 (issue 20's was 12 images/s)
TARGETS = {"monkey_images_per_s": 25.0, "monkey_over_ip_adapter": 1.30}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def build(shapes: Shapes, device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype, prefix: str):
    """The pipeline with random weights, written to a temporary folder and loaded from it."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        return build_pipeline(Path(folder), shapes, device, dtype, vae_dtype, WORDS)


@torch.no_grad()
def time_image_encoder(encoder: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> float:
    """Seconds per call embedding 8 subject images (the harness embeds each subject once)."""
    pixels = torch.randn(8, 3, 224, 224, device=device, dtype=dtype)
    encoder(pixel_values=pixels)
    return statistics.median(timed(lambda: encoder(pixel_values=pixels), device) for _ in range(3))


class Workload:
    """One batch of B items, each its own subject, and the three ways to make its images."""

    def __init__(self, pipe, sampler: MonkeySampler, shapes: Shapes, batch_size: int, size: int, device, first=None):
        """`first`: another workload whose items this one's first items repeat (prompt, seed and subject),
        so a larger batch's first images can be compared with that workload's."""
        self.pipe, self.sampler = pipe, sampler
        generator = torch.Generator().manual_seed(batch_size)
        embeds = torch.randn(batch_size, 1, shapes.image_embed_dim, generator=generator)  # [B, 1, D]
        if first is not None:
            embeds[: len(first.batch)] = first.embeds.cpu().float()
        self.embeds = embeds.to(device, pipe.unet.dtype)
        prompts = [f"{SUBJECTS[i % len(SUBJECTS)]} {LOCATIONS[i % len(LOCATIONS)]}" for i in range(batch_size)]
        self.batch = SubjectBatch(prompts, list(range(batch_size)), self.embeds, size, size)
        self.records = sampler.record(self.batch).records  # what a shared pass 1 finds in its cache (untimed)

    def ip_adapter(self) -> Any:
        s = self.sampler.settings
        self.pipe.set_ip_adapter_scale(1.0)
        with item_image_embeds(self.pipe.unet, self.embeds, guided=False) as ip_embeds:
            return self.pipe(
                prompt=self.batch.prompts,
                height=self.batch.height,
                width=self.batch.width,
                num_inference_steps=s.final_steps,
                guidance_scale=s.guidance_scale,
                generator=self.batch.generators(),
                ip_adapter_image_embeds=ip_embeds,
                output_type="pil",
            ).images

    def monkey(self) -> Any:
        return self.sampler(self.batch).images

    def monkey_shared_pass1(self) -> Any:
        return self.sampler(self.batch, records=self.records).images

    def methods(self) -> dict[str, Callable[[], Any]]:
        return {"ip_adapter": self.ip_adapter, "monkey": self.monkey, "monkey_shared_pass1": self.monkey_shared_pass1}


@torch.no_grad()
def batch_independence(pipe, sampler: MonkeySampler, shapes: Shapes, size: int, device) -> dict[str, Any]:
    """Item 0 of a 4-subject batch against the same item alone, in this run's precision: how far the
    neighbours move its final latents (float rounding only, when the per-item embeddings are right)."""
    mixed = Workload(pipe, sampler, shapes, 4, size, device)
    alone = SubjectBatch(mixed.batch.prompts[:1], mixed.batch.seeds[:1], mixed.embeds[:1], size, size)
    together = sampler(mixed.batch, output_type="latent")
    single = sampler(alone, output_type="latent")
    other = SubjectBatch(mixed.batch.prompts[:1], mixed.batch.seeds[:1], mixed.embeds[1:2], size, size)
    swapped = sampler(other, output_type="latent")  # the same prompt and seed with another subject
    return {
        "max_abs_latent_difference": float((together.images[0] - single.images[0]).abs().max()),
        "mask_equal": bool(torch.equal(together.image_masks[0], single.image_masks[0])),
        "another_subject_max_abs_latent_difference": float((swapped.images[0] - single.images[0]).abs().max()),
        "latent_abs_max": float(single.images[0].abs().max()),
    }


def pixels_of(images: list[Any]) -> Any:
    import numpy as np

    return np.stack([np.asarray(image, dtype=np.int16) for image in images])  # [n, H, W, 3], 0..255
