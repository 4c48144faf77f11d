"""RectifID's identity loss in object mode.

    loss = cos_weight * (1 - cos(E(crop), E_ref(ref crop))) + pixel_l1_weight * mean|crop - ref crop|

crop: the generated image inside the detected box (no gradient through the box itself), resized to
`size` x `size` with `resize` (nearest by default, as RectifID's `F.interpolate(crop, (224, 224))`;
gradients reach the pixels it samples); the reference crop's pixels for the L1 term are resized the
same way. E, E_ref: a CropEmbedder's `embed` and `embed_reference`. A box that is not found becomes
the whole image, and the result says so (`detected`).
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monkey.baselines.rectifid.detector import Box, SubjectDetector
from monkey.baselines.rectifid.embedder import CropEmbedder
from PIL import Image

from monkey.errors import ConfigError

RESIZE_MODES = ("nearest", "bilinear")


def crop_resized(image: torch.Tensor, box: Box, size: int, mode: str = "nearest") -> torch.Tensor:
    """[B, 3, H, W] -> [B, 3, size, size], the box's pixels resized (differentiable in the pixels)."""
    inside = image[:, :, box.top : box.bottom, box.left : box.right]
    if mode == "nearest":
        return F.interpolate(inside, size=(size, size), mode="nearest")
    return F.interpolate(inside, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


@dataclass
class Reference:
    """The subject's reference crop: pixels [1, 3, S, S] in [0, 1], embedding [1, D], the crop as a
    PIL image (the detector's query) and whether the text query found a box."""

    pixels: torch.Tensor
    embedding: torch.Tensor
    query: Image.Image
    detected: bool
    box: Box


@dataclass
class LossResult:
    total: torch.Tensor  # scalar, differentiable
    identity: float
    pixel: float
    detected: bool
    box: Box


class IdentityLoss:
    def __init__(
        self,
        detector: SubjectDetector,
        embedder: CropEmbedder,
        cos_weight: float = 100.0,
        pixel_l1_weight: float = 1000.0,
        size: int = 224,
        resize: str = "nearest",
    ):
        if resize not in RESIZE_MODES:
            raise ConfigError(f"method.crop_resize={resize!r}; allowed: {list(RESIZE_MODES)}")
        self.resize = resize
        self.detector = detector
        self.embedder = embedder
        self.cos_weight = cos_weight
        self.pixel_l1_weight = pixel_l1_weight
        self.size = size

    @torch.no_grad()
    def reference(self, photo: Image.Image, text: str, device: torch.device) -> Reference:
        """Crop the subject out of its photo with a text query (the whole photo when nothing is found)."""
        box = self.detector.find_by_text(photo, text)
        detected = box is not None
        box = box or Box.whole(*photo.size)
        crop = photo.crop((box.left, box.top, box.right, box.bottom))
        pixels = (
            torch.from_numpy(np.array(crop.convert("RGB"))).permute(2, 0, 1)[None].float().div(255).to(device)
        )  # [1, 3, h, w]
        pixels = crop_resized(pixels, Box.whole(*crop.size), self.size, self.resize)  # [1, 3, S, S]
        return Reference(pixels, self.embedder.embed_reference(crop, pixels).float(), crop, detected, box)

    def __call__(self, image: torch.Tensor, reference: Reference) -> LossResult:
        """image: [1, 3, H, W] in [0, 1], differentiable."""
        box = self.detector.find_like(image[0], reference.query)
        detected = box is not None
        box = box or Box.whole(image.shape[-1], image.shape[-2])
        crop = crop_resized(image, box, self.size, self.resize)  # [1, 3, S, S]
        embedding = self.embedder.embed(crop).float()
        identity = (1 - F.cosine_similarity(embedding, reference.embedding, dim=-1).mean()) * self.cos_weight
        pixel = F.l1_loss(crop.float(), reference.pixels.to(crop.device)) * self.pixel_l1_weight
        total = identity + pixel
        return LossResult(total, float(identity.detach()), float(pixel.detach()), detected, box)
