"""Deterministic DDIM inversion: the exact algebraic reverse of diffusers' DDIM step (eta 0).

DDIM's step at timestep t maps noise level alpha(t) to alpha(t - T/n) (T training steps, n sampling
steps; below 0 the scheduler's final alpha). Inversion walks the same timesteps backwards: from the
latent at level alpha(t - T/n) to level alpha(t), with the noise predicted at timestep t from the
lower-noise latent, the usual approximation (exact only if the prediction did not change between
the two latents). Every intermediate latent is kept: MasaCtrl can reset its source branch to them.
"""

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel

from monkey.errors import ConfigError


def require_ddim(scheduler: object, profile: str) -> DDIMScheduler:
    if not isinstance(scheduler, DDIMScheduler):
        raise ConfigError(
            f"DDIM inversion needs a DDIMScheduler; model profile '{profile}' gives {type(scheduler).__name__} "
            "(set `scheduler: DDIMScheduler` in the profile, as conf/model/sd14.yaml does)"
        )
    return scheduler


@torch.no_grad()
def ddim_invert(
    unet: UNet2DConditionModel,
    scheduler: DDIMScheduler,
    latents: torch.Tensor,
    text_embeds: torch.Tensor,
    num_inference_steps: int,
) -> list[torch.Tensor]:
    """Invert clean latents [B, 4, h, w] with text embeddings [B, L, D] (MasaCtrl: the empty prompt).

    Returns num_inference_steps + 1 latents: [x_0, x_(t_n-1), ..., x_(t_0)], i.e. entry -1 - i is
    the latent at the start of sampling step i (timestep `scheduler.timesteps[i]`), entry -1 the
    starting noise of the sampler.
    """
    scheduler.set_timesteps(num_inference_steps, device=latents.device)
    stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alphas = scheduler.alphas_cumprod.to(device=latents.device, dtype=torch.float64)
    final_alpha = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float64, device=latents.device)
    trajectory = [latents]
    for t in reversed(scheduler.timesteps):
        eps = unet(latents, t, encoder_hidden_states=text_embeds).sample  # [B, 4, h, w]
        lower = int(t) - stride
        alpha_from = alphas[lower] if lower >= 0 else final_alpha
        alpha_to = alphas[int(t)]
        clean = (latents - (1 - alpha_from).sqrt() * eps) / alpha_from.sqrt()
        latents = (alpha_to.sqrt() * clean + (1 - alpha_to).sqrt() * eps).to(latents.dtype)
        trajectory.append(latents)
    return trajectory
