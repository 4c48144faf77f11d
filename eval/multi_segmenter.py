"""A tiny random CLIPSeg written by code in the hub layout, for `eval=tiny` multi-subject regions.

Loaded through `ClipSegSegmenter` (transformers' `from_pretrained`) like the real one; its regions mean
nothing but are fixed by the seed. Kept behind the `Segmenter` interface, so a shared tiny segmenter
(monkey.models) can replace it here alone."""

import os
import shutil
import tempfile
from pathlib import Path

import torch

from monkey.datasets.dreambooth import load_dreambooth
from monkey.hashing import stable_hash
from monkey.paths import cache_dir

SPEC = {"hidden": 16, "layers": 2, "image": 32, "patch": 8, "seed": 0, "version": 1}


def tiny_clipseg_folder() -> Path:
    """Write (once) and return the folder of the tiny CLIPSeg (model, image processor, tokenizer)."""
    from transformers import (
        CLIPSegConfig,
        CLIPSegForImageSegmentation,
        CLIPSegProcessor,
        CLIPTokenizer,
        ViTImageProcessor,
    )

    from monkey.models.tiny_tokenizer import write_tiny_clip_tokenizer

    final = cache_dir() / "tiny-eval" / f"clipseg-{stable_hash(SPEC)}"
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".clipseg-", dir=final.parent))  # written whole, then renamed
    words = sorted({word for source in load_dreambooth() for word in source.subject_word.split()} | {"a", "photo"})
    write_tiny_clip_tokenizer(folder / "tokenizer", words)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    hidden = SPEC["hidden"]
    common = {"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_attention_heads": 2}
    text = {
        **common,
        "num_hidden_layers": SPEC["layers"],
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 77,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {**common, "num_hidden_layers": SPEC["layers"], "image_size": SPEC["image"], "patch_size": SPEC["patch"]}
    config = CLIPSegConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=hidden,
        extract_layers=list(range(SPEC["layers"])),
        reduce_dim=8,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=hidden,
    )
    torch.manual_seed(SPEC["seed"])
    CLIPSegForImageSegmentation(config).save_pretrained(folder)
    size = {"height": SPEC["image"], "width": SPEC["image"]}
    image_processor = ViTImageProcessor(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    try:
        os.rename(folder, final)
    except OSError:  # another process renamed its copy first: keep that one
        shutil.rmtree(folder, ignore_errors=True)
    return final
