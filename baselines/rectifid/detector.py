"""Where the subject is: a box from a text query (the reference photo) or from an image query (the
generated image, queried with the reference crop). Never differentiated.

`SubjectDetector` is the seam: RectifID needs only these two calls, so tests pass fakes and the real
one is OWL-ViT (`google/owlvit-base-patch32`) through transformers. A detector answers None when it
finds nothing usable; the caller decides what that means (the whole image, flagged in the manifest).
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from monkey.errors import ConfigError, ModelLoadError
from monkey.hub_needs import HubNeed, transformers_model
from monkey.models.profiles import is_local, offline_hint


@dataclass(frozen=True)
class Box:
    """Pixel box [left, right) x [top, bottom) and its detection score."""

    left: int
    top: int
    right: int
    bottom: int
    score: float = 1.0

    @classmethod
    def whole(cls, width: int, height: int) -> "Box":
        return cls(0, 0, width, height, score=float("nan"))

    def as_list(self) -> list[int]:
        return [self.left, self.top, self.right, self.bottom]


def pixel_box(corners: list[float], width: int, height: int, score: float) -> Box | None:
    """Round a float [x0, y0, x1, y1] box into the image; None when nothing of it is left."""
    left, right = (min(max(round(v), 0), width) for v in (corners[0], corners[2]))
    top, bottom = (min(max(round(v), 0), height) for v in (corners[1], corners[3]))
    if right - left < 1 or bottom - top < 1:
        return None
    return Box(left, top, right, bottom, score)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [0, 1] -> [H, W, 3] uint8, truncated as RectifID's `(image * 255).int()` query."""
    return (image.detach().float().clamp(0, 1) * 255).floor().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


class SubjectDetector(ABC):
    @abstractmethod
    def find_by_text(self, image: Image.Image, text: str) -> Box | None:
        """The best box for `text` in a photo."""

    @abstractmethod
    def find_like(self, image: torch.Tensor, query: Image.Image) -> Box | None:
        """The best box in `image` ([3, H, W] in [0, 1]) that looks like `query`."""


class OwlVitDetector(SubjectDetector):
    """OWL-ViT: the top-scoring box (scores are sigmoids of the class logits), kept when its score
    exceeds the threshold, as RectifID's code keeps it through transformers' post-processing
    (`post_process_object_detection`: `scores > threshold`, default 0.1, for the text query on the
    reference photo; `post_process_image_guided_detection`, default 0.0, for the image query on the
    generated image, where the top box always survives). NMS never removes the top box, so it is skipped."""

    @staticmethod
    def hub_needs(pretrained: str = "google/owlvit-base-patch32", tiny: bool = False, **_: Any) -> list[HubNeed]:
        """What __init__ reads from the hub: OWL-ViT and its processor from one folder (none when tiny)."""
        if tiny or is_local(pretrained):
            return []
        return [transformers_model(pretrained, "OWL-ViT detector", processor=True)]

    def __init__(
        self,
        pretrained: str = "google/owlvit-base-patch32",
        text_threshold: float = 0.1,
        image_threshold: float = 0.0,
        tiny: bool = False,
        device: str | torch.device = "cpu",
    ):
        from transformers import OwlViTForObjectDetection, OwlViTProcessor

        if tiny:
            from monkey.models.tiny_rectifid import materialize_owlvit

            pretrained = str(materialize_owlvit())
        for key, value in (("text_threshold", text_threshold), ("image_threshold", image_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"method.detector.{key}={value} must lie in [0, 1]")
        self.text_threshold = text_threshold
        self.image_threshold = image_threshold
        self.device = torch.device(device)
        try:
            self.processor = OwlViTProcessor.from_pretrained(pretrained)
            self.model = OwlViTForObjectDetection.from_pretrained(pretrained).to(self.device).eval()
        except (OSError, ValueError) as err:
            raise ModelLoadError(
                f"cannot load method.detector.pretrained={pretrained!r} (OWL-ViT) {offline_hint()}. Cause: {err}"
            ) from err
        self.model.requires_grad_(False)

    def inputs(self, **kwargs) -> dict[str, torch.Tensor]:
        """The processor's tensors on the model's device, pixels in the model's dtype."""
        dtype = next(self.model.parameters()).dtype
        batch = self.processor(return_tensors="pt", **kwargs)
        return {k: v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device) for k, v in batch.items()}

    @staticmethod
    def best(logits: torch.Tensor, boxes: torch.Tensor, width: int, height: int, threshold: float) -> Box | None:
        """logits [1, N, Q], boxes [1, N, 4] (cx, cy, w, h relative to the resized image)."""
        scores = logits[0].max(dim=-1).values.sigmoid()  # [N]
        index = int(scores.argmax())
        score = float(scores[index])
        if not score > threshold:  # transformers keeps `scores > threshold`
            return None
        cx, cy, w, h = boxes[0, index].tolist()
        corners = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
        return pixel_box(corners, width, height, score)

    @torch.no_grad()
    def find_by_text(self, image: Image.Image, text: str) -> Box | None:
        inputs = self.inputs(text=[[text]], images=image)
        outputs = self.model(**inputs)
        return self.best(outputs.logits.float(), outputs.pred_boxes.float(), *image.size, self.text_threshold)

    @torch.no_grad()
    def find_like(self, image: torch.Tensor, query: Image.Image) -> Box | None:
        pixels = to_uint8(image)
        inputs = self.inputs(images=pixels, query_images=query)
        outputs = self.model.image_guided_detection(**inputs)
        boxes = outputs.target_pred_boxes.float()
        return self.best(outputs.logits.float(), boxes, pixels.shape[1], pixels.shape[0], self.image_threshold)
