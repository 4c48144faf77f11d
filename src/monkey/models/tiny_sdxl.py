"""A tiny random Stable Diffusion XL pipeline and its two h94 IP-Adapters, in the hub layouts.

`write_tiny_sdxl(root, spec)` writes
    pipeline/    stabilityai/stable-diffusion-xl-base-1.0's layout (model_index.json, unet/, vae/,
                 text_encoder/ + tokenizer/ (CLIP-L), text_encoder_2/ + tokenizer_2/ (CLIP-bigG with
                 projection), scheduler/; no image encoder, which load_ip_adapter adds), or
                 sdxl-turbo's for family `sdxl_turbo` (the same with EulerAncestral, trailing steps)
    ip_adapter/  h94/IP-Adapter's layout:
                 sdxl_models/ip-adapter_sdxl.safetensors (ImageProjection, 4 tokens) with its image
                 encoder sdxl_models/image_encoder/ (the ViT-bigG twin), and
                 sdxl_models/ip-adapter-plus_sdxl_vit-h.safetensors (the Resampler, 16 tokens, read
                 from the penultimate hidden states) with models/image_encoder/ (the ViT-H twin)
so `StableDiffusionXLPipeline.from_pretrained` + `load_ip_adapter` load them as the real ones.

The UNet keeps SDXL's block plan: no attention in down_blocks.0 / up_blocks.2, text-time added
conditioning, linear projections, and several transformer blocks per attention in the deepest
level (2 here, 10 in SDXL), so layer names such as
`up_blocks.0.attentions.1.transformer_blocks.1.attn2` exist as in the real model.
"""

import shutil
from pathlib import Path
from typing import Any

import diffusers
import torch
from safetensors.torch import save_file

from monkey.models.tiny_tokenizer import write_tiny_clip_tokenizer

TEXT_1 = 32  # CLIP-L width (768 in SDXL)
TEXT_2 = 48  # CLIP-bigG width and projection (1280 in SDXL)
CROSS_DIM = TEXT_1 + TEXT_2  # the two penultimate hidden states concatenated (2048 in SDXL)
TIME_EMBED = 8  # addition_time_embed_dim (256 in SDXL)
PLUS_TOKENS = 16  # the plus adapters' Resampler queries, as h94's
RESAMPLER_WIDTH = 64  # one 64-wide head: diffusers reads heads = to_q rows // 64
RESAMPLER_DEPTH = 4  # diffusers builds IPAdapterPlusImageProjection with its default depth 4

UNET: dict[str, Any] = {
    "sample_size": 16,  # 128 px images through the 8x VAE
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (32, 64, 64),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 1, 2),
    "attention_head_dim": (2, 4, 4),  # head counts, as SDXL's config spells them (5, 10, 20)
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": TIME_EMBED,
    "projection_class_embeddings_input_dim": TEXT_2 + 6 * TIME_EMBED,  # pooled text + 6 size/crop ids
    "cross_attention_dim": CROSS_DIM,
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
    "scaling_factor": 0.13025,  # SDXL's VAE
}


def text_config(width: int) -> dict[str, Any]:
    return {
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_attention_heads": 4,
        "num_hidden_layers": 3,  # SDXL reads hidden_states[-2]
        "max_position_embeddings": 77,
        "projection_dim": width,
    }


def vision_config(width: int, projection: int) -> dict[str, Any]:
    return {
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_attention_heads": 4,
        "num_hidden_layers": 3,  # the plus adapter reads hidden_states[-2]
        "image_size": 32,
        "patch_size": 8,
        "projection_dim": projection,
    }


VISION_BIGG = vision_config(40, 36)  # sdxl_models/image_encoder (ViT-bigG: 1664 wide, projection 1280)
VISION_H = vision_config(32, 24)  # models/image_encoder (ViT-H: 1280 wide, projection 1024)
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "sdxl": (  # stable-diffusion-xl-base-1.0's scheduler config
        "EulerDiscreteScheduler",
        {
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "interpolation_type": "linear",
            "prediction_type": "epsilon",
            "steps_offset": 1,
            "timestep_spacing": "leading",
            "use_karras_sigmas": False,
        },
    ),
    "sdxl_turbo": (  # sdxl-turbo's
        "EulerAncestralDiscreteScheduler",
        {
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "prediction_type": "epsilon",
            "steps_offset": 1,
            "timestep_spacing": "trailing",
        },
    ),
}
WEIGHTS = {"base": "ip-adapter_sdxl.safetensors", "plus": "ip-adapter-plus_sdxl_vit-h.safetensors"}


def tiny_sdxl_spec(family: str, seed: int, words: list[str], libs: list) -> dict[str, Any]:
    return {
        "family": family,
        "seed": seed,
        "unet": UNET,
        "vae": VAE,
        "text": [text_config(TEXT_1), text_config(TEXT_2)],
        "vision": {"bigG": VISION_BIGG, "H": VISION_H},
        "scheduler": SCHEDULERS[family],
        "resampler": {"tokens": PLUS_TOKENS, "width": RESAMPLER_WIDTH, "depth": RESAMPLER_DEPTH},
        "words": words,
        "libs": libs,
    }


