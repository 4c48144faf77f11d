"""Fake FreeGraftor `pipeline` module with the call signature after upstream's 2025-10-24 refactor."""

import os
import sys
from dataclasses import asdict, dataclass, field

sys.path.append(os.path.dirname(__file__))

import fake_upstream


@dataclass
class ConceptConfig:
    class_name: str
    image_path: str
    scale: float = 1.0


@dataclass
class GenerationConfig:
    seed: int = 0
    num_steps: int = 25
    guidance: float = 3.0
    width: int = 1024
    height: int = 1024
    start_inject_step: int = 0
    end_inject_step: int = 25
    inject_block_ids: list = field(default_factory=lambda: list(range(57)))
    sim_threshold: float = 0.2
    cyc_threshold: float = 1.5
    inject_match_dropout: float = 0.4


class FreeGraftorPipeline:
    def __init__(
        self,
        models=None,
        device="cuda",
        image_cache_dir="./image_cache",
        image_info_cache_dir="./cache",
        requires_offload=False,
    ):
        self.collage_creator = fake_upstream.FakeCollageCreator(strict=False)
        self.offload = requires_offload

    def __call__(
        self,
        concept_configs,
        prompt,
        template_prompt=None,
        template_path=None,
        output_dir="inference_results",
        clear_image_cache=False,
        clear_image_info_cache=False,
        config=None,
        callback=None,
    ):
        assert isinstance(config, GenerationConfig)
        settings = asdict(config)
        return fake_upstream.generate(self, "2025-10-24", concept_configs, prompt, template_prompt or prompt, settings)
