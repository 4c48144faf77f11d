"""The two-pass MONKEY sampler on a diffusers text-to-image pipeline with an IP-Adapter.

Pass 1 (mask pass): `initial_steps` steps at IP scale `initial_scale`, recording the image tokens'
attention at `capture_steps`; it stops after the last capture step unless its image is wanted.
Its output is a plain tensor dict per item (see masks.py), so a later pass can take it from a cache.
Pass 2 (final pass): the same initial noise (same seeds), `final_steps` steps, the IP-Adapter at
`ip_scale` on `ip_steps` and 0 elsewhere, its output multiplied by each item's own mask on
`mask_steps`. Prompt embeddings are computed once and shared by both passes.

Pass 2's steps before its first IP step do not depend on the subject or the mask, but they are not
split out: resuming a diffusers pipeline mid-schedule needs the scheduler's internal state (PNDM's
history, LCM's step index) and the generators' states (LCM draws fresh noise every step), which the
pipelines do not expose. A cache of pass 1 (`record` -> `__call__(records=...)`) needs none of that.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DiffusionPipeline

from monkey.adapter.capture import AttentionRecorder, attn2_layers, capture_processors, num_image_tokens
from monkey.adapter.control import StepController, StepPlan, StopSampling
from monkey.adapter.masks import ItemMask, extract_mask, resize, to_grid
from monkey.adapter.settings import MonkeySettings
from monkey.errors import ConfigError
from monkey.subject_embeds import pipeline_image_embeds, uses_cfg

Record = dict[str, torch.Tensor]  # "<layer>@<step>" -> [h, w, T] fp32, one item's pass-1 maps


@dataclass
class SubjectBatch:
    """One pipeline call: prompts and seeds sharing one subject (diffusers repeats the embedding
    once per prompt, so a call cannot carry several subjects)."""

    prompts: list[str]
    seeds: list[int]
    image_embeds: torch.Tensor  # [1, 1, D] the subject's CLIP image embedding
    height: int
    width: int

    def __post_init__(self) -> None:
        if len(self.prompts) != len(self.seeds):
            raise ValueError(f"{len(self.prompts)} prompts but {len(self.seeds)} seeds")
        if self.image_embeds.shape[0] != 1:
            raise ValueError(f"one subject embedding per call, got {tuple(self.image_embeds.shape)}")

    def __len__(self) -> int:
        return len(self.prompts)

    def generators(self) -> list[torch.Generator]:
        """Fresh per-item generators: both passes start from the same initial noise."""
        return [torch.Generator("cpu").manual_seed(seed) for seed in self.seeds]


@dataclass
class Pass1Result:
    records: list[Record]  # per item
    images: Any = None  # only when save_pass1_image: PIL images (or latents for output_type="latent")
    record_seconds: float = 0.0  # time spent computing maps (set when timed)


@dataclass
class MonkeyOutput:
    images: Any  # list of PIL images, or latents [n, 4, h, w] for output_type="latent"
    masks: list[ItemMask]
    image_masks: torch.Tensor  # [n, H, W] the masks given to the IP-Adapter, at image size
    pass1: Pass1Result | None


def loop_steps(pipe: DiffusionPipeline, num_inference_steps: int) -> int:
    """How many iterations the pipeline's sampling loop runs for `num_inference_steps` (PNDM: N + 1)."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    try:
        scheduler.set_timesteps(num_inference_steps)
    except ValueError as err:
        raise ConfigError(f"{type(scheduler).__name__} cannot run {num_inference_steps} steps: {err}") from err
    return len(scheduler.timesteps)


