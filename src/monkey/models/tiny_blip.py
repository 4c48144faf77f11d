"""A tiny random BLIP captioner in the hub layout of `Salesforce/blip-image-captioning-base`
(config.json, model.safetensors, processor and tokenizer files), so the BLIP captioner's real
`from_pretrained` path runs offline, in tests and in the demo under preset=paper. Its vocabulary is
the prompt words, so its (random) captions are words the tiny text encoders know."""

from pathlib import Path
from typing import Any

import torch
import transformers

from monkey.hashing import stable_hash
from monkey.models.tiny import tokenizer_words, write_once
from monkey.paths import cache_dir

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]  # BLIP's BERT tokens; [DEC] starts captions


def tiny_blip_spec(seed: int) -> dict[str, Any]:
    words = SPECIAL + tokenizer_words()
    text = {
        "vocab_size": len(words),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 64,
        "pad_token_id": 0,
        "sep_token_id": 3,
        "eos_token_id": 3,
        "bos_token_id": 5,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    return {"seed": seed, "words": words, "text": text, "vision": vision, "lib": transformers.__version__.split(".")[0]}


def write_tiny_blip(folder: Path, spec: dict[str, Any]) -> None:
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(spec["words"]) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    size = spec["vision"]["image_size"]
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": size, "width": size}), tokenizer=tokenizer
    )
    torch.manual_seed(spec["seed"])
    model = BlipForConditionalGeneration(
        BlipConfig(text_config=spec["text"], vision_config=spec["vision"], projection_dim=32)
    )
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)


def materialize_tiny_blip(seed: int = 0) -> Path:
    """Write the tiny BLIP once into the cache and return its folder."""
    spec = tiny_blip_spec(seed)
    root = cache_dir() / "tiny" / f"blip-{stable_hash(spec)}"
    write_once(root, lambda folder: write_tiny_blip(folder / "captioner", spec))
    return root / "captioner"
