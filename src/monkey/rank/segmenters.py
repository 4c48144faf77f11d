"""Segmentation models behind the ranking's small `Segmenter` interface (monkey.rank.subject_masks).

`ClipSegSegmenter` prompts CLIPSeg (`CIDAS/clipseg-rd64-refined` by default, or any folder in its
layout) with the subject word, so DreamBooth's 30 subjects need no class list:
mask = sigmoid(logits) resized to the image (bilinear) > `threshold`. It is loaded with transformers'
`from_pretrained` like every model in the harness (`tiny=true`: the random twin of
`monkey.models.tiny_segmenters`); pass it as
`masks.segmenter={_target_:monkey.rank.segmenters.ClipSegSegmenter,model:CIDAS/clipseg-rd64-refined}`.
"""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from monkey.datasets.base import Source
from monkey.errors import ConfigError, ModelLoadError
from monkey.models.profiles import load_cause, offline_hint


class ClipSegSegmenter:
    def __init__(
        self,
        model: str = "CIDAS/clipseg-rd64-refined",
        prompt: str = "{word}",
        threshold: float = 0.4,
        device: str = "cpu",
        tiny: bool = False,
    ):
        """`tiny`: load the tiny random CLIPSeg written by code instead of `model` (offline tests, tiny profiles)."""
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        if tiny:
            from monkey.models.tiny_segmenters import materialize_tiny_segmenter

            model = str(materialize_tiny_segmenter("clipseg"))

        if "{word}" not in prompt:
            raise ConfigError(f"masks.segmenter.prompt={prompt!r} must contain {{word}} (the subject word)")
        if not 0.0 < float(threshold) < 1.0:
            raise ConfigError(f"masks.segmenter.threshold={threshold!r} must lie in (0, 1) (a probability)")
        try:
            self.processor = CLIPSegProcessor.from_pretrained(model)
            self.model = CLIPSegForImageSegmentation.from_pretrained(model).eval().to(device)
        except (OSError, ValueError) as err:
            raise ModelLoadError(
                f"cannot load masks.segmenter.model={model!r} {offline_hint(model)}. Cause: {load_cause(err)}"
            ) from err
        self.prompt, self.threshold, self.device = prompt, float(threshold), torch.device(device)

    @torch.no_grad()
    def probabilities(self, image: Image.Image, word: str) -> torch.Tensor:
        """[H, W] subject probability at the image's size."""
        text = self.prompt.replace("{word}", word)
        inputs = self.processor(text=[text], images=[image], return_tensors="pt", padding=True).to(self.device)
        logits = self.model(**inputs).logits.reshape(1, 1, *self.model_grid(inputs))  # [1, 1, h, w]
        resized = F.interpolate(logits.float(), size=(image.height, image.width), mode="bilinear", align_corners=False)
        return resized[0, 0].sigmoid().cpu()

    @staticmethod
    def model_grid(inputs: dict) -> tuple[int, int]:
        height, width = inputs["pixel_values"].shape[-2:]
        return int(height), int(width)

    def __call__(self, image: Image.Image, source: Source) -> np.ndarray:
        return (self.probabilities(image, source.subject_word) > self.threshold).numpy()
