"""Tiny random twins of RectifID's two helper models, in their hub layouts: OWL-ViT
(`google/owlvit-base-patch32`: config.json, model.safetensors, preprocessor and CLIP tokenizer files)
and DINOv2 (`facebook/dinov2-base`: config.json, model.safetensors, preprocessor_config.json with
the hub's image-processor settings, which RectifID's reference crop goes through). The detector and embedder load
them through the same `from_pretrained` calls as the real ones, offline. Their outputs mean nothing.

`full_size=True` writes the real architectures' shapes instead (random weights), for the GPU
check that has no network.
"""

from pathlib import Path
from typing import Any

import torch
import transformers

from monkey.hashing import stable_hash
from monkey.models.tiny import tokenizer_words, write_once
from monkey.models.tiny_tokenizer import write_tiny_clip_tokenizer
from monkey.paths import cache_dir

TINY_OWLVIT: dict[str, Any] = {
    "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
    "vision": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 64,
        "patch_size": 16,
    },
    "projection_dim": 32,
}
TINY_DINOV2: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": 56,
    "patch_size": 14,
}


def write_owlvit(folder: Path, spec: dict[str, Any]) -> None:
    """An OwlViTForObjectDetection with its OwlViTProcessor (image processor + CLIP tokenizer)."""
    from transformers import (
        CLIPTokenizer,
        OwlViTConfig,
        OwlViTForObjectDetection,
        OwlViTImageProcessor,
        OwlViTProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    write_tiny_clip_tokenizer(folder, spec["words"], max_length=16)  # OWL-ViT's text length
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    side = spec["vision"].get("image_size", 768)
    processor = OwlViTProcessor(
        image_processor=OwlViTImageProcessor(
            size={"height": side, "width": side}, crop_size={"height": side, "width": side}
        ),
        tokenizer=tokenizer,
    )
    text = {
        **spec["text"],
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 16,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    torch.manual_seed(spec["seed"])
    config = OwlViTConfig(text_config=text, vision_config=spec["vision"], projection_dim=spec["projection_dim"])
    OwlViTForObjectDetection(config).save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)


# facebook/dinov2-base's preprocessor_config.json (BitImageProcessor): shortest side 256 bicubic,
# centre crop 224, ImageNet mean and std
DINOV2_PROCESSOR: dict[str, Any] = {
    "size": {"shortest_edge": 256},
    "resample": 3,
    "crop_size": {"height": 224, "width": 224},
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}


def write_dinov2(folder: Path, spec: dict[str, Any]) -> None:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(spec["seed"])
    Dinov2Model(Dinov2Config(**spec["config"])).save_pretrained(folder, safe_serialization=True)
    BitImageProcessor(**spec["processor"]).save_pretrained(folder)


def materialize_owlvit(seed: int = 0, full_size: bool = False) -> Path:
    """Write the tiny (or, with full_size, the base-patch32-sized random) OWL-ViT once; return its folder."""
    spec = {
        "seed": seed,
        "words": tokenizer_words(),
        **(TINY_OWLVIT if not full_size else {"text": {}, "vision": {}, "projection_dim": 512}),
        "lib": transformers.__version__.split(".")[0],
    }
    root = cache_dir() / "tiny" / f"owlvit-{stable_hash(spec)}"
    write_once(root, lambda folder: write_owlvit(folder / "model", spec))
    return root / "model"


def materialize_dinov2(seed: int = 0, full_size: bool = False) -> Path:
    """Write the tiny (or full-size ViT-B/14 random) DINOv2 once; return its folder."""
    spec = {
        "seed": seed,
        "config": {} if full_size else TINY_DINOV2,
        "processor": DINOV2_PROCESSOR,
        "lib": transformers.__version__.split(".")[0],
    }
    root = cache_dir() / "tiny" / f"dinov2-{stable_hash(spec)}"
    write_once(root, lambda folder: write_dinov2(folder / "model", spec))
    return root / "model"
