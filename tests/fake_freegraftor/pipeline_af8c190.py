"""Fake FreeGraftor `pipeline` module with the call signature of upstream commit af8c190."""

import os
import sys
from collections import defaultdict
from dataclasses import dataclass

sys.path.append(os.path.dirname(__file__))

import fake_upstream


@dataclass
class ConceptConfig:
    class_name: str
    image_path: str
    scale: float = 1.0


class FreeGraftorPipeline:
    def __init__(self, models=None, device="cuda", image_cache_dir="./image_cache", image_info_cache_dir="./cache"):
        self.collage_creator = fake_upstream.FakeCollageCreator(strict=True)
        self.offload = None

    def __call__(
        self,
        concept_configs,
        prompt,
        template_prompt=None,
        template_path=None,
        output_dir="inference_results",
        clear_image_cache=False,
        clear_image_info_cache=False,
        offload=False,
        info=None,
        callback=None,
    ):
        assert isinstance(info, defaultdict) and isinstance(info["image_info"]["latents"], defaultdict)
        self.offload = offload
        settings = {key: value for key, value in info.items() if key != "image_info"}
        return fake_upstream.generate(self, "af8c190", concept_configs, prompt, template_prompt or prompt, settings)
