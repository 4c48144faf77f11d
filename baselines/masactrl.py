"""MasaCtrl (Cao et al., ICCV 2023) on diffusers' Stable Diffusion, for subject-driven generation.

Per subject image: encode it with the VAE (latent mean x scaling factor), DDIM-invert it with the
empty prompt, keeping every intermediate latent. Then denoise one batch [source, target_1..k] from
the inverted noise with prompts [source prompt, target prompts] under classifier-free guidance; from
`start_step` on, in transformer blocks from `start_layer` on, every self-attention reads the source
branch's keys and values (baselines/mutual_attention.py). Optionally the source latent is reset to
the inversion latent at every step. The image is the target branch; the source branch is the
reconstruction, which the paper's own runs saved by mistake (`paper_bug_save_source_branch`).

Targets of one subject share its inversion and its source branch, so they go in one batch; each
target reads only the source, so batching changes no result. The item's seed is unused: the
starting noise is the inversion of the subject image (recorded in the row's info).
"""

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from monkey.baselines.captioners import build_captioner
from monkey.baselines.ddim_inversion import ddim_invert, require_ddim
from monkey.baselines.mutual_attention import MutualAttentionControl, controlled_layers, mutual_self_attention
from PIL import Image, ImageOps

from monkey.datasets.base import Source
from monkey.errors import ConfigError
from monkey.methods.base import GenerationRequest, GenerationResult, Method, same_source_runs
from monkey.models.profiles import Runtime, load_runtime_pipeline

INVERSIONS_KEPT = 4  # subjects whose inversion trajectories stay in memory (plan order groups a subject's items)


