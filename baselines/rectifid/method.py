"""RectifID (Sun et al., NeurIPS 2024) in object mode, as a harness Method.

Per item: the subject's reference crop (a text query with its class word, memoised per subject), the
item's fixed initial noise (drawn from its seed as every method draws it; preset=paper: seed 123), then
anchored classifier guidance (guidance.py) of the 4-step PeRFlow sampler by the identity loss
(loss.py), and the image of one more pass without gradients. Each item is its own optimisation; the
items of one call (generation.batch_size, or method.batch_size) run through the sampler, decoder and
embedder as one batch, their losses summed so each item's gradient is its own (guidance.py), each with
its own seed, prompt and subject reference, so an item's image never depends on its neighbours beyond
the float rounding of batched kernels (docs/methods/rectifid.md#batches states the bound).

Rows record the final image's loss, the iterations run, whether the subject was detected (in the
reference photo and in the final image) and how many guided passes fell back to the whole image.
"""

from collections.abc import Sequence
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from hydra.utils import instantiate
from monkey.baselines.rectifid.detector import SubjectDetector
from monkey.baselines.rectifid.embedder import CropEmbedder
from monkey.baselines.rectifid.guidance import AnchoredGuidance, GuidanceSettings, PeRFlowSampler, window_factors
from monkey.baselines.rectifid.loss import IdentityLoss, Reference
from monkey.baselines.rectifid.scheduler import PeRFlowScheduler

from monkey.datasets.base import Source
from monkey.errors import ConfigError, ModelLoadError
from monkey.methods.base import GenerationRequest, GenerationResult, Method
from monkey.models.profiles import Runtime, load_runtime_pipeline

NO_DETECTION = ("whole_image", "error")


def build_part(config: dict[str, Any], kind: type, key: str, device: torch.device) -> Any:
    """Instantiate method.<key> (a `_target_` mapping) and check it is a `kind`."""
    if not isinstance(config, dict) or "_target_" not in config:
        raise ConfigError(f"method.{key} must be a mapping with a _target_ {kind.__name__} class, got {config!r}")
    try:
        part = instantiate(config, device=device)
    except Exception as err:  # hydra wraps the constructor's error; keep ours when it is one
        cause = err.__cause__ if isinstance(err.__cause__, ConfigError | ModelLoadError) else None
        if cause is not None:
            raise cause from err
        raise ConfigError(f"method.{key}={config!r} cannot be built: {err}") from err
    if not isinstance(part, kind):
        raise ConfigError(f"method.{key}._target_={config['_target_']!r} is not a {kind.__name__}")
    return part


