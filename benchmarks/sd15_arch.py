"""SD1.5's architecture with random weights (no download), shared by the CPU benchmarks: the UNet
(320/640/1280/1280, cross-attention 768), the SD VAE and a CLIP ViT-L/14-sized text encoder with the
project's offline tokenizer. Import after `monkey` is importable (rectifid_arch, sdxl_arch; lcm_arch takes PROMPT)."""

from pathlib import Path

import diffusers
import transformers

from monkey.models.tiny_tokenizer import write_tiny_clip_tokenizer

CROSS_DIM = 768
PROMPT = "dog on top of a wooden floor"


def sd15_unet(time_cond_proj_dim: int | None = None, sample_size: int = 64) -> diffusers.UNet2DConditionModel:
    """SD1.5's UNet (PeRFlow keeps it; LCM adds time_cond_proj_dim=256)."""
    return diffusers.UNet2DConditionModel(
        sample_size=sample_size,
        block_out_channels=(320, 640, 1280, 1280),
        cross_attention_dim=CROSS_DIM,
        attention_head_dim=8,
        layers_per_block=2,
        time_cond_proj_dim=time_cond_proj_dim,
    )


def sd_vae(sample_size: int = 512, scaling_factor: float = 0.18215) -> diffusers.AutoencoderKL:
    """SD's VAE; SDXL's has the same architecture (sample_size 1024, scaling_factor 0.13025)."""
    return diffusers.AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=sample_size,
        scaling_factor=scaling_factor,
    )


def clip_text(folder: Path) -> tuple[transformers.CLIPTokenizer, transformers.CLIPTextModel]:
    write_tiny_clip_tokenizer(folder / "tokenizer", PROMPT.split())
    tokenizer = transformers.CLIPTokenizer.from_pretrained(folder / "tokenizer")
    config = transformers.CLIPTextConfig(
        vocab_size=49408,
        hidden_size=CROSS_DIM,
        intermediate_size=3072,
        num_attention_heads=12,
        num_hidden_layers=12,
        max_position_embeddings=77,
        projection_dim=CROSS_DIM,
        hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer, transformers.CLIPTextModel(config)
