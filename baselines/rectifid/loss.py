"""RectifID's identity loss in object mode.

    loss = cos_weight * (1 - cos(E(crop), E_ref(ref crop))) + pixel_l1_weight * mean|crop - ref crop|

crop: the generated image inside the detected box (no gradient through the box itself), resized to
`size` x `size` with `resize` (nearest by default, as RectifID's `F.interpolate(crop, (224, 224))`;
gradients reach the pixels it samples); the reference crop's pixels for the L1 term are resized the
same way. E, E_ref: a CropEmbedder's `embed` and `embed_reference`. A box that is not found becomes
the whole image, and the result says so (`detected`).
"""

from collections.abc import Sequence
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
    total: torch.Tensor  # scalar, differentiable: one item's loss
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
        return self.batch(image, [reference])[0]

    def batch(self, images: torch.Tensor, references: Sequence[Reference]) -> list[LossResult]:
        """images: [B, 3, H, W] in [0, 1], differentiable; item k against references[k]. Each item's loss
        is its own: its own box (one detector call per item), its own crop, its embedding's cosine with
        its reference alone and the L1 mean over its crop alone; only the embedder runs on the batch."""
        if len(references) != images.shape[0]:
            raise ValueError(f"{len(references)} references for {images.shape[0]} images")
        width, height = images.shape[-1], images.shape[-2]
        boxes = [self.detector.find_like(image, ref.query) for image, ref in zip(images, references, strict=True)]
        found = [box or Box.whole(width, height) for box in boxes]
        crops = torch.cat(
            [crop_resized(images[k : k + 1], box, self.size, self.resize) for k, box in enumerate(found)]
        )  # [B, 3, S, S]
        embeddings = self.embedder.embed(crops).float()  # [B, D]
        targets = torch.cat([ref.embedding for ref in references]).to(embeddings.device)  # [B, D]
        identity = (1 - F.cosine_similarity(embeddings, targets, dim=-1)) * self.cos_weight  # [B]
        target_pixels = torch.cat([ref.pixels.to(crops.device) for ref in references])  # [B, 3, S, S]
        pixel = (crops.float() - target_pixels).abs().flatten(1).mean(dim=1) * self.pixel_l1_weight  # [B]
        total = identity + pixel
        return [
            LossResult(total[k], float(identity[k].detach()), float(pixel[k].detach()), box is not None, found[k])
            for k, box in enumerate(boxes)
        ]
