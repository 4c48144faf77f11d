"""A segmenter for the masked-metric tests whose masks a test can compute itself (built by Hydra `_target_`)."""

import numpy as np
from PIL import Image

from monkey.datasets.base import Source


class BrightSegmenter:
    """Subject = pixels brighter than the image's mean grey level; none at all in the generated images
    (64 px wide) of `empty_subject`. `built` counts constructions (a rerun must build none)."""

    built = 0

    def __init__(self, empty_subject: str = "", device: str = "cpu"):
        BrightSegmenter.built += 1
        self.empty_subject = empty_subject

    def __call__(self, image: Image.Image, source: Source) -> np.ndarray:
        grey = np.asarray(image.convert("L"), dtype=np.float64)  # [H, W]
        if source.subject == self.empty_subject and image.width == 64:
            return np.zeros(grey.shape, dtype=bool)
        return grey > grey.mean()
