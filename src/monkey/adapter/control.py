"""Per-step control of one pipeline call: IP scale, per-item masks and recording by step index.

The step index comes from the sampling loop: diffusers calls `callback_on_step_end(pipe, i, t, ...)`
after step i, so the next UNet evaluation is step i + 1. A UNet forward pre-hook then applies that
step's plan to the evaluation it precedes. All state lives in the controller of this one call; the
processors' scales are put back on exit, so the shared pipeline is left as it was found.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

from monkey.adapter.capture import AttentionRecorder, StopSampling

__all__ = ["StepController", "StepPlan", "StopSampling"]


@dataclass(frozen=True)
class StepPlan:
    """What one sampling step does."""

    ip_scale: float
    masked: bool = False  # multiply the image tokens' output by the per-item mask
    record: bool = False  # let the recorder take this step's maps


class StepController:
    def __init__(
        self,
        unet: UNet2DConditionModel,
        plan: Callable[[int], StepPlan],
        num_items: int,
        masks: torch.Tensor | None = None,  # [items, 1, H, W] at image size, for ip_adapter_masks
        recorder: AttentionRecorder | None = None,
        stop_after: int | None = None,
        first_step: int = 0,
        observer: Callable[[int, dict], None] | None = None,
    ):
        self.unet = unet
        self.plan = plan
        self.num_items = num_items
        self.masks = masks
        self.recorder = recorder
        self.stop_after = stop_after
        self.first_step = first_step  # a call resumed from a cached prefix starts mid-schedule
        self.observer = observer  # observer(steps_done, callback_kwargs) after every step
        self.step = first_step
        self.evaluated: list[int] = []  # steps whose UNet evaluation ran, in order
        self.processors: list[IPAdapterAttnProcessor2_0] = []
        self.saved_scales: list[list[float]] = []
        self.handle: Any = None

    def __enter__(self) -> "StepController":
        self.processors = [p for p in self.unet.attn_processors.values() if isinstance(p, IPAdapterAttnProcessor2_0)]
        self.saved_scales = [list(p.scale) for p in self.processors]
        self.handle = self.unet.register_forward_pre_hook(self.before_unet, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()
        for processor, scale in zip(self.processors, self.saved_scales, strict=True):
            processor.scale = scale
        if self.recorder is not None:
            self.recorder.end()

    def set_ip_scale(self, scale: float) -> None:
        for processor in self.processors:
            processor.scale = [scale] * len(processor.scale)

    def before_unet(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if self.evaluated and self.evaluated[-1] == self.step:
            raise RuntimeError(
                f"the UNet ran twice in sampling step {self.step}; MONKEY's step control supports pipelines "
                "that evaluate the UNet once per step (CFG batched), such as the LCM and Stable Diffusion ones"
            )
        self.evaluated.append(self.step)
        plan = self.plan(self.step)
        self.set_ip_scale(plan.ip_scale)
        sample = args[0] if args else kwargs["sample"]
        rows = self.conditional_rows(sample.shape[0])
        attention_kwargs = dict(kwargs.get("cross_attention_kwargs") or {})
        attention_kwargs.pop("ip_adapter_masks", None)
        if plan.masked and plan.ip_scale != 0:
            attention_kwargs["ip_adapter_masks"] = [self.mask_rows(sample.shape[0])]
        kwargs["cross_attention_kwargs"] = attention_kwargs or None
        if self.recorder is not None:
            self.recorder.begin_step(self.step if plan.record else None, rows)
        return args, kwargs

    def conditional_rows(self, batch: int) -> slice:
        """diffusers batches CFG as [unconditional; conditional]; without CFG every row is conditional."""
        if batch == self.num_items:
            return slice(0, batch)
        if batch == 2 * self.num_items:
            return slice(self.num_items, batch)
        raise RuntimeError(f"UNet batch of {batch} rows for {self.num_items} items (expected n or 2n)")

    def mask_rows(self, batch: int) -> torch.Tensor:
        """One mask per attention-batch row, [batch, 1, H, W]: item masks, repeated for both CFG halves.

        Passed as `ip_adapter_masks=[m]`, the stock processor reads m[:, 0] as a [batch, H, W] stack and,
        its first dimension already equal to the batch, downsamples each row's own mask."""
        assert self.masks is not None, "a masked step needs masks"
        repeats = batch // self.num_items
        return self.masks.repeat(repeats, 1, 1, 1)

    def after_step(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        """`callback_on_step_end`: the loop finished its `step`-th iteration (counted from this call's
        first step); the next evaluation is schedule step first_step + step + 1."""
        step += self.first_step
        self.step = step + 1
        if self.observer is not None:
            self.observer(self.step, callback_kwargs)
        if self.stop_after is not None and step >= self.stop_after:
            raise StopSampling
        return {}
