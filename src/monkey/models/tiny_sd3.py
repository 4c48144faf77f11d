"""A tiny random Stable Diffusion 3 pipeline written in the hub layout of stabilityai's SD3 repos.

`write_tiny_sd3(folder, spec)` writes a diffusers pipeline folder (model_index.json, transformer/,
vae/, text_encoder/ + tokenizer/ (CLIP-L), text_encoder_2/ + tokenizer_2/ (CLIP-G),
text_encoder_3/ + tokenizer_3/ (T5), scheduler/), so `StableDiffusion3Pipeline.from_pretrained`
loads it exactly as it loads `stabilityai/stable-diffusion-3.5-large`. The transformer keeps SD3.5
large's structure (query-key RMS norm, the last block `context_pre_only`, no dual attention); the
T5 tokenizer is a word-level Unigram `tokenizer.json` built offline with the `tokenizers` library.
"""

import json
import shutil
from pathlib import Path
from typing import Any

import diffusers
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from monkey.models.tiny_tokenizer import write_tiny_clip_tokenizer

CLIP_HIDDEN = 32  # each CLIP's width; the two are concatenated (64) and zero-padded to the T5 width
T5_WIDTH = 64  # = the transformer's joint_attention_dim, as 4096 in the real model

TRANSFORMER: dict[str, Any] = {
    "sample_size": 16,  # 128 px images through the 8x VAE
    "patch_size": 2,
    "in_channels": 16,
    "out_channels": 16,
    "num_layers": 3,  # the last is context_pre_only, as block 37 of SD3.5 large
    "attention_head_dim": 8,
    "num_attention_heads": 4,
    "joint_attention_dim": T5_WIDTH,
    "caption_projection_dim": 32,  # = heads x head dim
    "pooled_projection_dim": 2 * CLIP_HIDDEN,
    "pos_embed_max_size": 32,  # latents up to 64 x 64 (512 px)
    "dual_attention_layers": (),
    "qk_norm": "rms_norm",
}
VAE: dict[str, Any] = {  # SD3's VAE: 16 latent channels, shift and scale, no quant convs
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (8, 8, 16, 16),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "latent_channels": 16,
    "norm_num_groups": 4,
    "sample_size": 128,
    "scaling_factor": 1.5305,
    "shift_factor": 0.0609,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
CLIP: dict[str, Any] = {
    "hidden_size": CLIP_HIDDEN,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 3,  # SD3 reads hidden_states[-2]
    "max_position_embeddings": 77,
    "projection_dim": CLIP_HIDDEN,
}
T5: dict[str, Any] = {
    "d_model": T5_WIDTH,
    "d_kv": 16,
    "d_ff": 128,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "feed_forward_proj": "gated-gelu",
    "is_encoder_decoder": False,
}
SCHEDULER: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 3.0}  # SD3.5 large's scheduler config
T5_SPECIALS = ("<pad>", "</s>", "<unk>")


def write_tiny_t5_tokenizer(folder: Path, words: list[str], max_length: int = 256) -> None:
    """A T5-style fast tokenizer (Unigram over whole words and single letters, `</s>` appended) in
    the hub's tokenizer_3 layout: tokenizer.json, tokenizer_config.json, special_tokens_map.json."""
    folder.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces = [(token, 0.0) for token in T5_SPECIALS]
    pieces += [("▁" + word, -1.0) for word in words] + [("▁", -5.0)]
    pieces += [(letter, -10.0) for letter in letters]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    specials = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    config = {"tokenizer_class": "T5Tokenizer", "model_max_length": max_length, "extra_ids": 0, **specials}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def write_tiny_sd3(root: Path, spec: dict[str, Any]) -> None:
    """Write the tiny SD3 pipeline folder at `root / "pipeline"`."""
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        T5Config,
        T5EncoderModel,
        T5TokenizerFast,
    )

    torch.manual_seed(spec["seed"])
    folder = root / "pipeline"
    staged = root / "tokenizers"
    write_tiny_clip_tokenizer(staged / "clip", spec["words"])
    write_tiny_t5_tokenizer(staged / "t5", spec["words"])
    clip_tokenizer = CLIPTokenizer.from_pretrained(staged / "clip")
    t5_tokenizer = T5TokenizerFast.from_pretrained(staged / "t5")

    def clip_encoder() -> CLIPTextModelWithProjection:
        config = CLIPTextConfig(
            vocab_size=len(clip_tokenizer),
            bos_token_id=clip_tokenizer.bos_token_id,
            eos_token_id=clip_tokenizer.eos_token_id,
            pad_token_id=clip_tokenizer.pad_token_id,
            **spec["clip"],
        )
        return CLIPTextModelWithProjection(config)

    t5_config = T5Config(
        vocab_size=len(t5_tokenizer), pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **spec["t5"]
    )
    pipeline = diffusers.StableDiffusion3Pipeline(
        transformer=diffusers.SD3Transformer2DModel(**spec["transformer"]),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**spec["scheduler"]),
        vae=diffusers.AutoencoderKL(**spec["vae"]),
        text_encoder=clip_encoder(),
        tokenizer=clip_tokenizer,
        text_encoder_2=clip_encoder(),
        tokenizer_2=clip_tokenizer,
        text_encoder_3=T5EncoderModel(t5_config),
        tokenizer_3=t5_tokenizer,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    # the hub's CLIP tokenizer folders hold vocab.json + merges.txt: rewrite that layout
    for name in ("tokenizer", "tokenizer_2"):
        shutil.rmtree(folder / name)
        shutil.copytree(staged / "clip", folder / name)
    shutil.rmtree(folder / "tokenizer_3")
    shutil.copytree(staged / "t5", folder / "tokenizer_3")
    shutil.rmtree(staged)


def tiny_sd3_spec(seed: int, words: list[str], libs: list) -> dict[str, Any]:
    return {
        "family": "sd3",
        "seed": seed,
        "transformer": TRANSFORMER,
        "vae": VAE,
        "clip": CLIP,
        "t5": T5,
        "scheduler": SCHEDULER,
        "words": words,
        "libs": libs,
    }
