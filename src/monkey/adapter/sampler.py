"""The two-pass MONKEY sampler on a diffusers text-to-image pipeline with an IP-Adapter.

Pass 1 (mask pass): `initial_steps` steps at IP scale `initial_scale`, recording the image tokens'
attention at `capture_steps` (arithmetic in `record_dtype`); unless its image is wanted it stops inside
the UNet right after the last recorded layer of the last capture step (the layers after it do not
change the maps).
Its output is a plain tensor dict per item (see masks.py), so a later pass can take it from a cache.
Pass 2 (final pass): the same initial noise (same seeds), `final_steps` steps, the IP-Adapter at
`ip_scale` on `ip_steps` and 0 elsewhere, its output multiplied by each item's own mask on
`mask_steps`. Prompt embeddings are computed once and shared by both passes. A batch may mix
subjects: each item's own embedding reaches the UNet through monkey.item_embeds.

With a `SharedWork` (sharing.py), pass 1 comes from a content cache when every map a variant needs
is there, and pass 2 resumes from the cached latents of the longest mask-independent prefix of its
schedule (the steps before its first masked step); both give the bytes an uncached run gives.
"""

import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from diffusers import DiffusionPipeline

from monkey.adapter.capture import AttentionRecorder, attn2_layers, capture_processors, map_key, num_image_tokens
from monkey.adapter.control import StepController, StepPlan, StopSampling
from monkey.adapter.mask_sources import ImageMaskSource, sourced_item_mask
from monkey.adapter.masks import ItemMask, extract_mask, resize, to_grid
from monkey.adapter.settings import MonkeySettings
from monkey.adapter.sharing import Pass1Cache, PrefixCache, SharedWork, Snapshot, call_identity, resumable, union
from monkey.controlnet.hook import ControlBatch, control_unet
from monkey.datasets.base import Source
from monkey.errors import ConfigError
from monkey.item_embeds import item_image_embeds
from monkey.prompt_embeds import prompt_embeds
from monkey.subject_embeds import uses_cfg

Record = dict[str, torch.Tensor]  # "<layer>@<step>" -> [h, w, T] fp32, one item's pass-1 maps


@dataclass
class SubjectBatch:
    """One pipeline call: prompts and seeds, with one subject embedding for every item ([1, 1, D])
    or one per item ([n, 1, D]: several subjects in one call, see monkey.item_embeds). Adapters that
    read hidden states (the plus ones) take [., 1, S, D] instead, with their CFG negative."""

    prompts: list[str]
    seeds: list[int]
    image_embeds: torch.Tensor  # [1, 1, D] shared, or [n, 1, D] per item: CLIP image embeddings
    height: int
    width: int
    negative_embeds: torch.Tensor | None = None  # [1, 1, ...] the CFG negative; None: zeros (base adapters)
    control: ControlBatch | None = None  # a ControlNet and each item's control image, the same in both passes

    def __post_init__(self) -> None:
        if len(self.prompts) != len(self.seeds):
            raise ValueError(f"{len(self.prompts)} prompts but {len(self.seeds)} seeds")
        if self.image_embeds.ndim not in (3, 4) or self.image_embeds.shape[0] not in (1, len(self.prompts)):
            raise ValueError(
                f"image embeddings {tuple(self.image_embeds.shape)}: expected [1, 1, D] or one per item "
                f"[{len(self.prompts)}, 1, D] (hidden states: [., 1, S, D])"
            )

    def __len__(self) -> int:
        return len(self.prompts)

    def item_embeds(self) -> torch.Tensor:
        """[n, 1, D]: each item's subject embedding."""
        return self.image_embeds.expand(len(self), *self.image_embeds.shape[1:])

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
    sharing: dict[str, Any] = field(default_factory=dict)  # what came from the shared caches, per call
    pass1_images: list[Any] | None = None  # the decoded pass-1 images, computed or cached, when they were made


