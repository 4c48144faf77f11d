"""Identity embeddings of subject crops, differentiable with respect to the pixels.

`CropEmbedder` is the seam (tests pass embedders whose optimum is known); the real one is DINOv2
(`facebook/dinov2-base`, as RectifID's object mode) through transformers, CLS token of the last layer.

RectifID's code prepares the two sides differently, and so does this one by default: the generated
crop ([B, 3, S, S] in [0, 1], already resized by the loss) is normalised with CLIP's mean and std
(`crop_normalization: clip`; `imagenet` is DINOv2's own), while the reference crop goes through
DINOv2's image processor (`reference_preprocessing: processor`: shortest side 256 bicubic, centre
crop 224, ImageNet statistics; `crop`: exactly as the generated crop).
"""

from abc import ABC, abstractmethod
from typing import Any

import torch
from PIL import Image

from monkey.errors import ConfigError, ModelLoadError
from monkey.hub_needs import HubNeed, transformers_model
from monkey.models.profiles import is_local, offline_hint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CROP_NORMALIZATIONS = {"clip": (CLIP_MEAN, CLIP_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}
REFERENCE_PREPROCESSING = ("processor", "crop")


class CropEmbedder(ABC):
    @abstractmethod
    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] in [0, 1] -> [B, D], differentiable."""

    def embed_reference(self, photo_crop: Image.Image, pixels: torch.Tensor) -> torch.Tensor:
        """The reference's embedding [1, D] from its cropped photo or its resized pixels [1, 3, S, S];
        by default as a generated crop."""
        return self.embed(pixels)


class Dinov2Embedder(CropEmbedder):
    @staticmethod
    def hub_needs(pretrained: str = "facebook/dinov2-base", tiny: bool = False, **_: Any) -> list[HubNeed]:
        """What __init__ reads from the hub: the DINOv2 model folder (none when tiny)."""
        if tiny or is_local(pretrained):
            return []
        return [transformers_model(pretrained, "DINOv2 crop embedder")]

    def __init__(
        self,
        pretrained: str = "facebook/dinov2-base",
        tiny: bool = False,
        crop_normalization: str = "clip",
        reference_preprocessing: str = "processor",
        device: str | torch.device = "cpu",
    ):
        from transformers import AutoImageProcessor, AutoModel

        if crop_normalization not in CROP_NORMALIZATIONS:
            raise ConfigError(
                f"method.embedder.crop_normalization={crop_normalization!r}; allowed: {list(CROP_NORMALIZATIONS)}"
            )
        if reference_preprocessing not in REFERENCE_PREPROCESSING:
            raise ConfigError(
                f"method.embedder.reference_preprocessing={reference_preprocessing!r}; "
                f"allowed: {list(REFERENCE_PREPROCESSING)}"
            )
        if tiny:
            from monkey.models.tiny_rectifid import materialize_dinov2

            pretrained = str(materialize_dinov2())
        self.device = torch.device(device)
        self.reference_preprocessing = reference_preprocessing
        try:
            self.model = AutoModel.from_pretrained(pretrained).to(self.device).eval()
            self.processor = AutoImageProcessor.from_pretrained(pretrained)  # the tiny twin writes the hub's
        except (OSError, ValueError) as err:
            raise ModelLoadError(
                f"cannot load method.embedder.pretrained={pretrained!r} (DINOv2) {offline_hint()}. Cause: {err}"
            ) from err
        self.model.requires_grad_(False)
        mean, std = CROP_NORMALIZATIONS[crop_normalization]
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    def cls(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [B, 3, h, w] -> the last layer's CLS token [B, D]."""
        dtype = next(self.model.parameters()).dtype
        return self.model(pixel_values=pixels.to(self.device, dtype)).last_hidden_state[:, 0]

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        return self.cls((crops.to(self.device) - self.mean) / self.std)

    def embed_reference(self, photo_crop: Image.Image, pixels: torch.Tensor) -> torch.Tensor:
        if self.reference_preprocessing == "crop":
            return self.embed(pixels)
        processed = self.processor(images=photo_crop.convert("RGB"), return_tensors="pt")["pixel_values"]
        return self.cls(processed)  # [1, D]
