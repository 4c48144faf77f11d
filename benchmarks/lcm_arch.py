"""LCM Dreamshaper v7's architecture (SD1.5's UNet with LCM's time conditioning, the SD VAE, a CLIP
ViT-L/14-sized text encoder) with h94's IP-Adapter and its ViT-H/14 image encoder, random weights, no
download: at real sizes (`Shapes()`) or tiny ones with the same block structure and layer names
(`QUICK`). Shared by gpu_throughput.py and monkey_speed.py, so both time the same model."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch
import transformers
from safetensors.torch import save_file
from sd15_arch import PROMPT

from monkey.models.tiny_tokenizer import write_tiny_clip_tokenizer
from monkey.models.vae_precision import keep_vae_in


@dataclass(frozen=True)
class Shapes:
    """Model sizes: the real ones, or tiny ones for --quick (same block structure, same layer names)."""

    unet_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    attention_head_dim: int = 8
    layers_per_block: int = 2
    norm_groups: int = 32
    cross_dim: int = 768
    time_cond_dim: int = 256
    vae_channels: tuple[int, ...] = (128, 256, 512, 512)
    vae_layers: int = 2
    text_layers: int = 12
    text_heads: int = 12
    text_ffn: int = 3072
    image_embed_dim: int = 1024
    vision_width: int = 1280  # ViT-H/14
    vision_layers: int = 32
    vision_heads: int = 16
    vision_ffn: int = 5120


QUICK = Shapes(
    unet_channels=(32, 32, 64, 64),
    attention_head_dim=2,
    layers_per_block=1,
    norm_groups=8,
    cross_dim=32,
    time_cond_dim=32,
    vae_channels=(8, 8, 16, 16),
    vae_layers=1,
    text_layers=2,
    text_heads=2,
    text_ffn=64,
    image_embed_dim=24,
    vision_width=32,
    vision_layers=2,
    vision_heads=2,
    vision_ffn=64,
)


def build_pipeline(
    folder: Path,
    shapes: Shapes,
    device: torch.device,
    dtype: torch.dtype,
    vae_dtype: torch.dtype,
    words: Sequence[str] = PROMPT.split(),
) -> diffusers.LatentConsistencyModelPipeline:
    """LCM Dreamshaper v7's architecture with random weights, initialised on `device`, with a tokenizer
    that knows `words`; the IP-Adapter goes through `load_ip_adapter` from a file in h94's layout, and
    the VAE stays in `vae_dtype` (monkey.models.vae_precision) as the harness keeps it."""
    torch.manual_seed(0)
    write_tiny_clip_tokenizer(folder / "tokenizer", words)
    tokenizer = transformers.CLIPTokenizer.from_pretrained(folder / "tokenizer")
    with torch.device(device):
        unet = diffusers.UNet2DConditionModel(
            sample_size=64,
            block_out_channels=shapes.unet_channels,
            cross_attention_dim=shapes.cross_dim,
            time_cond_proj_dim=shapes.time_cond_dim,
            attention_head_dim=shapes.attention_head_dim,
            layers_per_block=shapes.layers_per_block,
            norm_num_groups=shapes.norm_groups,
        )
        vae = diffusers.AutoencoderKL(
            block_out_channels=shapes.vae_channels,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=shapes.vae_layers,
            latent_channels=4,
            norm_num_groups=min(32, shapes.vae_channels[0]),
            sample_size=512,
        )
        text_encoder = transformers.CLIPTextModel(
            transformers.CLIPTextConfig(
                vocab_size=49408,
                hidden_size=shapes.cross_dim,
                intermediate_size=shapes.text_ffn,
                num_attention_heads=shapes.text_heads,
                num_hidden_layers=shapes.text_layers,
                max_position_embeddings=77,
                projection_dim=shapes.cross_dim,
                hidden_act="quick_gelu",
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    scheduler = diffusers.LCMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        set_alpha_to_one=True,
        original_inference_steps=50,
        timestep_spacing="leading",
    )
    pipe = diffusers.LatentConsistencyModelPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    write_ip_adapter(unet, shapes, folder / "ip_adapter" / "models" / "ip-adapter_sd15.safetensors")
    pipe.unet.to(dtype)
    pipe.text_encoder.to(dtype)
    pipe.load_ip_adapter(
        str(folder / "ip_adapter"),
        subfolder="models",
        weight_name="ip-adapter_sd15.safetensors",
        image_encoder_folder=None,
    )
    pipe.to(device)
    keep_vae_in(pipe.vae, vae_dtype, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def write_ip_adapter(unet: diffusers.UNet2DConditionModel, shapes: Shapes, path: Path) -> None:
    """h94's key layout: image_proj (embedding -> 4 tokens), to_k_ip/to_v_ip per attn2 processor."""
    generator = torch.Generator().manual_seed(1)
    tokens, cross = 4, shapes.cross_dim

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.02

    state = {
        "image_proj.proj.weight": randn(tokens * cross, shapes.image_embed_dim),
        "image_proj.proj.bias": torch.zeros(tokens * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    for index, name in enumerate(unet.attn_processors):
        if name.endswith("attn2.processor"):
            hidden = unet.get_submodule(name.removesuffix(".processor")).to_k.out_features
            state[f"ip_adapter.{index}.to_k_ip.weight"] = randn(hidden, cross)
            state[f"ip_adapter.{index}.to_v_ip.weight"] = randn(hidden, cross)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, path)


def build_image_encoder(shapes: Shapes, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The IP-Adapter's image encoder shape (CLIP ViT-H/14, 1024-d projection), random weights."""
    config = transformers.CLIPVisionConfig(
        hidden_size=shapes.vision_width,
        intermediate_size=shapes.vision_ffn,
        num_attention_heads=shapes.vision_heads,
        num_hidden_layers=shapes.vision_layers,
        image_size=224,
        patch_size=14,
        projection_dim=shapes.image_embed_dim,
        hidden_act="gelu",
    )
    with torch.device(device):
        return transformers.CLIPVisionModelWithProjection(config).to(dtype).eval()