def ip_layers(unet: diffusers.UNet2DConditionModel, randn: Any, cross_dim: int = CROSS_DIM) -> dict[str, torch.Tensor]:
    """`ip_adapter.<i>.to_k_ip/to_v_ip.weight`: i counts every attention processor (attn1, attn2, ...),
    so the cross-attention ones are 1, 3, 5, ... as in h94's files and diffusers' conversion."""
    state = {}
    for index, name in enumerate(unet.attn_processors):
        if name.endswith("attn2.processor"):
            hidden = unet.get_submodule(name.removesuffix(".processor")).to_k.out_features
            state[f"ip_adapter.{index}.to_k_ip.weight"] = randn(hidden, cross_dim, std=0.3)
            state[f"ip_adapter.{index}.to_v_ip.weight"] = randn(hidden, cross_dim, std=0.3)
    return state


def image_projection(embed_dim: int, randn: Any, cross_dim: int = CROSS_DIM) -> dict[str, torch.Tensor]:
    """ip-adapter_sdxl's `image_proj.proj` (Linear to 4 tokens) and `image_proj.norm`."""
    return {
        "image_proj.proj.weight": randn(4 * cross_dim, embed_dim, std=0.2),
        "image_proj.proj.bias": randn(4 * cross_dim, std=0.02),
        "image_proj.norm.weight": torch.ones(cross_dim),
        "image_proj.norm.bias": torch.zeros(cross_dim),
    }


def resampler(embed_dim: int, spec: dict[str, int], randn: Any, cross_dim: int = CROSS_DIM) -> dict[str, torch.Tensor]:
    """The plus adapters' Resampler in h94's key layout (`layers.<i>.0` its attention with a fused
    `to_kv`, `layers.<i>.1` its LayerNorm + two-layer MLP), which diffusers converts on load."""
    width, ffn = spec["width"], 4 * spec["width"]  # heads = width // 64 (diffusers' reading)
    state = {
        "image_proj.latents": randn(1, spec["tokens"], width, std=width**-0.5),
        "image_proj.proj_in.weight": randn(width, embed_dim, std=0.2),
        "image_proj.proj_in.bias": randn(width, std=0.02),
        "image_proj.proj_out.weight": randn(cross_dim, width, std=0.2),
        "image_proj.proj_out.bias": randn(cross_dim, std=0.02),
        "image_proj.norm_out.weight": torch.ones(cross_dim),
        "image_proj.norm_out.bias": torch.zeros(cross_dim),
    }
    for layer in range(spec["depth"]):
        prefix = f"image_proj.layers.{layer}"
        for norm in ("norm1", "norm2"):
            state[f"{prefix}.0.{norm}.weight"] = torch.ones(width)
            state[f"{prefix}.0.{norm}.bias"] = torch.zeros(width)
        state[f"{prefix}.0.to_q.weight"] = randn(width, width, std=0.1)  # heads x 64 = width
        state[f"{prefix}.0.to_kv.weight"] = randn(2 * width, width, std=0.1)
        state[f"{prefix}.0.to_out.weight"] = randn(width, width, std=0.1)
        state[f"{prefix}.1.0.weight"] = torch.ones(width)
        state[f"{prefix}.1.0.bias"] = torch.zeros(width)
        state[f"{prefix}.1.1.weight"] = randn(ffn, width, std=0.1)
        state[f"{prefix}.1.3.weight"] = randn(width, ffn, std=0.1)
    return state


def write_tiny_sdxl(root: Path, spec: dict[str, Any]) -> None:
    """Write both folders of a tiny SDXL profile below `root`."""
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    torch.manual_seed(spec["seed"])
    generator = torch.Generator().manual_seed(spec["seed"])

    def randn(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std

    folder = root / "pipeline"
    staged = root / "tokenizer"
    write_tiny_clip_tokenizer(staged, spec["words"])
    tokenizer = CLIPTokenizer.from_pretrained(staged)

    def text_encoder_config(text: dict[str, Any]) -> CLIPTextConfig:
        ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
        return CLIPTextConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **ids, **text)

    unet = diffusers.UNet2DConditionModel(**spec["unet"])
    scheduler_class, scheduler_config = spec["scheduler"]
    pipeline = diffusers.StableDiffusionXLPipeline(
        vae=diffusers.AutoencoderKL(**spec["vae"]),
        text_encoder=CLIPTextModel(text_encoder_config(spec["text"][0])),
        text_encoder_2=CLIPTextModelWithProjection(text_encoder_config(spec["text"][1])),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=getattr(diffusers, scheduler_class)(**scheduler_config),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    # the hub's CLIP tokenizer folders hold vocab.json + merges.txt: rewrite that layout
    for name in ("tokenizer", "tokenizer_2"):
        shutil.rmtree(folder / name)
        shutil.copytree(staged, folder / name)
    shutil.rmtree(staged)

    adapters = root / "ip_adapter"
    bigg, vit_h = spec["vision"]["bigG"], spec["vision"]["H"]
    CLIPVisionModelWithProjection(CLIPVisionConfig(**bigg)).save_pretrained(adapters / "sdxl_models" / "image_encoder")
    CLIPVisionModelWithProjection(CLIPVisionConfig(**vit_h)).save_pretrained(adapters / "models" / "image_encoder")
    layers = ip_layers(unet, randn)
    base = {**image_projection(bigg["projection_dim"], randn), **layers}
    save_file(base, adapters / "sdxl_models" / WEIGHTS["base"])
    plus = {**resampler(vit_h["hidden_size"], spec["resampler"], randn), **ip_layers(unet, randn)}
    save_file(plus, adapters / "sdxl_models" / WEIGHTS["plus"])