class MasaCtrlMethod(Method):
    def __init__(
        self,
        name: str,
        runtime: Runtime,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        start_step: int = 4,
        start_layer: int = 10,
        reset_source_to_inversion: bool = False,
        captioner: dict[str, Any] | None = None,
        paper_bug_save_source_branch: bool = False,
    ):
        super().__init__(name, runtime)
        if num_inference_steps < 1 or start_step < 0:
            raise ConfigError(
                f"method {name}: num_inference_steps={num_inference_steps} must be >= 1, start_step={start_step} >= 0"
            )
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.start_step = start_step
        self.start_layer = start_layer
        self.reset_source_to_inversion = reset_source_to_inversion
        self.paper_bug_save_source_branch = paper_bug_save_source_branch
        self.pipe = load_runtime_pipeline(runtime)
        self.scheduler = require_ddim(self.pipe.scheduler, runtime.model.name)
        self.layers = controlled_layers(self.pipe.unet, start_layer)  # checks start_layer now, not mid-run
        self.captioner = build_captioner(
            captioner or {"_target_": "monkey.baselines.captioners.TemplateCaptioner"}, runtime.device
        )
        self.captions: dict[str, str] = {}
        self.inversions: OrderedDict[tuple, list[torch.Tensor]] = OrderedDict()

    # ---- prompts -------------------------------------------------------------------------------
    def caption_for(self, source: Source) -> str:
        if source.source_id not in self.captions:
            self.captions[source.source_id] = self.captioner.caption(source)
        return self.captions[source.source_id]

    # ---- the three stages ----------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, source: Source, height: int, width: int) -> torch.Tensor:
        """The subject image, centre-cropped to the output's aspect and resized, as VAE latent mean
        x scaling factor: [1, 4, height/8, width/8]."""
        image = ImageOps.fit(source.load_image(), (width, height), Image.Resampling.LANCZOS)
        pixels = self.pipe.image_processor.preprocess(image, height=height, width=width)  # [1, 3, H, W] in [-1, 1]
        pixels = pixels.to(self.runtime.device, self.pipe.vae.dtype)
        return self.pipe.vae.encode(pixels).latent_dist.mean * self.pipe.vae.config.scaling_factor

    def invert(self, source: Source, height: int, width: int) -> list[torch.Tensor]:
        """The inversion trajectory of a subject image (memoised for the last few subjects)."""
        key = (source.source_id, height, width, self.num_inference_steps)
        if key not in self.inversions:
            latents = self.encode(source, height, width)
            empty = self.text_embeds([""])[1]  # [1, L, D]
            self.inversions[key] = ddim_invert(self.pipe.unet, self.scheduler, latents, empty, self.num_inference_steps)
            while len(self.inversions) > INVERSIONS_KEPT:
                self.inversions.popitem(last=False)
        return self.inversions[key]

    def text_embeds(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(unconditional embeddings of "", conditional embeddings), each [len(prompts), L, D]."""
        cond, uncond = self.pipe.encode_prompt(prompts, self.runtime.device, 1, True, negative_prompt=None)
        return uncond, cond

    @torch.no_grad()
    def sample(
        self,
        start: torch.Tensor,
        prompts: list[str],
        inversion: list[torch.Tensor] | None = None,
        trajectory: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Denoise [source, targets...] from `start` [1, 4, h, w] with mutual self-attention.

        prompts: [source prompt, target prompts...]. inversion: latents to reset the source branch to
        (when the method resets). trajectory: if given, receives the batch latents at the start of
        every step and after the last one. Returns the final latents [1 + k, 4, h, w].
        """
        unet, scheduler = self.pipe.unet, self.scheduler
        guided = self.guidance_scale > 1.0
        uncond, cond = self.text_embeds(prompts)
        embeds = torch.cat([uncond, cond]) if guided else cond  # [halves * (1 + k), L, D]
        scheduler.set_timesteps(self.num_inference_steps, device=self.runtime.device)
        latents = start.expand(len(prompts), -1, -1, -1).clone() * scheduler.init_noise_sigma
        control = MutualAttentionControl(start_step=self.start_step, halves=2 if guided else 1)
        with mutual_self_attention(unet, control, self.start_layer):
            for step, t in enumerate(scheduler.timesteps):
                if self.reset_source_to_inversion and inversion is not None:
                    latents[0] = inversion[-1 - step][0]
                if trajectory is not None:
                    trajectory.append(latents.clone())
                control.step = step  # the sampling loop, not an attention-call counter, says which step this is
                model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if guided else latents, t)
                noise = unet(model_input, t, encoder_hidden_states=embeds).sample
                if guided:
                    noise_uncond, noise_cond = noise.chunk(2)
                    noise = noise_uncond + self.guidance_scale * (noise_cond - noise_uncond)
                latents = scheduler.step(noise, t, latents).prev_sample
        if trajectory is not None:
            trajectory.append(latents.clone())
        return latents

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        images = self.pipe.vae.decode(latents / self.pipe.vae.config.scaling_factor).sample  # [B, 3, H, W]
        return self.pipe.image_processor.postprocess(images, output_type="pil")

    # ---- Method ---------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        results: list[GenerationResult] = []
        for group in same_source_runs(requests):
            results.extend(self.generate_one_subject(group))
        return results

    def generate_one_subject(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        source = requests[0].item.source
        height, width = requests[0].height, requests[0].width
        if any((r.height, r.width) != (height, width) for r in requests):
            raise ValueError("MasaCtrl batches one subject at one size")
        inversion = self.invert(source, height, width)
        source_prompt = self.caption_for(source)
        latents = self.sample(inversion[-1], [source_prompt, *(r.prompt for r in requests)], inversion)
        images = self.decode(latents)  # [source, target_1, ..., target_k]
        branch = "source (paper bug)" if self.paper_bug_save_source_branch else "target"
        info = {
            "source_prompt": source_prompt,
            "output_branch": branch,
            "initial_noise": "ddim_inversion",  # the item's seed does not enter
            "controlled_layers": len(self.layers),
        }
        return [
            GenerationResult(
                image=images[0] if self.paper_bug_save_source_branch else images[1 + index], info=dict(info)
            )
            for index in range(len(requests))
        ]
