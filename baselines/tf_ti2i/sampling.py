"""TF-TI2I's sampling loop on a StableDiffusion3Pipeline: [main, reference] per CFG half.

The main branches start from the items' seeded noise, exactly as the stock pipeline draws it. The
reference branches carry each subject image's clean latent, forward-noised to the current t at
every step (`scheduler.scale_noise`) with fresh noise from a generator seeded by the item (the
paper's fork drew it unseeded); their predictions are discarded. Only the main latents step.
With sharing off the references are left out, and the loop is the stock pipeline's, call for call.
"""

from dataclasses import dataclass

import torch
from diffusers import StableDiffusion3Pipeline
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift, retrieve_timesteps
from diffusers.utils.torch_utils import randn_tensor
from monkey.baselines.tf_ti2i.processor import SharingControl, SharingPlan, contextual_sharing


@dataclass(frozen=True)
class SamplingSettings:
    num_inference_steps: int = 28
    guidance_scale: float = 3.5
    max_sequence_length: int = 256  # T5 tokens; the text sequence is 77 CLIP + this many
    sharing: bool = True
    winner_takes_all: bool = False
    reference_masking: bool = False
    rcm_threshold: float = 0.5


@dataclass
class References:
    """One reference branch per main branch."""

    latents: torch.Tensor  # [K, C, h, w] clean latents ((VAE mean - shift) x scale)
    prompts: list[str]
    generators: list[torch.Generator]  # noise for the forward-noising, one per item


def sharing_plan(count: int, guided: bool, settings: SamplingSettings) -> SharingPlan:
    """Rows of one transformer call: per CFG half [main_1..main_K, ref_1..ref_K]; the conditional half
    is the second. Main k reads reference k; RCM (if on) masks the conditional references."""
    offset = 2 * count if guided else 0
    pairs = tuple((offset + k, (offset + count + k,)) for k in range(count))
    masked = tuple(offset + count + k for k in range(count)) if settings.reference_masking else ()
    return SharingPlan(
        pairs=pairs,
        masked_references=masked,
        winner_takes_all=settings.winner_takes_all,
        rcm_threshold=settings.rcm_threshold,
    )


def timesteps_for(pipe: StableDiffusion3Pipeline, steps: int, latents: torch.Tensor, device: torch.device):
    """The stock pipeline's timesteps (dynamic shifting from the latent size where configured)."""
    kwargs = {}
    config = pipe.scheduler.config
    if config.get("use_dynamic_shifting", None):
        patch = pipe.transformer.config.patch_size
        tokens = (latents.shape[-2] // patch) * (latents.shape[-1] // patch)
        kwargs["mu"] = calculate_shift(
            tokens,
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.16),
        )
    timesteps, _ = retrieve_timesteps(pipe.scheduler, steps, device, **kwargs)
    return timesteps


@torch.no_grad()
def sample_tf_ti2i(
    pipe: StableDiffusion3Pipeline,
    prompts: list[str],
    generators: list[torch.Generator],
    height: int,
    width: int,
    settings: SamplingSettings,
    references: References | None,
    device: torch.device,
    control: SharingControl | None = None,
) -> torch.Tensor:
    """Final main latents [K, C, h, w] for K prompts (one seeded generator each)."""
    count = len(prompts)
    sharing = settings.sharing and references is not None
    guided = settings.guidance_scale > 1.0
    texts = prompts + references.prompts if sharing else prompts
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt=texts,
        prompt_2=None,
        prompt_3=None,
        device=device,
        do_classifier_free_guidance=guided,
        max_sequence_length=settings.max_sequence_length,
    )
    if guided:
        embeds = torch.cat([negative, embeds])  # [2 * rows, 77 + T5 tokens, D]
        pooled = torch.cat([negative_pooled, pooled])
    channels = pipe.transformer.config.in_channels
    shape = (count, channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    latents = randn_tensor(shape, generator=generators, device=device, dtype=embeds.dtype)  # [K, C, h, w]
    timesteps = timesteps_for(pipe, settings.num_inference_steps, latents, device)
    control = control or SharingControl()
    plan = sharing_plan(count, guided, settings) if sharing else None
    scheduler = pipe.scheduler
    with contextual_sharing(pipe.transformer, control):
        for t in timesteps:
            batch = latents
            if sharing:
                noise = randn_tensor(
                    references.latents.shape, generator=references.generators, device=device, dtype=latents.dtype
                )
                noisy = scheduler.scale_noise(references.latents, t.expand(count), noise)  # [K, C, h, w] at t
                batch = torch.cat([latents, noisy])  # [main_1..K, ref_1..K]
            model_input = torch.cat([batch] * 2) if guided else batch
            control.plan = plan
            prediction = pipe.transformer(
                hidden_states=model_input,
                timestep=t.expand(model_input.shape[0]),
                encoder_hidden_states=embeds,
                pooled_projections=pooled,
                return_dict=False,
            )[0]
            control.plan = None
            if guided:
                uncond, cond = prediction.chunk(2)
                prediction = uncond + settings.guidance_scale * (cond - uncond)
            latents = scheduler.step(prediction[:count], t, latents, return_dict=False)[0]
    return latents


@torch.no_grad()
def encode_reference(pipe: StableDiffusion3Pipeline, pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Pixels [K, 3, H, W] in [-1, 1] -> clean latents (VAE mean - shift) x scale [K, C, H/8, W/8].
    `device` is where the pipeline computes (under model CPU offload the VAE sits on the CPU until called)."""
    vae = pipe.vae
    mean = vae.encode(pixels.to(device, vae.dtype)).latent_dist.mean
    return (mean - vae.config.shift_factor) * vae.config.scaling_factor


@torch.no_grad()
def decode(pipe: StableDiffusion3Pipeline, latents: torch.Tensor) -> list:
    """The stock pipeline's decoding: PIL images."""
    latents = latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
    images = pipe.vae.decode(latents, return_dict=False)[0]
    return pipe.image_processor.postprocess(images, output_type="pil")