def loop_steps(pipe: DiffusionPipeline, num_inference_steps: int) -> int:
    """How many iterations the pipeline's sampling loop runs for `num_inference_steps` (PNDM: N + 1)."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    try:
        scheduler.set_timesteps(num_inference_steps)
    except ValueError as err:
        raise ConfigError(f"{type(scheduler).__name__} cannot run {num_inference_steps} steps: {err}") from err
    return len(scheduler.timesteps)


class MonkeySampler:
    def __init__(
        self,
        pipe: DiffusionPipeline,
        settings: MonkeySettings,
        shared: SharedWork | None = None,
        early_exit: bool = True,
        mask_source: ImageMaskSource | None = None,
    ):
        model_layers = attn2_layers(pipe.unet)
        initial_loop = loop_steps(pipe, settings.initial_steps)
        self.initial_loop = initial_loop  # iterations of pass 1's sampling loop
        self.final_loop = loop_steps(pipe, settings.final_steps)  # iterations of pass 2's sampling loop
        settings.check_model(model_layers, num_image_tokens(pipe.unet), initial_loop, self.final_loop)
        # `record_dtype: model` becomes the UNet's dtype here, so the cache keys and records name the real one
        record_dtype = settings.resolved_record_dtype(pipe.unet.dtype)
        settings = replace(settings, record_dtype=str(record_dtype).removeprefix("torch."))
        self.pipe = pipe
        # diffusers finds the execution device by walking every module for offload hooks (about 12 ms on
        # the tiny UNet, a tenth of a batch); the pipeline is placed before a sampler is made
        self.device = pipe._execution_device
        self.settings = settings
        self.guided = uses_cfg(pipe, settings.guidance_scale)
        self.shared = shared
        if (mask_source is None) != (settings.mask_source == "attention"):
            raise ConfigError(
                f"method.mask_source={settings.mask_source} but the sampler was given "
                f"{'no' if mask_source is None else 'a'} image mask source"
            )
        self.mask_source = mask_source  # reads the pass-1 image (mask_sources.py); None: the attention mask
        # pass 1 leaves the UNet right after the last recorded layer of its last capture step (the same maps,
        # less of that evaluation); False runs that evaluation whole and stops after the step
        self.early_exit = early_exit
        # what pass 1 records when it runs with a cache: this variant's maps plus the sweep's extras
        self.record_layers, self.record_steps = settings.layers, settings.capture_steps
        if shared is not None:
            self.record_layers = union(settings.layers, shared.settings.extra_layers(model_layers))
            self.record_steps = tuple(sorted(union(settings.capture_steps, shared.settings.record_steps)))
            outside = [step for step in self.record_steps if step >= initial_loop]
            if outside:
                raise ConfigError(
                    f"method.share.record_steps has steps {outside} outside the range 0..{initial_loop - 1} of "
                    f"pass 1 (initial_steps={settings.initial_steps})"
                )

    # ---- shared pieces --------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, batch: SubjectBatch) -> dict[str, torch.Tensor]:
        """Prompt embeddings for both passes, as the pipeline itself would compute them."""
        return prompt_embeds(self.pipe, batch.prompts, self.device, self.guided)

    def call_kwargs(self, batch: SubjectBatch, text: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The pipeline call's arguments, except `ip_adapter_image_embeds` (see `subjects`)."""
        return {
            **text,
            "height": batch.height,
            "width": batch.width,
            "guidance_scale": self.settings.guidance_scale,
            "generator": batch.generators(),
        }

    def subjects(self, batch: SubjectBatch) -> AbstractContextManager[list[torch.Tensor]]:
        """Each item's own subject embedding in every UNet evaluation of the block; yields the
        `ip_adapter_image_embeds` argument of the call."""
        embeds = batch.item_embeds().to(self.device, self.pipe.unet.dtype)  # [n, 1, D] or [n, 1, S, D]
        return item_image_embeds(self.pipe.unet, embeds, self.guided, batch.negative_embeds)

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
        layers: Sequence[str] | None = None,
        steps: Sequence[int] | None = None,
        keep_image: bool | None = None,
    ) -> Pass1Result:
        """Run the mask pass and return the maps (all image tokens) of `layers` x `steps` per item,
        by default the configured layers and capture steps.

        `output_type` applies to the pass-1 image, made only when `save_pass1_image` is set or the
        mask source reads it (`keep_image` overrides that)."""
        s = self.settings
        text = text if text is not None else self.encode_text(batch)
        steps = tuple(sorted(steps)) if steps is not None else s.capture_steps
        keep_image = s.needs_pass1_image if keep_image is None else keep_image
        recorder = AttentionRecorder(
            layers or s.layers,
            steps,
            timed=timed,
            exit_when_done=self.early_exit and not keep_image,
            attention_scale=s.attention_scale,
            dtype=s.resolved_record_dtype(self.pipe.unet.dtype),
        )

        def plan(step: int) -> StepPlan:
            return StepPlan(ip_scale=s.initial_scale, record=step in steps)

        images = None
        with (
            capture_processors(self.pipe.unet, recorder),
            self.subjects(batch) as ip_embeds,
            StepController(
                self.pipe.unet,
                plan,
                len(batch),
                recorder=recorder,
                stop_after=None if keep_image else steps[-1],
            ) as control,
            control_unet(self.pipe.unet, batch.control, self.initial_loop),
        ):
            try:
                output = self.pipe(
                    **self.call_kwargs(batch, text),
                    ip_adapter_image_embeds=ip_embeds,
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
        self,
        records: Sequence[Record],
        batch: SubjectBatch,
        labels: Sequence[str] | None = None,
        pass1_images: Sequence[Any] | None = None,
        sources: Sequence[Source] | None = None,
    ) -> tuple[list[ItemMask], torch.Tensor]:
        """Per-item masks, and the stack at image size [n, H, W] for the IP-Adapter. With an image mask
        source, each attention mask at image size is handed with the item's pass-1 image to the source,
        whose mask replaces it."""
        labels = labels or [f"item {index}" for index in range(len(records))]
        # a segmenter replaces the attention mask unread: only its own mask follows method.degenerate
        unread = self.settings.mask_source == "segmenter"
        reading = replace(self.settings, degenerate="full") if unread else self.settings
        masks = [extract_mask(record, reading, label) for record, label in zip(records, labels, strict=True)]
        size = (batch.height, batch.width)
        image_masks = torch.stack([resize(item.mask, size, soft=self.settings.soft) for item in masks])  # [n, H, W]
        if self.mask_source is None:
            return masks, image_masks
        if pass1_images is None or len(pass1_images) != len(masks):
            raise ValueError(f"mask_source={self.settings.mask_source} needs each item's decoded pass-1 image")
        sources = sources if sources is not None else [None] * len(masks)
        sourced = [
            sourced_item_mask(self.mask_source(image, attention, source), item, self.settings, label)
            for image, attention, source, item, label in zip(
                pass1_images, image_masks, sources, masks, labels, strict=True
            )
        ]
        return sourced, torch.stack([item.mask for item in sourced])

    # ---- pass 2 ---------------------------------------------------------------------------
    def final_plan(self, step: int) -> StepPlan:
        s = self.settings
        return StepPlan(ip_scale=s.ip_scale if s.adapted(step) else 0.0, masked=s.masked(step))

    def mask_free_steps(self) -> int:
        """How many leading pass-2 steps do not depend on the mask (at most all but the last step)."""
        for step in range(self.final_loop):
            plan = self.final_plan(step)
            if plan.masked and plan.ip_scale != 0:
                return step
        return self.final_loop - 1

    def call_identity(self, batch: SubjectBatch) -> dict[str, Any]:
        assert self.shared is not None
        call = call_identity(
            self.shared.identity, batch.prompts, batch.seeds, batch.image_embeds, batch.height, batch.width
        )
        # a control changes both passes: it keys the pass-1 maps and the pass-2 prefixes alike
        return call if batch.control is None else {**call, "control": batch.control.identity}

    def final(
        self,
        batch: SubjectBatch,
        image_masks: torch.Tensor,  # [n, H, W]
        text: dict[str, torch.Tensor] | None = None,
        output_type: str = "pil",
    ) -> Any:
        return self.final_pass(batch, image_masks, text, output_type)[0]

    def final_pass(
        self,
        batch: SubjectBatch,
        image_masks: torch.Tensor,  # [n, H, W]
        text: dict[str, torch.Tensor] | None = None,
        output_type: str = "pil",
    ) -> tuple[Any, dict[str, Any]]:
        """Pass 2, resumed from the longest cached mask-free prefix when there is one; returns the
        images and what came from the prefix cache."""
        s = self.settings
        text = text if text is not None else self.encode_text(batch)
        generators = batch.generators()
        kwargs = {**self.call_kwargs(batch, text), "generator": generators, "num_inference_steps": s.final_steps}
        cache = self.shared.prefix if self.shared is not None else None
        info: dict[str, Any] = {"pass2_prefix": "off", "pass2_prefix_steps": 0}
        keys: list[str] = []
        first = 0
        if cache is not None and not resumable(self.pipe):
            info["pass2_prefix"] = f"not resumable ({type(self.pipe.scheduler).__name__})"
        elif cache is not None:
            mask_free = self.mask_free_steps()
            keys = PrefixCache.keys(
                self.call_identity(batch), s, [self.final_plan(i).ip_scale for i in range(mask_free)]
            )
            snapshot = cache.longest(keys)
            info["pass2_prefix"] = "computed"
            if snapshot is not None:
                first = snapshot.steps
                for generator, state in zip(generators, snapshot.generator_states, strict=True):
                    generator.set_state(state)
                kwargs["latents"] = snapshot.latents.to(self.device)
                kwargs["timesteps"] = schedule(self.pipe, s.final_steps)[first:]
                info = {"pass2_prefix": "cache", "pass2_prefix_steps": first}

        def observer(done: int, callback_kwargs: dict) -> None:
            if cache is not None and first < done <= len(keys):
                latents = callback_kwargs["latents"].detach().to("cpu").clone()
                cache.store(keys[done - 1], Snapshot(done, latents, [g.get_state() for g in generators]))

        # [n, 1, H, W]; [n, K, H, W] as given for K subjects per item (monkey.multi), one mask per image
        masks = (image_masks[:, None] if image_masks.ndim == 3 else image_masks).to(self.device, torch.float32)
        with (
            self.subjects(batch) as ip_embeds,
            StepController(
                self.pipe.unet, self.final_plan, len(batch), masks=masks, first_step=first, observer=observer
            ) as control,
            control_unet(self.pipe.unet, batch.control, self.final_loop, first_step=first),
            quiet_custom_timesteps(),
        ):
            images = self.pipe(
                **kwargs,
                ip_adapter_image_embeds=ip_embeds,
                output_type=output_type,
                callback_on_step_end=control.after_step,
                callback_on_step_end_tensor_inputs=["latents"],
            ).images
        return images, info

    def pass1_records(
        self, batch: SubjectBatch, text: dict[str, torch.Tensor]
    ) -> tuple[list[Record], Pass1Result | None, str, list[Any] | None]:
        """This variant's pass-1 records (and decoded images, when it reads them): from the shared cache
        when all are there, else recorded (with the sweep's extra layers and steps, which go to the
        cache for the other variants, as does the image)."""
        s = self.settings
        cache = self.shared.pass1 if self.shared is not None else None
        if cache is None:
            pass1 = self.record(batch, text)
            return pass1.records, pass1, "off", pass1.images
        assert self.shared is not None
        keys = Pass1Cache.item_keys(self.call_identity(batch), s)
        records = cache.load(keys, s.layers, s.capture_steps)
        images = cache.load_images(keys, self.shared.decoder) if s.needs_pass1_image else None
        if records is not None and (images is not None or not s.needs_pass1_image):
            return records, None, "cache", images
        store_image = s.needs_pass1_image or self.shared.settings.record_image
        pass1 = self.record(batch, text, layers=self.record_layers, steps=self.record_steps, keep_image=store_image)
        cache.store(keys, pass1.records)
        if store_image:
            cache.store_images(keys, self.shared.decoder, pass1.images)
        needed = {map_key(layer, step) for layer in s.layers for step in s.capture_steps}
        records = [{k: v for k, v in record.items() if k in needed} for record in pass1.records]
        return records, pass1, "computed", pass1.images if s.needs_pass1_image else None

    def __call__(
        self,
        batch: SubjectBatch,
        records: Sequence[Record] | None = None,
        labels: Sequence[str] | None = None,
        output_type: str = "pil",
        sources: Sequence[Source] | None = None,
    ) -> MonkeyOutput:
        """Both passes; `records` (e.g. from a cache) replaces pass 1 (not with an image mask source,
        which needs the pass-1 image). `sources`: each item's dataset Source (the segmenter's subject word)."""
        text = self.encode_text(batch)
        pass1 = None
        source = "given"
        pass1_images = None
        if records is None:
            records, pass1, source, pass1_images = self.pass1_records(batch, text)
        elif self.mask_source is not None:
            raise ValueError(f"mask_source={self.settings.mask_source} needs pass 1's image: pass no records")
        masks, image_masks = self.masks(records, batch, labels, pass1_images, sources)
        images, prefix = self.final_pass(batch, image_masks, text, output_type)
        sharing = {"pass1": source, **prefix}
        return MonkeyOutput(
            images=images,
            masks=masks,
            image_masks=image_masks,
            pass1=pass1,
            sharing=sharing,
            pass1_images=pass1_images,
        )


def schedule(pipe: DiffusionPipeline, num_inference_steps: int) -> list[int]:
    """The timesteps the pipeline's own call would run, from a fresh copy of its scheduler."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(num_inference_steps)
    return [int(t) for t in scheduler.timesteps]


@contextmanager
def quiet_custom_timesteps() -> Iterator[None]:
    """A resumed call hands LCM the tail of its own schedule, which it warns about as a custom
    schedule not starting at the last training step: expected here, so not shown."""
    logger = logging.getLogger("diffusers.schedulers.scheduling_lcm")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