class MonkeySampler:
    def __init__(self, pipe: DiffusionPipeline, settings: MonkeySettings):
        settings.check_model(
            attn2_layers(pipe.unet),
            num_image_tokens(pipe.unet),
            loop_steps(pipe, settings.initial_steps),
            loop_steps(pipe, settings.final_steps),
        )
        self.pipe = pipe
        self.settings = settings
        self.guided = uses_cfg(pipe, settings.guidance_scale)

    # ---- shared pieces --------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, batch: SubjectBatch) -> dict[str, torch.Tensor]:
        """Prompt embeddings for both passes, as the pipeline itself would compute them."""
        positive, negative = self.pipe.encode_prompt(batch.prompts, self.pipe._execution_device, 1, self.guided)
        return (
            {"prompt_embeds": positive, "negative_prompt_embeds": negative}
            if self.guided
            else {"prompt_embeds": positive}
        )

    def call_kwargs(self, batch: SubjectBatch, text: dict[str, torch.Tensor]) -> dict[str, Any]:
        embeds = batch.image_embeds.to(self.pipe._execution_device, self.pipe.unet.dtype)
        return {
            **text,
            "height": batch.height,
            "width": batch.width,
            "guidance_scale": self.settings.guidance_scale,
            "generator": batch.generators(),
            "ip_adapter_image_embeds": pipeline_image_embeds(embeds, self.guided),
        }

    def latent_hw(self, batch: SubjectBatch) -> tuple[int, int]:
        factor = self.pipe.vae_scale_factor
        return batch.height // factor, batch.width // factor

    # ---- pass 1 ---------------------------------------------------------------------------
    def record(
        self,
        batch: SubjectBatch,
        text: dict[str, torch.Tensor] | None = None,
        timed: bool = False,
        output_type: str = "pil",
    ) -> Pass1Result:
        """Run the mask pass and return every configured layer's maps (all image tokens) per item.

        `output_type` applies to the pass-1 image, made only when `save_pass1_image` is set."""
        s = self.settings
        text = text if text is not None else self.encode_text(batch)
        recorder = AttentionRecorder(s.layers, s.capture_steps, timed=timed)

        def plan(step: int) -> StepPlan:
            return StepPlan(ip_scale=s.initial_scale, record=step in s.capture_steps)

        keep_image = s.save_pass1_image
        images = None
        with (
            capture_processors(self.pipe.unet, recorder),
            StepController(
                self.pipe.unet,
                plan,
                len(batch),
                recorder=recorder,
                stop_after=None if keep_image else s.last_capture_step,
            ) as control,
        ):
            try:
                output = self.pipe(
                    **self.call_kwargs(batch, text),
                    num_inference_steps=s.initial_steps,
                    output_type=output_type if keep_image else "latent",
                    callback_on_step_end=control.after_step,
                )
                images = output.images if keep_image else None
            except StopSampling:
                pass
        if recorder.missing():
            raise RuntimeError(f"pass 1 ended without recording {recorder.missing()} (did the loop run that long?)")
        latent_hw = self.latent_hw(batch)
        records = [
            {key: to_grid(maps[index].cpu().clone(), latent_hw) for key, maps in recorder.maps.items()}
            for index in range(len(batch))
        ]
        return Pass1Result(records=records, images=images, record_seconds=recorder.seconds)

    # ---- masks ------------------------------------------------------------------------------
    def masks(
        self, records: Sequence[Record], batch: SubjectBatch, labels: Sequence[str] | None = None
    ) -> tuple[list[ItemMask], torch.Tensor]:
        """Per-item masks, and the stack at image size [n, H, W] for the IP-Adapter."""
        labels = labels or [f"item {index}" for index in range(len(records))]
        masks = [extract_mask(record, self.settings, label) for record, label in zip(records, labels, strict=True)]
        image_masks = torch.stack(
            [resize(item.mask, (batch.height, batch.width), soft=self.settings.soft) for item in masks]
        )
        return masks, image_masks

    # ---- pass 2 ---------------------------------------------------------------------------
    def final(
        self,
        batch: SubjectBatch,
        image_masks: torch.Tensor,  # [n, H, W]
        text: dict[str, torch.Tensor] | None = None,
        output_type: str = "pil",
    ) -> Any:
        s = self.settings
        text = text if text is not None else self.encode_text(batch)

        def plan(step: int) -> StepPlan:
            return StepPlan(ip_scale=s.ip_scale if step in s.ip_steps else 0.0, masked=step in s.mask_steps)

        masks = image_masks[:, None].to(self.pipe._execution_device, torch.float32)  # [n, 1, H, W]
        with StepController(self.pipe.unet, plan, len(batch), masks=masks) as control:
            return self.pipe(
                **self.call_kwargs(batch, text),
                num_inference_steps=s.final_steps,
                output_type=output_type,
                callback_on_step_end=control.after_step,
            ).images

    def __call__(
        self,
        batch: SubjectBatch,
        records: Sequence[Record] | None = None,
        labels: Sequence[str] | None = None,
        output_type: str = "pil",
    ) -> MonkeyOutput:
        """Both passes; `records` (e.g. from a cache) replaces pass 1."""
        text = self.encode_text(batch)
        pass1 = None
        if records is None:
            pass1 = self.record(batch, text)
            records = pass1.records
        masks, image_masks = self.masks(records, batch, labels)
        images = self.final(batch, image_masks, text, output_type)
        return MonkeyOutput(images=images, masks=masks, image_masks=image_masks, pass1=pass1)
