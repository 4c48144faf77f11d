"""Attention maps over a real subject image: MONKEY's pass 1 run on the noised source image.

A ranking needs maps whose subject lies where a known mask says. So pass 1 runs as usual (prompt,
subject embedding, IP scale, guidance, the recorder on every asked layer and step), except that
before each UNet evaluation a forward pre-hook swaps the UNet's input for the source image's latent
noised to that step's timestep, as the pipeline's scheduler would see it:

    x_s = scale_model_input(add_noise(z0, eps, t_s), t_s)    z0 = VAE(source) * scaling_factor

with t_s the s-th timestep of pass 1's schedule (a fresh copy of the pipeline's scheduler set to
`initial_steps`) and eps the item's own seeded noise. Step s's maps therefore show where the image
tokens attend at the noise level MONKEY reads them at, over an image whose subject mask is known.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers import DiffusionPipeline
from PIL import Image


@torch.no_grad()
def source_latents(pipe: DiffusionPipeline, image: Image.Image, height: int, width: int) -> torch.Tensor:
    """z0 of the source image at the generation size: [1, C, height / 8, width / 8] in the UNet's dtype."""
    vae = pipe.vae
    pixels = pipe.image_processor.preprocess(image, height=height, width=width)  # [1, 3, H, W] in [-1, 1]
    pixels = pixels.to(vae.device, vae.dtype)
    latents = vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor
    return latents.to(pipe.unet.dtype)


def item_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The item's noise eps ~ N(0, I), from a CPU generator as the pipelines draw theirs."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))


def noised_inputs(pipe: DiffusionPipeline, z0: torch.Tensor, noise: torch.Tensor, num_steps: int) -> list[torch.Tensor]:
    """The UNet input of every step of a `num_steps` schedule: [steps] x [n, C, h, w]."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(num_steps)
    inputs = []
    for timestep in scheduler.timesteps:
        fresh = type(pipe.scheduler).from_config(pipe.scheduler.config)  # step-index state starts at t
        fresh.set_timesteps(num_steps)
        t = timestep.reshape(1)
        noisy = fresh.add_noise(z0.float(), noise.float(), t)
        inputs.append(fresh.scale_model_input(noisy, timestep).to(z0.dtype))
    return inputs


@contextmanager
def noised_source(pipe: DiffusionPipeline, inputs: list[torch.Tensor]) -> Iterator[None]:
    """Within the block, the k-th UNet evaluation gets inputs[k] ([n, C, h, w], both CFG halves)."""
    calls = 0

    def before_unet(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        nonlocal calls
        sample = args[0] if args else kwargs["sample"]
        if calls >= len(inputs):
            raise RuntimeError(f"the UNet ran {calls + 1} times for a {len(inputs)}-step probe")
        given = inputs[calls].to(sample.device, sample.dtype)
        calls += 1
        if sample.shape[0] % given.shape[0] != 0 or sample.shape[1:] != given.shape[1:]:
            raise RuntimeError(f"probe input {tuple(given.shape)} does not fit the UNet's {tuple(sample.shape)}")
        replaced = given.repeat(sample.shape[0] // given.shape[0], 1, 1, 1)  # [rows, C, h, w]
        if args:
            return (replaced, *args[1:]), kwargs
        return args, {**kwargs, "sample": replaced}

    handle = pipe.unet.register_forward_pre_hook(before_unet, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
