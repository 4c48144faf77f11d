"""SDXL's architecture with random weights (no download), for the SDXL benchmarks.

`sdxl_pipeline(folder, device, dtype, depth)` builds a StableDiffusionXLPipeline from configs in code:
the UNet of stabilityai/stable-diffusion-xl-base-1.0 (320/640/1280, cross-attention 2048, text-time
conditioning, transformer blocks per level `depth`: the real (1, 2, 10) or fewer), SDXL's VAE, and text
encoders with the real output widths (CLIP-L 768, CLIP-bigG 1280 with projection) but `text_layers`
layers each (their cost is one call per prompt). h94's adapters are written in the hub key layout by
monkey.models.tiny_sdxl's writers at the real shapes and loaded by `load_ip_adapter` (no image
encoder: the subject embedding is given, as the harness memoises it): `ip-adapter_sdxl` (4 tokens
from a 1280-d bigG embedding) or `ip-adapter-plus_sdxl_vit-h` (16 tokens from ViT-H's 257 x 1280
hidden states). The scheduler is sdxl-turbo's (EulerAncestral, trailing) or the base model's (Euler).
"""

from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers
from safetensors.torch import save_file
from sd15_arch import sd_vae

from monkey.models.tiny_sdxl import SCHEDULERS, image_projection, ip_layers, resampler
from monkey.models.tiny_tokenizer import write_tiny_clip_tokenizer

CROSS_DIM = 2048
REAL_DEPTH = (1, 2, 10)
BIGG_EMBED = 1280  # CLIP ViT-bigG/14 image projection
VIT_H_HIDDEN, VIT_H_TOKENS = 1280, 257  # CLIP ViT-H/14 penultimate hidden states
PROMPT = "dog on top of a wooden floor"


def sdxl_unet_config(depth: tuple[int, int, int] = REAL_DEPTH, sample_size: int = 128) -> dict[str, Any]:
    return {
        "sample_size": sample_size,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 2,
        "block_out_channels": (320, 640, 1280),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "transformer_layers_per_block": tuple(depth),
        "attention_head_dim": (5, 10, 20),
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,  # 1280 pooled + 6 x 256
        "cross_attention_dim": CROSS_DIM,
    }


def text_encoders(folder: Path, layers: int) -> tuple[Any, Any, Any]:
    write_tiny_clip_tokenizer(folder / "tokenizer", PROMPT.split())
    tokenizer = transformers.CLIPTokenizer.from_pretrained(folder / "tokenizer")
    ids = {
        "vocab_size": len(tokenizer),  # the offline tokenizer's words (49408 in CLIP: only a lookup table)
        "max_position_embeddings": 77,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    clip_l = transformers.CLIPTextConfig(
        hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=layers, **ids
    )
    clip_g = transformers.CLIPTextConfig(
        hidden_size=1280,
        intermediate_size=5120,
        num_attention_heads=20,
        num_hidden_layers=layers,
        projection_dim=1280,
        **ids,
    )
    return tokenizer, transformers.CLIPTextModel(clip_l), transformers.CLIPTextModelWithProjection(clip_g)


def write_adapter(unet: diffusers.UNet2DConditionModel, folder: Path, plus: bool) -> str:
    """h94's layout at the real shapes; returns the weight name."""
    generator = torch.Generator().manual_seed(1)

    def randn(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std * 0.1  # small, as trained adapters are

    if plus:
        name = "ip-adapter-plus_sdxl_vit-h.safetensors"
        projection = resampler(VIT_H_HIDDEN, {"tokens": 16, "width": 1280, "depth": 4}, randn, CROSS_DIM)
    else:
        name = "ip-adapter_sdxl.safetensors"
        projection = image_projection(BIGG_EMBED, randn, CROSS_DIM)
    path = folder / "sdxl_models" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({**projection, **ip_layers(unet, randn, CROSS_DIM)}, path)
    return name


def sdxl_pipeline(
    folder: Path,
    device: torch.device,
    dtype: torch.dtype,
    depth: tuple[int, int, int] = REAL_DEPTH,
    text_layers: int = 2,
    plus: bool = False,
    scheduler: str = "sdxl_turbo",
) -> diffusers.StableDiffusionXLPipeline:
    """The pipeline with an adapter loaded by `load_ip_adapter`; weights made on `device` in `dtype`."""
    torch.manual_seed(0)
    with torch.device(device):  # random init where the weights will live (fast on a GPU)
        unet = diffusers.UNet2DConditionModel(**sdxl_unet_config(depth)).to(dtype)
        vae = sd_vae(sample_size=1024, scaling_factor=0.13025).to(dtype)  # SDXL's VAE config
        tokenizer, text_l, text_g = text_encoders(folder, text_layers)
        text_l, text_g = text_l.to(dtype), text_g.to(dtype)
    scheduler_class, scheduler_config = SCHEDULERS[scheduler]
    pipe = diffusers.StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_l,
        text_encoder_2=text_g,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=getattr(diffusers, scheduler_class)(**scheduler_config),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    weight_name = write_adapter(unet, folder / "ip_adapter", plus)
    pipe.load_ip_adapter(
        str(folder / "ip_adapter"), subfolder="sdxl_models", weight_name=weight_name, image_encoder_folder=None
    )
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def subject_embeds(plus: bool, device: torch.device, dtype: torch.dtype, items: int = 1) -> torch.Tensor:
    """Given subject embeddings: [items, 1, 1280] (bigG) or [items, 1, 257, 1280] (ViT-H hidden states)."""
    shape = (items, 1, VIT_H_TOKENS, VIT_H_HIDDEN) if plus else (items, 1, BIGG_EMBED)
    return torch.randn(shape, generator=torch.Generator().manual_seed(2)).to(device, dtype)


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