class RectifIDMethod(Method):
    def __init__(
        self,
        name: str,
        runtime: Runtime,
        iterations: int = 50,
        lr: float = 1.0,
        grad_clip: float = 1.0,
        window_factor: float | str = 0.95796674,
        num_inference_steps: int = 4,
        guidance_scale: float = 3.0,
        cos_weight: float = 100.0,
        pixel_l1_weight: float = 1000.0,
        crop_size: int = 224,
        crop_resize: str = "nearest",
        reference_query: str = "{class_name}",
        no_detection: str = "whole_image",
        gradient_checkpointing: bool = False,
        autocast: bool = True,
        detector: dict[str, Any] | None = None,
        embedder: dict[str, Any] | None = None,
    ):
        super().__init__(name, runtime)
        if iterations < 0 or lr <= 0 or grad_clip <= 0 or crop_size < 1:
            raise ConfigError(
                f"method {name}: iterations={iterations} must be >= 0, lr={lr} and grad_clip={grad_clip} > 0, "
                f"crop_size={crop_size} >= 1"
            )
        if no_detection not in NO_DETECTION:
            raise ConfigError(f"method {name}: no_detection={no_detection!r}; allowed: {list(NO_DETECTION)}")
        if not (window_factor == "exact" or isinstance(window_factor, int | float)):
            raise ConfigError(f"method {name}: window_factor={window_factor!r}; allowed: a number or 'exact'")
        self.settings = GuidanceSettings(
            iterations=iterations,
            lr=lr,
            grad_clip=grad_clip,
            window_factor=window_factor,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            gradient_checkpointing=gradient_checkpointing,
            autocast=autocast,
        )
        self.reference_query = reference_query
        self.no_detection = no_detection
        self.pipe = load_runtime_pipeline(runtime)  # runtime.vae_dtype too, as the config hash records it
        if not isinstance(self.pipe.scheduler, PeRFlowScheduler):
            raise ConfigError(
                f"method {name} needs the PeRFlow scheduler (model profile perflow_sd15 or tiny_perflow); "
                f"model '{runtime.model.name}' has {type(self.pipe.scheduler).__name__}"
            )
        for module in (self.pipe.unet, self.pipe.vae, self.pipe.text_encoder):
            module.requires_grad_(False)  # gradients go to the latents only
        self.sampler = PeRFlowSampler(self.pipe, num_inference_steps, guidance_scale)
        window_factors(window_factor, self.pipe.scheduler, len(self.sampler.timesteps(runtime.device)))  # check now
        self.loss = IdentityLoss(
            build_part(
                detector or {"_target_": "monkey.baselines.rectifid.detector.OwlVitDetector"},
                SubjectDetector,
                "detector",
                runtime.device,
            ),
            build_part(
                embedder or {"_target_": "monkey.baselines.rectifid.embedder.Dinov2Embedder"},
                CropEmbedder,
                "embedder",
                runtime.device,
            ),
            cos_weight=cos_weight,
            pixel_l1_weight=pixel_l1_weight,
            size=crop_size,
            resize=crop_resize,
        )
        self.references: dict[str, Reference] = {}

    def reference_for(self, source: Source) -> Reference:
        if source.source_id not in self.references:
            text = self.reference_query.format(class_name=source.class_name, subject_word=source.subject_word)
            reference = self.loss.reference(source.load_image(), text, self.runtime.device)
            if not reference.detected and self.no_detection == "error":
                raise ConfigError(f"method {self.name}: no '{text}' box in the subject image {source.image_path}")
            self.references[source.source_id] = reference
        return self.references[source.source_id]

    def batch_references(self, requests: Sequence[GenerationRequest]) -> list[Reference]:
        """One reference per request; memoised for the subjects of this call only (plan order keeps a
        subject's items together, so a subject's reference is made once)."""
        wanted = {request.item.source.source_id for request in requests}
        self.references = {key: value for key, value in self.references.items() if key in wanted}
        return [self.reference_for(request.item.source) for request in requests]

    def initial_noise(self, request: GenerationRequest) -> torch.Tensor:
        """[1, 4, H/8, W/8] from the item's seed on the CPU generator, as the pipelines draw it."""
        scale = self.pipe.vae_scale_factor
        shape = (1, self.pipe.unet.config.in_channels, request.height // scale, request.width // scale)
        generator = torch.Generator("cpu").manual_seed(request.seed)
        noise = randn_tensor(shape, generator=generator, device=self.runtime.device, dtype=self.pipe.unet.dtype)
        return noise * self.pipe.scheduler.init_noise_sigma

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """All requests in one guided batch (they share one size, as a plan batch of one method does)."""
        if not requests:
            return []
        if len({(r.height, r.width) for r in requests}) > 1:
            raise ValueError("RectifID batches requests of one size")
        references = self.batch_references(requests)
        embeds = self.sampler.text_embeds([r.prompt for r in requests], self.runtime.device)  # [2B, L, D]
        noise = torch.cat([self.initial_noise(r) for r in requests])  # [B, 4, h, w]
        fallbacks = [0] * len(requests)

        def loss_fn(images: torch.Tensor):
            results = self.loss.batch(images, references)
            for index, result in enumerate(results):
                if not result.detected:
                    if self.no_detection == "error":
                        item = requests[index].item.item_id
                        raise ConfigError(f"method {self.name}: item {item}: no subject box found")
                    fallbacks[index] += 1
            return results

        guided = AnchoredGuidance(self.sampler, self.settings).run(noise, embeds, loss_fn)
        with torch.no_grad():
            images = self.sampler.decode(guided.latents)  # [B, 3, H, W] in [0, 1]
            finals = self.loss.batch(images.float(), references)
        pils = self.pipe.image_processor.postprocess(images * 2 - 1, output_type="pil")
        results = []
        for index, request in enumerate(requests):
            final, reference, history = finals[index], references[index], guided.histories[index]
            if not final.detected and self.no_detection == "error":
                raise ConfigError(f"method {self.name}: item {request.item.item_id}: no subject box in the final image")
            info = {
                "final_loss": float(final.total),
                "final_identity_loss": final.identity,
                "final_pixel_loss": final.pixel,
                "first_loss": history[0].loss if history else None,
                "iterations": len(history),
                "subject_detected": final.detected,
                "subject_box": final.box.as_list(),
                "no_detection_fallbacks": fallbacks[index],  # guided passes that used the whole image as the box
                "reference_detected": reference.detected,
                "reference_box": reference.box.as_list(),
                "noise_seed": request.seed,
            }
            if not final.detected or fallbacks[index] or not reference.detected:
                info["no_detection"] = self.no_detection
            results.append(GenerationResult(image=pils[index], info=info))
        return results
