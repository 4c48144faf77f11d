"""Half precision: the tiny models in bf16 and fp16 (CPU) give finite images and, on a planted map,
the fp32 masks; the VAE stays in fp32 under an fp16 UNet and decodes what an fp32 VAE decodes."""

import numpy as np
import pytest
import torch
from conftest import compose_config
from diffusers import AutoencoderKL
from monkey_helpers import PAPER_LAYER, settings, subject_image

from monkey.adapter.sampler import MonkeySampler, SubjectBatch
from monkey.errors import ConfigError
from monkey.models.profiles import load_runtime_pipeline, profile_from_config, resolve_runtime
from monkey.models.tiny import materialize_tiny
from monkey.runner import generation_config

SIZE = 128  # the paper layer's grid is 4 x 4
# The planted map: the capture layer's image-token keys x 20 sharpen its softmax, and one capture step
# keeps the map clear of the threshold
SHARPEN, CAPTURE_STEPS, MARGIN = 20.0, (1,), 0.06
# a subject and seed whose planted map is clear on the tiny twin (fp32: nearest cell 0.32 from the threshold;
# bf16/fp16 move no cell more than 0.047): the tiny weights follow the prompt files' vocabulary, so a new
# prompt file can move the map (subject 0, seed 5 came within 0.004 after data/prompts/two_subjects.txt)
SUBJECT, SEED = 1, 1


def runtime(dtype: str, vae_dtype: str = "auto"):
    return resolve_runtime(profile_from_config(compose_config("model=tiny").model), "cpu", dtype, vae_dtype)


def test_vae_dtype_auto_is_fp32_under_fp16_only_and_enters_the_config_hash():
    assert runtime("float16").vae == torch.float32
    assert runtime("bfloat16").vae == torch.bfloat16 and runtime("float32").vae == torch.float32
    assert runtime("float16", "float16").vae == torch.float16
    with pytest.raises(ConfigError, match=r"runtime\.vae_dtype='fp8'"):
        runtime("float16", "fp8")
    cfg = compose_config("model=tiny")
    assert "vae_dtype" not in generation_config(cfg, runtime("float32"))  # older run folders keep their hash
    assert generation_config(cfg, runtime("float16"))["vae_dtype"] == "float32"


@torch.no_grad()
def test_an_fp32_vae_under_an_fp16_unet_decodes_like_a_plain_fp32_vae():
    pipe = load_runtime_pipeline(runtime("float16"))
    assert pipe.unet.dtype == torch.float16 and pipe.vae.dtype == torch.float32
    assert pipe.image_encoder.dtype == torch.float16 and pipe.text_encoder.dtype == torch.float16
    reference = AutoencoderKL.from_pretrained(materialize_tiny("lcm").pipeline / "vae")  # fp32 from the file
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)).half()  # as the UNet hands them
    decoded = pipe.vae.decode(latents).sample
    assert decoded.dtype == torch.float32
    torch.testing.assert_close(decoded, reference.decode(latents.float()).sample, atol=0, rtol=0)
    pixels = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)).half()
    encoded = pipe.vae.encode(pixels).latent_dist.mean
    assert encoded.dtype == torch.float16  # back in the UNet's precision
    torch.testing.assert_close(encoded, reference.encode(pixels.float()).latent_dist.mean.half(), atol=0, rtol=0)


@torch.no_grad()
def monkey_run(dtype: str):
    """MONKEY on one item with a planted map (sharpened image-token keys at the capture layer)."""
    pipe = load_runtime_pipeline(runtime(dtype))
    weight = pipe.unet.get_submodule(PAPER_LAYER).processor.to_k_ip[0].weight
    saved = weight.clone()
    weight.mul_(SHARPEN)
    try:
        embeds = pipe.encode_image(subject_image(SUBJECT), "cpu", 1)[0][None]  # [1, 1, D]
        batch = SubjectBatch(["dog in the snow"], [SEED], embeds, SIZE, SIZE)
        return MonkeySampler(pipe, settings("tiny", capture_steps=CAPTURE_STEPS))(batch, output_type="pt")
    finally:
        weight.copy_(saved)  # the pipeline is memoised for the process


def test_bf16_and_fp16_give_finite_images_and_the_fp32_mask_on_a_planted_map():
    reference = monkey_run("float32")
    mask = reference.masks[0]
    # the planted map is clear: no cell within MARGIN of the threshold, and half precision moves it less
    assert (mask.attention - 0.5).abs().min() > MARGIN and 0 < float(mask.mask.mean()) < 1
    for dtype in ("bfloat16", "float16"):
        output = monkey_run(dtype)
        images = output.images  # [1, 3, H, W] in [0, 1]
        assert torch.isfinite(images).all() and images.std() > 0.01
        assert output.pass1.records[0][f"{PAPER_LAYER}@1"].dtype == torch.float32  # maps recorded in fp32
        assert (output.masks[0].attention - mask.attention).abs().max() < MARGIN, dtype
        assert torch.equal(output.masks[0].mask, mask.mask), dtype
        assert torch.equal(output.image_masks, reference.image_masks), dtype
        assert np.abs(images.float().numpy() - reference.images.numpy()).mean() < 0.05  # the same picture
