"""TF-TI2I (Hsiao et al., 2025) as a harness method, native on Stable Diffusion 3.

Per batch: one main branch per request (its prompt, its seed) and one reference branch per request
(the subject image, VAE-encoded once per subject and size, forward-noised every step with noise
seeded by the item). In every joint-attention block the conditional main branch also reads its
reference's text tokens (processor.py). The image is the main branch. `sharing: false` leaves the
reference out: plain SD3 from the same seed, the stock pipeline's image.
"""

from collections import OrderedDict
from collections.abc import Sequence

import torch
from monkey.baselines.tf_ti2i.sampling import References, SamplingSettings, decode, encode_reference, sample_tf_ti2i
from PIL import Image, ImageOps

from monkey.datasets.base import Source
from monkey.errors import ConfigError
from monkey.hashing import stable_hash
from monkey.methods.base import GenerationRequest, GenerationResult, Method
from monkey.models.profiles import Runtime, load_runtime_pipeline

REFERENCES_KEPT = 8  # encoded subject images kept in memory (plan order groups a subject's items)
REFERENCE_FIELDS = ("prompt", "subject_word", "class_name")


def reference_noise_seed(seed: int) -> int:
    """The item's seed for the reference branch's forward noise: derived, so it never repeats the
    main branch's initial noise."""
    return int(stable_hash(["tf_ti2i-reference-noise", seed]), 16) % 2**63


class TFTI2IMethod(Method):
    def __init__(
        self,
        name: str,
        runtime: Runtime,
        num_inference_steps: int = 28,
        guidance_scale: float = 3.5,
        max_sequence_length: int = 256,
        sharing: bool = True,
        reference_prompt: str = "{prompt}",
        winner_takes_all: bool = False,
        reference_masking: bool = False,
        rcm_threshold: float = 0.5,
    ):
        super().__init__(name, runtime)
        if num_inference_steps < 1 or max_sequence_length < 1:
            raise ConfigError(
                f"method {name}: num_inference_steps={num_inference_steps} and "
                f"max_sequence_length={max_sequence_length} must be >= 1"
            )
        if not 0.0 <= rcm_threshold <= 1.0:
            raise ConfigError(f"method {name}: rcm_threshold={rcm_threshold} must be in [0, 1]")
        try:
            reference_prompt.format(**dict.fromkeys(REFERENCE_FIELDS, ""))
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(
                f"method {name}: reference_prompt={reference_prompt!r} may use only the fields {list(REFERENCE_FIELDS)}"
            ) from err
        self.settings = SamplingSettings(
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            max_sequence_length=max_sequence_length,
            sharing=sharing,
            winner_takes_all=winner_takes_all,
            reference_masking=reference_masking,
            rcm_threshold=rcm_threshold,
        )
        self.reference_prompt = reference_prompt
        self.pipe = load_runtime_pipeline(runtime)  # runtime.vae_dtype too, as the config hash records it
        if not hasattr(self.pipe, "transformer") or not hasattr(self.pipe.transformer, "transformer_blocks"):
            raise ConfigError(
                f"method {name}: model '{runtime.model.name}' ({runtime.model.pipeline_class}) is not a Stable "
                "Diffusion 3 pipeline; TF-TI2I needs joint-attention blocks (model: tiny_sd3 or sd35_large)"
            )
        self.encoded: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def prompt_of_reference(self, request: GenerationRequest) -> str:
        source = request.item.source
        text = self.reference_prompt.format(
            prompt=request.prompt, subject_word=source.subject_word, class_name=source.class_name
        )
        return " ".join(text.split())

    def reference_latent(self, source: Source, height: int, width: int) -> torch.Tensor:
        """The subject image centre-cropped to the output's aspect, resized, VAE-encoded: [1, C, h, w]."""
        key = (source.source_id, height, width)
        if key not in self.encoded:
            image = ImageOps.fit(source.load_image(), (width, height), Image.Resampling.LANCZOS)
            pixels = self.pipe.image_processor.preprocess(image, height=height, width=width)  # [1, 3, H, W]
            self.encoded[key] = encode_reference(self.pipe, pixels, self.runtime.device)
            while len(self.encoded) > REFERENCES_KEPT:
                self.encoded.popitem(last=False)
        return self.encoded[key]

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        height, width = requests[0].height, requests[0].width
        if any((r.height, r.width) != (height, width) for r in requests):
            raise ValueError("TF-TI2I batches requests of one size")
        references = None
        if self.settings.sharing:
            references = References(
                latents=torch.cat([self.reference_latent(r.item.source, height, width) for r in requests]),
                prompts=[self.prompt_of_reference(r) for r in requests],
                generators=[torch.Generator("cpu").manual_seed(reference_noise_seed(r.seed)) for r in requests],
            )
        latents = sample_tf_ti2i(
            self.pipe,
            [r.prompt for r in requests],
            [torch.Generator("cpu").manual_seed(r.seed) for r in requests],
            height,
            width,
            self.settings,
            references,
            self.runtime.device,
        )
        images = decode(self.pipe, latents)
        text_encoder_3 = "dropped" if getattr(self.pipe, "text_encoder_3", None) is None else "t5"
        results = []
        for index, request in enumerate(requests):
            info = {"sharing": self.settings.sharing, "text_encoder_3": text_encoder_3, "output_branch": "main"}
            if references is not None:
                info["reference_prompt"] = references.prompts[index]
                info["reference_noise_seed"] = reference_noise_seed(request.seed)
            results.append(GenerationResult(image=images[index], info=info))
        return results
