"""Tiny random checkpoints written in exactly the hub layouts, so tests run the real loading code.

`materialize_tiny(family)` writes, once per configuration, into `<cache>/tiny/<hash>/`:
    pipeline/    a diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/,
                 tokenizer/ with vocab.json + merges.txt, scheduler/, feature_extractor/)
    ip_adapter/  the h94/IP-Adapter layout: models/ip-adapter_sd15.safetensors
                 (image_proj.* and ip_adapter.{1,3,5,...}.to_k_ip/to_v_ip keys) and
                 models/image_encoder/ (a CLIPVisionModelWithProjection)
The UNet keeps SD1.x's block structure, so layer names such as
`up_blocks.1.attentions.1.transformer_blocks.0.attn2` exist as in the real model.
"""

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers
from safetensors.torch import save_file

from monkey.atomic import apply_umask
from monkey.errors import ConfigError
from monkey.hashing import stable_hash
from monkey.models.tiny_tokenizer import words_of, write_tiny_clip_tokenizer
from monkey.paths import cache_dir, data_dir

CROSS_DIM = 32
IMAGE_EMBED_DIM = 24
BLOCKS = (16, 32, 32, 32)

UNET: dict[str, Any] = {
    "sample_size": 16,  # 128 px images through the 8x VAE
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": BLOCKS,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": CROSS_DIM,
    "attention_head_dim": 4,
    "norm_num_groups": 8,
}
VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (8, 8, 16, 16),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 128,
}
TEXT: dict[str, Any] = {
    "hidden_size": CROSS_DIM,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "max_position_embeddings": 77,
    "projection_dim": CROSS_DIM,
}
VISION: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "image_size": 32,
    "patch_size": 8,
    "projection_dim": IMAGE_EMBED_DIM,
}
# The real checkpoints' scheduler configs (LCM_Dreamshaper_v7; SD1.x's PNDM).
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "lcm": (
        "LCMScheduler",
        {
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "clip_sample": False,
            "set_alpha_to_one": True,
            "original_inference_steps": 50,
            "timestep_spacing": "leading",
        },
    ),
    "sd": (
        "PNDMScheduler",
        {
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "skip_prk_steps": True,
            "set_alpha_to_one": False,
            "steps_offset": 1,
        },
    ),
}
SCHEDULERS["sd14"] = SCHEDULERS["sd"]  # SD v1.4 ships the same PNDM config; profiles swap in DDIM
SCHEDULERS["perflow"] = SCHEDULERS["sd"]  # an SD1.5 fine-tune's stock config; the profile swaps in PeRFlow
PIPELINES = {
    "lcm": "LatentConsistencyModelPipeline",
    "sd": "StableDiffusionPipeline",
    "sd14": "StableDiffusionPipeline",
    "perflow": "StableDiffusionPipeline",
}
# Per-family UNet changes. lcm and sd14 keep SD1.x's transformer-block layout (layers_per_block 2: down 0-5,
# mid 6, up 7-15), so the 16 attn2 layer names (MONKEY's layer sweep) and block indices (MasaCtrl's start
# layer 10) mean the same blocks as in the real models.
UNET_CHANGES: dict[str, dict[str, Any]] = {
    "lcm": {"time_cond_proj_dim": 32, "layers_per_block": 2},
    "sd": {},
    "sd14": {"layers_per_block": 2},
    "perflow": {"layers_per_block": 2},
}
SDXL_FAMILIES = ("sdxl", "sdxl_turbo")  # monkey.models.tiny_sdxl
EXTRA_WORDS = ("a", "photo", "of", "the", "character", "in", "on", "with", "and")


@dataclass(frozen=True)
class TinyPaths:
    pipeline: Path
    ip_adapter: Path


def tokenizer_words() -> list[str]:
    """Words of every bundled prompt list and of DreamBooth's class and prompt table."""
    texts = list(EXTRA_WORDS)
    for path in sorted([*data_dir().glob("prompts/*.txt"), *data_dir().rglob("prompts_and_classes.txt")]):
        texts.append(path.read_text(encoding="utf-8"))
    return words_of(texts)


def tiny_spec(family: str, seed: int) -> dict[str, Any]:
    if family not in PIPELINES:
        families = sorted([*PIPELINES, "sd3", *SDXL_FAMILIES])
        raise ConfigError(f"model.tiny={family!r} is not a tiny family; choose one of {families}")
    unet = dict(UNET, **UNET_CHANGES[family])
    return {
        "family": family,
        "seed": seed,
        "unet": unet,
        "vae": VAE,
        "text": TEXT,
        "vision": VISION,
        "scheduler": SCHEDULERS[family],
        "words": tokenizer_words(),
        "libs": [diffusers.__version__.split(".")[:2], transformers.__version__.split(".")[0]],
    }


