"""Tiny random segmenters in the hub layouts of `CIDAS/clipseg-rd64-refined`, `facebook/sam-vit-base` and
`IDEA-Research/grounding-dino-tiny` (config.json, model.safetensors, processor and tokenizer files), so every
segmenter's real `from_pretrained` path runs offline, in tests and on the tiny profiles. Their vocabularies
are the prompt words, so the subject words they are prompted with are words they know. Their masks are
random: they test wiring and arithmetic, never quality.

Each `materialize_tiny_*` writes its checkpoint once into the cache (`$MONKEY_CACHE/tiny/`, atomic, safe under
races) and returns its folder; the folder name hashes the spec, so a changed spec writes a new one.
"""

from pathlib import Path
from typing import Any

import torch
import transformers

from monkey.hashing import stable_hash
from monkey.models.tiny import tokenizer_words, write_once
from monkey.models.tiny_tokenizer import write_tiny_clip_tokenizer
from monkey.paths import cache_dir

LIB = transformers.__version__.split(".")[0]
BERT_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_clipseg_spec(seed: int) -> dict[str, Any]:
    text = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 2,
            "max_position_embeddings": 77}  # fmt: skip
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 2,
              "image_size": 32, "patch_size": 8}  # fmt: skip
    return {"kind": "clipseg", "seed": seed, "words": tokenizer_words(), "text": text, "vision": vision, "lib": LIB}


def write_tiny_clipseg(folder: Path, spec: dict[str, Any]) -> None:
    from transformers import (
        CLIPSegConfig,
        CLIPSegForImageSegmentation,
        CLIPSegProcessor,
        CLIPTokenizer,
        ViTImageProcessor,
    )

    write_tiny_clip_tokenizer(folder, spec["words"])
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}  # fmt: skip
    config = CLIPSegConfig(
        text_config={**spec["text"], "vocab_size": len(tokenizer), **ids},
        vision_config=spec["vision"],
        projection_dim=16,
        extract_layers=[0, 1],
        reduce_dim=8,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=16,
    )
    torch.manual_seed(spec["seed"])
    CLIPSegForImageSegmentation(config).save_pretrained(folder, safe_serialization=True)
    size = spec["vision"]["image_size"]
    image_processor = ViTImageProcessor(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


def tiny_sam_spec(seed: int) -> dict[str, Any]:
    # SAM's image encoder at 64 px with 16 px patches: a 4 x 4 embedding grid, masks predicted at 16 x 16
    vision = {"hidden_size": 16, "output_channels": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 64, "patch_size": 16, "mlp_dim": 32, "window_size": 2,
              "global_attn_indexes": [0], "num_pos_feats": 4}  # fmt: skip
    prompt = {"hidden_size": 8, "image_size": 64, "patch_size": 16, "mask_input_channels": 4}
    decoder = {"hidden_size": 8, "mlp_dim": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
               "iou_head_hidden_dim": 16}  # fmt: skip
    return {"kind": "sam", "seed": seed, "vision": vision, "prompt": prompt, "decoder": decoder, "lib": LIB}


def write_tiny_sam(folder: Path, spec: dict[str, Any]) -> None:
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    config = SamConfig(
        vision_config=spec["vision"], prompt_encoder_config=spec["prompt"], mask_decoder_config=spec["decoder"]
    )
    torch.manual_seed(spec["seed"])
    SamModel(config).save_pretrained(folder, safe_serialization=True)
    side = spec["vision"]["image_size"]
    image_processor = SamImageProcessor(
        size={"longest_edge": side}, pad_size={"height": side, "width": side}, mask_size={"longest_edge": side // 4},
        mask_pad_size={"height": side // 4, "width": side // 4},
    )  # fmt: skip
    SamProcessor(image_processor=image_processor).save_pretrained(folder)


def tiny_grounding_dino_spec(seed: int) -> dict[str, Any]:
    backbone = {"model_type": "swin", "image_size": 64, "patch_size": 4, "embed_dim": 8, "depths": [1, 1],
                "num_heads": [1, 2], "window_size": 4, "out_features": ["stage1", "stage2"]}  # fmt: skip
    text = {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 32, "max_position_embeddings": 64}  # fmt: skip
    model = {"d_model": 32, "num_queries": 8, "encoder_layers": 1, "decoder_layers": 2, "encoder_ffn_dim": 32,
             "decoder_ffn_dim": 32, "encoder_attention_heads": 2, "decoder_attention_heads": 2,
             "num_feature_levels": 2, "encoder_n_points": 2, "decoder_n_points": 2, "max_text_len": 32}  # fmt: skip
    words = BERT_SPECIAL + [word for word in tokenizer_words() if word not in BERT_SPECIAL]
    return {"kind": "grounding_dino", "seed": seed, "words": words, "backbone": backbone, "text": text,
            "model": model, "lib": LIB}  # fmt: skip


def write_tiny_grounding_dino(folder: Path, spec: dict[str, Any]) -> None:
    from transformers import (
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(spec["words"]) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True)
    config = GroundingDinoConfig(
        backbone_config=spec["backbone"],
        text_config={**spec["text"], "vocab_size": len(spec["words"])},
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        **spec["model"],
    )
    torch.manual_seed(spec["seed"])
    GroundingDinoForObjectDetection(config).save_pretrained(folder, safe_serialization=True)
    side = spec["backbone"]["image_size"]
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": side, "longest_edge": side})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


WRITERS = {
    "clipseg": (tiny_clipseg_spec, write_tiny_clipseg),
    "sam": (tiny_sam_spec, write_tiny_sam),
    "grounding_dino": (tiny_grounding_dino_spec, write_tiny_grounding_dino),
}


def materialize_tiny_segmenter(kind: str, seed: int = 0) -> Path:
    """Write the tiny `kind` ("clipseg", "sam" or "grounding_dino") once into the cache; return its folder."""
    spec_of, write = WRITERS[kind]
    spec = spec_of(seed)
    root = cache_dir() / "tiny" / f"{kind}-{stable_hash(spec)}"
    write_once(root, lambda folder: write(folder / kind, spec))
    return root / kind
