"""Identity embeddings of subject crops, differentiable with respect to the pixels.

`CropEmbedder` is the seam (tests pass embedders whose optimum is known); the real one is DINOv2
(`facebook/dinov2-base`, as RectifID's object mode) through transformers, CLS token of the last layer.
Crops arrive as [B, 3, S, S] in [0, 1] and get ImageNet's mean and std, DINOv2's normalisation (the
same for the reference and the generated crop; RectifID's code used CLIP's statistics for the
generated one).
"""

from abc import ABC, abstractmethod
from typing import Any

import torch

from monkey.errors import ModelLoadError
from monkey.hub_needs import HubNeed, transformers_model
from monkey.models.profiles import is_local, offline_hint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CropEmbedder(ABC):
    @abstractmethod
    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] in [0, 1] -> [B, D], differentiable."""


class Dinov2Embedder(CropEmbedder):
    @staticmethod
    def hub_needs(pretrained: str = "facebook/dinov2-base", tiny: bool = False, **_: Any) -> list[HubNeed]:
        """What __init__ reads from the hub: the DINOv2 model folder (none when tiny)."""
        if tiny or is_local(pretrained):
            return []
        return [transformers_model(pretrained, "DINOv2 crop embedder")]

    def __init__(
        self, pretrained: str = "facebook/dinov2-base", tiny: bool = False, device: str | torch.device = "cpu"
    ):
        from transformers import AutoModel

        if tiny:
            from monkey.models.tiny_rectifid import materialize_dinov2

            pretrained = str(materialize_dinov2())
        self.device = torch.device(device)
        try:
            self.model = AutoModel.from_pretrained(pretrained).to(self.device).eval()
        except (OSError, ValueError) as err:
            raise ModelLoadError(
                f"cannot load method.embedder.pretrained={pretrained!r} (DINOv2) {offline_hint()}. Cause: {err}"
            ) from err
        self.model.requires_grad_(False)
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        pixels = ((crops.to(self.device) - self.mean) / self.std).to(dtype)
        return self.model(pixel_values=pixels).last_hidden_state[:, 0]  # [B, D] CLS