def ip_adapter_state_dict(unet: diffusers.UNet2DConditionModel, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """h94's key layout: every processor gets an index, cross-attention ones hold to_k_ip/to_v_ip."""

    def randn(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std

    state = {
        "image_proj.proj.weight": randn(4 * CROSS_DIM, IMAGE_EMBED_DIM, std=0.2),
        "image_proj.proj.bias": randn(4 * CROSS_DIM, std=0.02),
        "image_proj.norm.weight": torch.ones(CROSS_DIM),
        "image_proj.norm.bias": torch.zeros(CROSS_DIM),
    }
    for index, name in enumerate(unet.attn_processors):
        if not name.endswith("attn2.processor"):
            continue
        attn = unet.get_submodule(name.removesuffix(".processor"))
        hidden = attn.to_k.out_features
        state[f"ip_adapter.{index}.to_k_ip.weight"] = randn(hidden, CROSS_DIM, std=0.3)
        state[f"ip_adapter.{index}.to_v_ip.weight"] = randn(hidden, CROSS_DIM, std=0.3)
    return state


def write_tiny(root: Path, spec: dict[str, Any]) -> None:
    """Write both folders of a tiny profile below `root`."""
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    torch.manual_seed(spec["seed"])
    generator = torch.Generator().manual_seed(spec["seed"])
    tokenizer_dir = root / "pipeline" / "tokenizer"
    write_tiny_clip_tokenizer(tokenizer_dir, spec["words"])
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **spec["text"],
    )
    unet = diffusers.UNet2DConditionModel(**spec["unet"])
    scheduler_class, scheduler_config = spec["scheduler"]
    pipeline_class = getattr(diffusers, PIPELINES[spec["family"]])
    pipeline = pipeline_class(
        vae=diffusers.AutoencoderKL(**spec["vae"]),
        text_encoder=CLIPTextModel(text_config),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=getattr(diffusers, scheduler_class)(**scheduler_config),
        safety_checker=None,
        feature_extractor=CLIPImageProcessor(
            size={"shortest_edge": spec["vision"]["image_size"]},
            crop_size={"height": spec["vision"]["image_size"], "width": spec["vision"]["image_size"]},
        ),
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(root / "pipeline", safe_serialization=True)
    # the hub's SD tokenizer folders hold vocab.json + merges.txt, no tokenizer.json: rewrite that layout
    shutil.rmtree(tokenizer_dir)
    write_tiny_clip_tokenizer(tokenizer_dir, spec["words"])

    models = root / "ip_adapter" / "models"
    CLIPVisionModelWithProjection(CLIPVisionConfig(**spec["vision"])).save_pretrained(models / "image_encoder")
    save_file(ip_adapter_state_dict(unet, generator), models / "ip-adapter_sd15.safetensors")


def write_once(root: Path, write: Callable[[Path], None]) -> Path:
    """Run `write(folder)` into a staging folder and rename it to `root`, once: atomic, and safe when
    several processes race (the loser's copy is identical and dropped)."""
    if not (root / "complete").is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
        try:
            write(staging)
            (staging / "complete").write_text("ok\n")
            apply_umask(staging)  # mkdtemp's 0700 and some writers' 0600: colleagues sharing the cache read it
            try:
                staging.rename(root)
            except OSError:  # another process finished first: its copy is identical
                if not (root / "complete").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return root


def materialize_tiny(family: str, seed: int = 0) -> TinyPaths:
    """Write the tiny checkpoints once (atomically, by folder rename) and return their paths."""
    if family == "sd3":  # Stable Diffusion 3 (monkey.models.tiny_sd3): no IP-Adapter folder
        from monkey.models.tiny_sd3 import tiny_sd3_spec, write_tiny_sd3

        spec = tiny_sd3_spec(seed, tokenizer_words(), tiny_spec("sd", seed)["libs"])
        write = write_tiny_sd3
    elif family in SDXL_FAMILIES:  # Stable Diffusion XL and its two h94 adapters (monkey.models.tiny_sdxl)
        from monkey.models.tiny_sdxl import tiny_sdxl_spec, write_tiny_sdxl

        spec = tiny_sdxl_spec(family, seed, tokenizer_words(), tiny_spec("sd", seed)["libs"])
        write = write_tiny_sdxl
    else:
        spec = tiny_spec(family, seed)
        write = write_tiny
    root = write_once(cache_dir() / "tiny" / f"{family}-{stable_hash(spec)}", lambda folder: write(folder, spec))
    return TinyPaths(pipeline=root / "pipeline", ip_adapter=root / "ip_adapter")
