"""SAM's automatic masks of an image, for the `refined` mask source (monkey.adapter.refine).

The reference code ran segment-anything's `SamAutomaticMaskGenerator` with its defaults on SAM ViT-H
(custom_sam_detector.py:42-47 @3dbb7ce, `ybelkada/segment-anything` sam_vit_h_4b8939.pth). This is
transformers' port of the same generator (`pipeline("mask-generation")`) on `facebook/sam-vit-huge`,
the same weights in the transformers layout, loaded with `from_pretrained`, with the generator's
defaults: a 32 x 32 grid of point prompts over the whole image (one crop layer), masks kept where the
predicted IoU >= 0.88 and the stability score >= 0.95, then non-maximum suppression at box IoU 0.7.
`tiny=true` loads the random SAM twin of monkey.models.tiny_segmenters (64 px) instead.
"""

from typing import Any

import numpy as np
import torch
from PIL import Image

from monkey.errors import ConfigError, ModelLoadError
from monkey.hub_needs import HubNeed, transformers_model
from monkey.models.profiles import is_local, load_cause, offline_hint


class SamAutoMasker:
    @staticmethod
    def hub_needs(model: str = "facebook/sam-vit-huge", tiny: bool = False, **_: Any) -> list[HubNeed]:
        """What __init__ reads from the hub (monkey-prefetch): SAM with its processor (none when tiny)."""
        if tiny or is_local(model):
            return []
        return [transformers_model(model, "SAM of method.refine", processor=True)]

    def __init__(
        self,
        model: str = "facebook/sam-vit-huge",
        points_per_side: int = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        nms_thresh: float = 0.7,
        device: str = "cpu",
        tiny: bool = False,
    ):
        from transformers import pipeline

        if tiny:
            from monkey.models.tiny_segmenters import materialize_tiny_segmenter

            model = str(materialize_tiny_segmenter("sam"))
        for key, value in (("points_per_side", points_per_side), ("points_per_batch", points_per_batch)):
            if int(value) < 1:
                raise ConfigError(f"method.refine.auto_masks.{key}={value!r} must be a positive integer")
        for key, value in (
            ("pred_iou_thresh", pred_iou_thresh),
            ("stability_score_thresh", stability_score_thresh),
            ("nms_thresh", nms_thresh),
        ):
            if not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"method.refine.auto_masks.{key}={value!r} must lie in [0, 1]")
        try:
            self.generator = pipeline("mask-generation", model=model, device=torch.device(device))
        except (OSError, ValueError) as err:
            raise ModelLoadError(
                f"cannot load method.refine.auto_masks.model={model!r} {offline_hint(model)}. Cause: {load_cause(err)}"
            ) from err
        self.options: dict[str, Any] = {
            "points_per_crop": int(points_per_side),
            "points_per_batch": int(points_per_batch),
            "pred_iou_thresh": float(pred_iou_thresh),
            "stability_score_thresh": float(stability_score_thresh),
            "crops_nms_thresh": float(nms_thresh),
        }

    @torch.no_grad()
    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        """Each automatic mask of `image` as an [H, W] bool tensor at the image's size."""
        masks = self.generator(image, **self.options)["masks"]
        out = [torch.as_tensor(np.asarray(mask)).bool().cpu() for mask in masks]
        for mask in out:
            if tuple(mask.shape) != (image.height, image.width):
                raise ValueError(f"SAM returned a {tuple(mask.shape)} mask for a {image.width}x{image.height} image")
        return out
