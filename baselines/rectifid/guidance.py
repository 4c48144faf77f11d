"""Anchored classifier guidance (RectifID, Sun et al. 2024) on a few-step rectified-flow sampler.

The noise z is fixed. Each iteration runs the whole sampler with autograd (UNet, VAE decoder, loss)
and moves the trajectory by one SGD step on per-step parameters P_0..P_{n-1}:

  * P_i's gradient is dLoss/dx_i, the state entering step i: x_0 = z + (P_0 - sg P_0) and, after
    step i, + (P_{i+1} - sg P_{i+1}) (straight-through terms: value unchanged, gradient routed).
  * each gradient is scaled to norm <= `grad_clip` (per P_i), then SGD: P_i <- P_i - lr * g_i.
  * the state after step i is anchored to the previous iteration's:
        x_{i+1} = A_i + (r_i - R_i) + f_i * (P_i - R_i)
    r_i this iteration's raw step output, R_i last iteration's, A_i last iteration's x_{i+1}, and
    P_i - R_i exactly the SGD update (P_i is reset to r_i after every step). f_i is the window factor:
    RectifID's constant 0.95796674, or `exact`: d x_{i+1} / d x_i of PeRFlow's window i with the clean
    image held fixed, sqrt((1 - ab_e) / (1 - ab_s)) (PeRFlowScheduler.window_factor).

On the first pass A = R = P = r, so it is the unguided sampler bit for bit. The image is one more
pass, without gradients, after the last update (with `iterations=0`: the plain sampler).

Several items per call (a batch of B noises, B prompts, B losses): every item's optimisation is its own.
The loss backpropagated is the SUM of the per-item losses (never their mean, which would scale each
gradient by 1/B), so each item's P_i receives exactly its own loss's gradient (UNet, VAE decoder and
the loss's models mix no rows: group norm, layer norm and attention act per sample); each (step, item)
gradient is clipped by its own norm; SGD without momentum updates each element alone. A batch changes
only the floating-point rounding of the batched kernels, never what is optimised.
"""

from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

UPSTREAM_WINDOW_FACTOR = 0.95796674


@dataclass(frozen=True)
class GuidanceSettings:
    iterations: int = 50
    lr: float = 1.0
    grad_clip: float = 1.0
    window_factor: float | str = UPSTREAM_WINDOW_FACTOR  # a number, or "exact"
    num_inference_steps: int = 4
    guidance_scale: float = 3.0
    gradient_checkpointing: bool = False
    autocast: bool = True  # CUDA only: fp16 autocast around the guided passes


