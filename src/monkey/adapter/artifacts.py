"""What a researcher looks at per item: the mask at image and latent size, the raw combined map,
and the mask laid over the generated image."""

import numpy as np
import torch
from PIL import Image

from monkey.adapter.masks import ItemMask, resize

OVERLAY_COLOUR = np.array([255.0, 40.0, 40.0])
OVERLAY_ALPHA = 0.45


def mask_image(mask: torch.Tensor) -> Image.Image:
    """[H, W] in [0, 1] -> greyscale PNG (white = image tokens act)."""
    return Image.fromarray((mask.clamp(0, 1).numpy() * 255).round().astype(np.uint8))


def overlay(image: Image.Image, mask: torch.Tensor) -> Image.Image:
    """Tint the masked region of the image red; [H, W] mask at the image's size."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    weight = OVERLAY_ALPHA * mask.clamp(0, 1).numpy()[..., None]
    blended = pixels * (1 - weight) + OVERLAY_COLOUR * weight
    return Image.fromarray(blended.round().astype(np.uint8))


def item_artifacts(
    image: Image.Image,
    item: ItemMask,
    image_mask: torch.Tensor,  # [H, W]
    latent_hw: tuple[int, int],
    soft: bool,
    pass1_image: Image.Image | None = None,
) -> dict[str, Image.Image | np.ndarray]:
    artifacts: dict[str, Image.Image | np.ndarray] = {
        "mask": mask_image(image_mask),
        "mask_latent": resize(item.mask, latent_hw, soft=soft).numpy().astype(np.float32),
        "attention": item.attention.numpy().astype(np.float32),
        "overlay": overlay(image, image_mask),
    }
    if pass1_image is not None:
        artifacts["pass1"] = pass1_image
    return artifacts
