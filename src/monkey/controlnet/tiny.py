"""A tiny random ControlNet for the tiny SD1.x-family profiles, written by code in the hub layout.

Its blocks are those of the family's tiny UNet (monkey.models.tiny: the same config a diffusers
`ControlNetModel.from_unet` would copy), with a conditioning embedding that downsamples by the tiny
VAE's factor of 8. The folder holds `config.json` and `diffusion_pytorch_model.safetensors` at its
root, as lllyasviel/control_v11p_sd15_canny does, and is loaded through `ControlNetModel.from_pretrained`.

A trained ControlNet's output convolutions are far from zero, but diffusers initialises them to zero
(the "zero convolutions"), so a freshly made one would change nothing; the twin fills them with seeded
random weights instead, so that a control visibly acts on the tiny models.
"""

from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel

from monkey.errors import ConfigError
from monkey.hashing import stable_hash
from monkey.models.tiny import PIPELINES, tiny_spec, write_once
from monkey.paths import cache_dir

CONDITIONING_CHANNELS = (8, 8, 16, 16)  # three stride-2 steps: 8x, as the VAE's latent grid
OUTPUT_STD = 0.3  # the random "zero convolutions"
# ControlNetModel's own keys, taken from the tiny UNet's config (as ControlNetModel.from_unet takes them)
UNET_KEYS = (
    "in_channels",
    "down_block_types",
    "block_out_channels",
    "layers_per_block",
    "cross_attention_dim",
    "attention_head_dim",
    "norm_num_groups",
)


def tiny_controlnet_spec(family: str, seed: int) -> dict[str, Any]:
    if family not in PIPELINES:
        raise ConfigError(
            f"method.control.model=tiny needs a tiny SD1.x-family model profile (model.tiny one of "
            f"{sorted(PIPELINES)}), got model.tiny={family!r}"
        )
    base = tiny_spec(family, seed)
    unet = {key: base["unet"][key] for key in UNET_KEYS if key in base["unet"]}
    return {
        "family": family,
        "seed": seed,
        "controlnet": {**unet, "conditioning_embedding_out_channels": CONDITIONING_CHANNELS},
        "output_std": OUTPUT_STD,
        "libs": base["libs"],
    }


def output_convolutions(model: ControlNetModel) -> list[torch.nn.Conv2d]:
    """The convolutions diffusers zero-initialises: each residual's and the conditioning embedding's last."""
    return [*model.controlnet_down_blocks, model.controlnet_mid_block, model.controlnet_cond_embedding.conv_out]


def write_tiny_controlnet(root: Path, spec: dict[str, Any]) -> None:
    torch.manual_seed(spec["seed"])
    model = ControlNetModel(**spec["controlnet"])
    generator = torch.Generator().manual_seed(spec["seed"] + 1)
    with torch.no_grad():
        for conv in output_convolutions(model):
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * spec["output_std"])
    model.save_pretrained(root, safe_serialization=True)


def materialize_tiny_controlnet(family: str, seed: int = 0) -> Path:
    """The twin's folder for a tiny family, written once (atomically, as the other tiny checkpoints)."""
    spec = tiny_controlnet_spec(family, seed)
    name = f"controlnet-{family}-{stable_hash(spec)}"
    return write_once(cache_dir() / "tiny" / name, lambda folder: write_tiny_controlnet(folder, spec))
