"""Segmentation models behind the ranking's small `Segmenter` interface (monkey.rank.subject_masks).

`ClipSegSegmenter` prompts CLIPSeg (`CIDAS/clipseg-rd64-refined` by default, or any folder in its
layout) with the subject word, so DreamBooth's 30 subjects need no class list:
mask = sigmoid(logits) resized to the image (bilinear) > `threshold`. It is loaded with transformers'
`from_pretrained` like every model in the harness (`tiny=true`: the random twin of
`monkey.models.tiny_segmenters`); pass it as
`masks.segmenter={_target_:monkey.rank.segmenters.ClipSegSegmenter,model:CIDAS/clipseg-rd64-refined}`.
"""

from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from monkey.datasets.base import Source
from monkey.errors import ConfigError, ModelLoadError
from monkey.hub_needs import HubNeed, transformers_model
from monkey.models.profiles import is_local, load_cause, offline_hint


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

    @staticmethod
    def hub_needs(model: str = "CIDAS/clipseg-rd64-refined", tiny: bool = False, **_: Any) -> list[HubNeed]:
        """What __init__ reads from the hub (monkey-prefetch): the model with its processor (none when tiny)."""
        if tiny or is_local(model):
            return []
        return [transformers_model(model, "CLIPSeg segmenter", processor=True)]

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


class GroundingSamSegmenter:
    """GroundingDINO finds boxes for the subject word; SAM segments the best one.

    Box: `GroundingDinoForObjectDetection` prompted with `prompt` (GroundingDINO's convention: lower case,
    ending in a full stop); a box's score is its best token probability (transformers'
    `post_process_grounded_object_detection`), boxes scoring > `box_threshold` are kept (GroundingDINO's rule,
    IDEA-Research/GroundingDINO README.md:102@856dde2; 0.35 as its README example, README.md:231) and the
    best of them is the subject. Mask: `SamModel` prompted with that box, one mask
    (`multimask_output=False`), its logits upsampled to the image by `SamProcessor.post_process_masks` and
    kept where > `mask_threshold` (0.0, SAM's own). No box above the thresholds: an empty mask (the caller's
    "no subject found"). `tiny`: the random twins of `monkey.models.tiny_segmenters` instead of the models.
    """

    @staticmethod
    def hub_needs(
        detector: str = "IDEA-Research/grounding-dino-tiny",
        sam: str = "facebook/sam-vit-base",
        tiny: bool = False,
        **_: Any,
    ) -> list[HubNeed]:
        """What __init__ reads from the hub (monkey-prefetch): both models with their processors (none when tiny)."""
        if tiny:
            return []
        needs = []
        if not is_local(detector):
            needs.append(transformers_model(detector, "GroundingDINO of eval.segmenter", processor=True))
        if not is_local(sam):  # SamProcessor: an image processor, no tokenizer
            base = transformers_model(sam, "SAM of eval.segmenter")
            needs.append(replace(base, files=(*base.files, ("preprocessor_config.json",))))
        return needs

    def __init__(
        self,
        detector: str = "IDEA-Research/grounding-dino-tiny",
        sam: str = "facebook/sam-vit-base",
        prompt: str = "{word}.",
        box_threshold: float = 0.35,
        mask_threshold: float = 0.0,
        device: str = "cpu",
        tiny: bool = False,
    ):
        from transformers import AutoProcessor, GroundingDinoForObjectDetection, SamModel, SamProcessor

        if tiny:
            from monkey.models.tiny_segmenters import materialize_tiny_segmenter

            detector, sam = str(materialize_tiny_segmenter("grounding_dino")), str(materialize_tiny_segmenter("sam"))
        if "{word}" not in prompt:
            raise ConfigError(f"segmenter.prompt={prompt!r} must contain {{word}} (the subject word)")
        if not 0.0 <= float(box_threshold) < 1.0:
            raise ConfigError(f"segmenter.box_threshold={box_threshold!r} must lie in [0, 1) (a probability)")
        self.device = torch.device(device)
        for key, name in (("detector", detector), ("sam", sam)):
            try:
                if key == "detector":
                    self.detector_processor = AutoProcessor.from_pretrained(name)
                    self.detector = GroundingDinoForObjectDetection.from_pretrained(name).eval().to(self.device)
                else:
                    self.sam_processor = SamProcessor.from_pretrained(name)
                    self.sam = SamModel.from_pretrained(name).eval().to(self.device)
            except (OSError, ValueError) as err:
                raise ModelLoadError(
                    f"cannot load segmenter.{key}={name!r} {offline_hint(name)}. Cause: {load_cause(err)}"
                ) from err
        self.prompt = prompt
        self.box_threshold = float(box_threshold)
        self.mask_threshold = float(mask_threshold)

    @torch.no_grad()
    def best_box(self, image: Image.Image, word: str) -> list[float] | None:
        """[x0, y0, x1, y1] in image pixels of the highest-scoring box for `word`, or None."""
        text = self.prompt.replace("{word}", word).lower()
        inputs = self.detector_processor(images=image, text=text, return_tensors="pt").to(self.device)
        outputs = self.detector(**inputs)
        found = self.detector_processor.post_process_grounded_object_detection(
            outputs,
            inputs["input_ids"],
            threshold=self.box_threshold,
            target_sizes=[(image.height, image.width)],
        )[0]
        if len(found["scores"]) == 0:
            return None
        return found["boxes"][int(found["scores"].argmax())].tolist()

    @torch.no_grad()
    def box_mask(self, image: Image.Image, box: list[float]) -> np.ndarray:
        """[H, W] bool: SAM's mask of the object in `box`."""
        inputs = self.sam_processor(images=image, input_boxes=[[box]], return_tensors="pt").to(self.device)
        outputs = self.sam(**inputs, multimask_output=False)  # pred_masks [1, 1, 1, h, w]
        masks = self.sam_processor.image_processor.post_process_masks(
            outputs.pred_masks.cpu(),
            inputs["original_sizes"].cpu(),
            inputs["reshaped_input_sizes"].cpu(),
            mask_threshold=self.mask_threshold,
        )
        return masks[0][0, 0].numpy().astype(bool)

    def __call__(self, image: Image.Image, source: Source) -> np.ndarray:
        box = self.best_box(image, source.subject_word)
        if box is None:
            return np.zeros((image.height, image.width), dtype=bool)
        return self.box_mask(image, box)
