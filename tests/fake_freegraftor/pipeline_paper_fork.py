"""Fake FreeGraftor `pipeline` module with the call signature of the MONKEY authors' fork
(jamesBaker361/freegraftor a72cb77): the concept is an opened image; no template_path, output_dir or
clear_* parameters; a plain `info` dict."""

import os
import sys
from dataclasses import dataclass, field

sys.path.append(os.path.dirname(__file__))

import fake_upstream


@dataclass
class ConceptConfig:
    class_name: str
    image: object
    image_path: str = field(default="")
    scale: float = 1.0


class FreeGraftorPipeline:
    def __init__(
        self,
        models=None,
        device="cuda",
        image_cache_dir="./image_cache",
        image_info_cache_dir="./cache",
        torch_dtype=None,
    ):
        self.collage_creator = fake_upstream.FakeCollageCreator(strict=False)
        self.offload = None

    def __call__(self, concept_configs, prompt, template_prompt=None, offload=False, info=None, callback=None):
        assert type(info) is dict and info["image_info"] == {"latents": {}}  # as the fork's evaluation.py sets it
        assert all(concept.image_path == "" for concept in concept_configs)  # the fork passes the image only
        self.offload = offload
        settings = {key: value for key, value in info.items() if key != "image_info"}
        return fake_upstream.generate(self, "paper-fork", concept_configs, prompt, template_prompt or prompt, settings)
