"""The ControlNet beside a pipeline's own UNet: a forward pre-hook that runs it before every UNet
evaluation and hands its residuals to the UNet (`down_block_additional_residuals`,
`mid_block_additional_residual`), exactly as diffusers' StableDiffusionControlNetPipeline calls the
two (pipeline_controlnet.py: `self.controlnet(control_model_input, t, encoder_hidden_states=
prompt_embeds, controlnet_cond=image, conditioning_scale=cond_scale, ...)`, then `self.unet(...,
down_block_additional_residuals=..., mid_block_additional_residual=...)`). The ControlNet sees the
UNet's input and the text embeddings, not the IP-Adapter's image tokens, as there.

Steps: the hook counts UNet evaluations (one per loop step: CFG is batched), from `first_step` for a
call resumed mid-schedule, and applies `scale` on the steps diffusers' `controlnet_keep` rule keeps for
`start`/`end` over the pass's whole loop, 0 elsewhere (the ControlNet still runs there, as in diffusers:
its residuals are then zeros). A scale of 0 therefore adds exact zeros: the images of a run without
ControlNet, bit for bit.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from monkey.controlnet.settings import ControlSettings, keep


@dataclass
class ControlBatch:
    """One pipeline call's control: the model, its settings and each item's image."""

    controlnet: ControlNetModel
    settings: ControlSettings
    images: torch.Tensor  # [n, 3, H, W] in [0, 1]: item i's control image
    identity: dict[str, Any]  # settings, weights and pixel hashes: joins the shared caches' keys

    def scale_at(self, step: int, loop_steps: int) -> float:
        return self.settings.scale if keep(step, loop_steps, self.settings.start, self.settings.end) else 0.0

    def rows(self, rows: int) -> torch.Tensor:
        """[rows, 3, H, W]: one image per attention-batch row (CFG: [unconditional; conditional], both
        the item's own image, as diffusers' prepare_image repeats it)."""
        items = self.images.shape[0]
        if rows % items or rows // items not in (1, 2):
            raise RuntimeError(f"UNet batch of {rows} rows for {items} control images (expected n or 2n)")
        return self.images.repeat(rows // items, 1, 1, 1)


@contextmanager
def control_unet(
    unet: UNet2DConditionModel, control: ControlBatch | None, loop_steps: int, first_step: int = 0
) -> Iterator[None]:
    """Within the block every UNet evaluation gets the ControlNet's residuals; `loop_steps` is the
    length of the pass's whole sampling loop (what `start` and `end` are fractions of). None: nothing."""
    if control is None:
        yield
        return
    step = first_step

    @torch.no_grad()
    def before_unet(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        nonlocal step
        sample = args[0] if args else kwargs["sample"]  # [rows, 4, h, w], the scheduler-scaled input
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        net = control.controlnet
        down, mid = net(
            sample.to(net.dtype),
            timestep,
            encoder_hidden_states=kwargs["encoder_hidden_states"].to(net.dtype),
            controlnet_cond=control.rows(sample.shape[0]).to(sample.device, net.dtype),
            conditioning_scale=control.scale_at(step, loop_steps),
            return_dict=False,
        )
        step += 1
        kwargs["down_block_additional_residuals"] = down
        kwargs["mid_block_additional_residual"] = mid
        return args, kwargs

    handle = unet.register_forward_pre_hook(before_unet, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
