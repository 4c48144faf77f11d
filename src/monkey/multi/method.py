"""`method=monkey_multi`: MONKEY with every subject of an item through the IP-Adapter, one mask each."""

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from monkey.adapter.artifacts import OVERLAY_ALPHA, item_artifacts, mask_image
from monkey.adapter.masks import resize
from monkey.adapter.method import MonkeyMethod
from monkey.adapter.sampler import SubjectBatch
from monkey.errors import ConfigError
from monkey.methods.base import GenerationRequest, GenerationResult, batch_image_size
from monkey.multi.plan import subjects_of
from monkey.multi.regions import ItemRegions
from monkey.multi.sampler import MultiSubjectSampler
from monkey.subject_embeds import SubjectEmbedder

# overlay colour per subject (red, blue, green, ...): subject i of the prompt
SUBJECT_COLOURS = np.array([[255, 40, 40], [40, 90, 255], [40, 200, 60], [240, 200, 20]], dtype=np.float32)


def subject_embeds(embedder: SubjectEmbedder, requests: Sequence[GenerationRequest]) -> torch.Tensor:
    """[n, K, D] (or [n, K, S, D]): every item's subjects in prompt order; K must be one per batch."""
    counts = {len(subjects_of(r.item)) for r in requests}
    if len(counts) != 1:
        raise ConfigError(f"one batch must hold items with one number of subjects, got {sorted(counts)}")
    return torch.stack([torch.cat([embedder.embed(s) for s in subjects_of(r.item)]) for r in requests])


def subject_overlay(image: Image.Image, masks: torch.Tensor) -> Image.Image:
    """The image with subject i's region [K, H, W] tinted in SUBJECT_COLOURS[i]."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    for index, mask in enumerate(masks):
        weight = OVERLAY_ALPHA * mask.clamp(0, 1).numpy()[..., None]
        pixels = pixels * (1 - weight) + SUBJECT_COLOURS[index % len(SUBJECT_COLOURS)] * weight
    return Image.fromarray(pixels.round().astype(np.uint8))


def multi_artifacts(
    image: Image.Image, regions: ItemRegions, image_masks: torch.Tensor, latent_hw: tuple[int, int], soft: bool
) -> dict[str, Image.Image | np.ndarray]:
    """Per subject i: `mask_<i>` (after the overlap rule, image size), `mask_latent_<i>`, `attention_<i>`
    (its normalised map); `overlay` tints every subject's region in its colour."""
    artifacts: dict[str, Image.Image | np.ndarray] = {"overlay": subject_overlay(image, image_masks)}
    for index, subject in enumerate(regions.subjects):
        artifacts[f"mask_{index}"] = mask_image(image_masks[index])
        latent = resize(regions.masks[index], latent_hw, soft=soft)
        artifacts[f"mask_latent_{index}"] = latent.numpy().astype(np.float32)
        artifacts[f"attention_{index}"] = subject.attention.numpy().astype(np.float32)
    return artifacts


class MonkeyMultiMethod(MonkeyMethod):
    """MONKEY's knobs (conf/method/monkey_multi.yaml); each item's subjects are its images."""

    multi_subject = True  # takes items of several subjects (monkey.multi.plan.check_method)

    sampler_class = MultiSubjectSampler

    def __init__(self, name: str, runtime, share=None, control=None, **knobs):
        # refused before anything loads: its calls would drop them, and a run never goes on without them
        source = knobs.get("mask_source", "attention")
        if source != "attention":  # one segmenter mask per subject is not built yet
            raise ConfigError(
                f"method.mask_source={source!r}: monkey_multi takes only 'attention' "
                "(each subject's mask from its own image tokens)"
            )
        if control is not None:
            raise ConfigError("method.control: monkey_multi takes no ControlNet yet (monkey, ip_adapter_* do)")
        super().__init__(name, runtime, share, **knobs)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        requests = list(requests)
        height, width = batch_image_size(requests, "MONKEY")
        batch = SubjectBatch(
            prompts=[r.prompt for r in requests],
            seeds=[r.seed for r in requests],
            image_embeds=subject_embeds(self.embedder, requests),  # [n, K, D] or [n, K, S, D]
            height=height,
            width=width,
            negative_embeds=self.embedder.negative_embeds(),
        )
        output = self.sampler(batch, labels=[r.item.item_id for r in requests])
        latent_hw = self.sampler.latent_hw(batch)
        pass1_images = output.pass1_images or None  # saved whenever made (save_pass1_image)
        results = []
        for index, image in enumerate(output.images):
            regions: ItemRegions = output.masks[index]  # type: ignore[assignment]
            if len(regions.subjects) == 1:  # MONKEY's own artifacts
                artifacts = item_artifacts(
                    image,
                    regions.subjects[0],
                    output.image_masks[index],
                    latent_hw,
                    self.settings.soft,
                    pass1_images[index] if pass1_images else None,
                )
            else:
                artifacts = multi_artifacts(image, regions, output.image_masks[index], latent_hw, self.settings.soft)
                if pass1_images:
                    artifacts["pass1"] = pass1_images[index]
            results.append(
                GenerationResult(image=image, artifacts=artifacts, info={**regions.info(), **output.sharing})
            )
        return results