class PeRFlowSampler:
    """The few-step text-to-image sampler on a diffusers StableDiffusionPipeline whose scheduler steps
    in one call (PeRFlow): CFG with the empty negative prompt, then decode to [0, 1]."""

    def __init__(self, pipe, num_inference_steps: int, guidance_scale: float):
        self.pipe = pipe
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale

    def timesteps(self, device: torch.device) -> torch.Tensor:
        self.pipe.scheduler.set_timesteps(self.num_inference_steps, device=device)
        return self.pipe.scheduler.timesteps

    @torch.no_grad()
    def text_embeds(self, prompts: str | Sequence[str], device: torch.device) -> torch.Tensor:
        """One prompt per item: [2B, L, D] (B unconditional "", then B conditional) under CFG, else [B, L, D]."""
        guided = self.guidance_scale > 1.0
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        cond, uncond = self.pipe.encode_prompt(prompts, device, 1, guided, negative_prompt=None)
        return torch.cat([uncond, cond]) if guided else cond

    def step(self, x: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """One sampler step, x [B, 4, h, w] -> the scheduler's next state (embeds: text_embeds' rows)."""
        if embeds.shape[0] not in (x.shape[0], 2 * x.shape[0]):
            raise ValueError(f"{embeds.shape[0]} text rows for {x.shape[0]} latents (want B, or 2B under CFG)")
        guided = embeds.shape[0] == 2 * x.shape[0]
        model_input = torch.cat([x] * 2) if guided else x
        model_input = self.pipe.scheduler.scale_model_input(model_input, t)
        noise = self.pipe.unet(model_input, t, encoder_hidden_states=embeds, return_dict=False)[0]
        if guided:
            uncond, cond = noise.chunk(2)
            noise = uncond + self.guidance_scale * (cond - uncond)
        return self.pipe.scheduler.step(noise, t, x, return_dict=False)[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, 4, h, w] -> [B, 3, H, W] in [0, 1] (the pipeline's own denormalisation)."""
        vae = self.pipe.vae
        images = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
        return (images / 2 + 0.5).clamp(0, 1)

    def sample(self, noise: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """The plain sampler: final latents from `noise`."""
        x = noise
        for t in self.timesteps(noise.device):
            x = self.step(x, t, embeds)
        return x


def window_factors(setting: float | str, scheduler, steps: int) -> list[float]:
    """One factor per step: the constant, or each step's window factor from the scheduler."""
    if setting == "exact":
        if not hasattr(scheduler, "window_factor") or scheduler.config.num_time_windows != steps:
            raise ValueError(
                "window_factor=exact needs the PeRFlow scheduler with one step per window "
                f"(got {type(scheduler).__name__}, {steps} steps)"
            )
        return [scheduler.window_factor(k) for k in range(steps)]
    return [float(setting)] * steps


@dataclass
class IterationRecord:
    loss: float
    identity: float
    pixel: float
    detected: bool
    grad_norms: list[float] = field(default_factory=list)  # per P_i, before clipping


@dataclass
class GuidanceResult:
    latents: torch.Tensor  # [B, 4, h, w] of the final pass
    histories: list[list[IterationRecord]]  # per item, per iteration

    @property
    def history(self) -> list[IterationRecord]:
        """The one item's iterations (a batch of one)."""
        if len(self.histories) != 1:
            raise ValueError(f"history of a batch of {len(self.histories)} items: read histories[k]")
        return self.histories[0]


class AnchoredGuidance:
    def __init__(self, sampler: PeRFlowSampler, settings: GuidanceSettings):
        self.sampler = sampler
        self.settings = settings

    def trajectory(self, noise, embeds, params, anchor, raw, factors, first: bool) -> torch.Tensor:
        """One pass of the sampler with the anchored update; updates anchor, raw and params' values."""
        x = noise + (params[0] - params[0].detach())
        timesteps = self.sampler.timesteps(noise.device)
        for i, t in enumerate(timesteps):
            r = self.sampler.step(x, t, embeds)
            if first:
                anchor[i].copy_(r.detach())
                raw[i].copy_(r.detach())
                params.data[i].copy_(r.detach())
            shift = (anchor[i] - raw[i]) + factors[i] * (params.data[i] - raw[i])  # [B, 4, h, w], no gradient
            x = r + shift
            if i + 1 < len(timesteps):
                x = x + (params[i + 1] - params[i + 1].detach())
            anchor[i].copy_(x.detach())
            raw[i].copy_(r.detach())
            params.data[i].copy_(r.detach())
        return x

    def run(
        self,
        noise: torch.Tensor,
        embeds: torch.Tensor,
        loss_fn: Callable[[torch.Tensor], Sequence[Any]],
        on_iteration: Callable[[int, torch.Tensor, Sequence[Any]], None] | None = None,
    ) -> GuidanceResult:
        """noise [B, 4, h, w]; embeds: the sampler's text rows for the B items; loss_fn(image [B, 3, H, W]
        in [0, 1]) -> B LossResult-like objects (`total`: that item's differentiable scalar, `identity`,
        `pixel`, `detected`). on_iteration(k, image, losses) sees every guided pass."""
        s = self.settings
        count = noise.shape[0]
        steps = len(self.sampler.timesteps(noise.device))
        factors = window_factors(s.window_factor, self.sampler.pipe.scheduler, steps)
        shape = (steps, *noise.shape)  # [steps, B, 4, h, w]
        params = torch.nn.Parameter(torch.zeros(shape, device=noise.device, dtype=noise.dtype))
        anchor = torch.zeros(shape, device=noise.device, dtype=noise.dtype)
        raw = torch.zeros_like(anchor)
        self.anchor, self.params = anchor, params  # [steps, B, 4, h, w]: the last pass's states, for inspection
        optimizer = torch.optim.SGD([params], lr=s.lr)  # no momentum: each element moves by its own gradient
        histories: list[list[IterationRecord]] = [[] for _ in range(count)]
        cast = self.autocast(noise.device)
        bar = tqdm(range(s.iterations), desc="rectifid guidance", leave=False, position=1, disable=None)
        with self.checkpointing():
            for k in bar:
                with cast:
                    x = self.trajectory(noise, embeds, params, anchor, raw, factors, first=k == 0)
                    image = self.sampler.decode(x)  # [B, 3, H, W]
                    losses = list(loss_fn(image))
                if len(losses) != count:
                    raise ValueError(f"loss_fn gave {len(losses)} losses for {count} items")
                optimizer.zero_grad(set_to_none=True)
                torch.stack([loss.total for loss in losses]).sum().backward()  # the sum: item k gets dL_k only
                grad = params.grad  # [steps, B, 4, h, w]
                norms = grad.flatten(2).float().norm(dim=2)  # [steps, B]: one norm per P_i of each item
                grad.mul_((s.grad_clip / norms.clamp(min=s.grad_clip)).to(grad.dtype).view(steps, count, 1, 1, 1))
                optimizer.step()
                for item, loss in enumerate(losses):
                    histories[item].append(
                        IterationRecord(
                            float(loss.total.detach()),
                            loss.identity,
                            loss.pixel,
                            loss.detected,
                            norms[:, item].tolist(),
                        )
                    )
                bar.set_postfix(loss=" ".join(f"{h[-1].loss:.3f}" for h in histories))
                if on_iteration is not None:
                    on_iteration(k, image.detach(), losses)
                del x, image, losses
        with torch.no_grad(), cast:
            latents = self.trajectory(noise, embeds, params, anchor, raw, factors, first=s.iterations == 0)
        return GuidanceResult(latents.detach(), histories)

    def autocast(self, device: torch.device):
        if self.settings.autocast and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return nullcontext()

    @contextmanager
    def checkpointing(self):
        """Gradient checkpointing of the UNet and the VAE for the guided passes only (the pipeline is
        shared with other methods of the process), put back afterwards."""
        if not self.settings.gradient_checkpointing:
            yield
            return
        unet, vae = self.sampler.pipe.unet, self.sampler.pipe.vae
        unet.enable_gradient_checkpointing()
        vae.enable_gradient_checkpointing()
        try:
            yield
        finally:
            unet.disable_gradient_checkpointing()
            vae.disable_gradient_checkpointing()
