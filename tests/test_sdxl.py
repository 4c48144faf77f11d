"""MONKEY on the tiny SDXL twins, checked as on SD1.5: the twins load h94's SDXL adapters through
`load_ip_adapter` (4 tokens from the bigG encoder, 16 from the plus Resampler on ViT-H hidden states);
recording returns the stock pipeline's output; a recorded map equals a hand-written softmax at a layer
with transformer_blocks.1; masks act only on the mask steps (against the stock pipeline switching
its own scale per step)."""

import pytest
import torch
from diffusers.models.embeddings import ImageProjection, IPAdapterPlusImageProjection
from monkey_helpers import GUIDANCE, load_tiny, stock_latents
from test_monkey_capture import hand_image_token_probs

from monkey.adapter.capture import attn2_layers, map_key, num_image_tokens
from monkey.adapter.sampler import MonkeySampler, SubjectBatch
from monkey.adapter.settings import MonkeySettings
from monkey.datasets.dreambooth import load_dreambooth
from monkey.subject_embeds import SubjectEmbedder

SIZE = 64
DEEP_LAYER = "up_blocks.0.attentions.1.transformer_blocks.1.attn2"  # the second block of a 2-block attention
PROMPTS, SEEDS = ["dog in the snow", "dog on the beach"], [3, 4]


def batch_of(pipe, prompts=PROMPTS, seeds=SEEDS) -> SubjectBatch:
    """The harness's own embedding path (SubjectEmbedder), so the stock reference checks it too."""
    embedder = SubjectEmbedder(pipe)
    embeds = embedder.batch([load_dreambooth()[0]])  # [1, 1, D] or [1, 1, S, D]
    return SubjectBatch(prompts, seeds, embeds, SIZE, SIZE, negative_embeds=embedder.negative_embeds())


def knobs(model: str, **extra) -> MonkeySettings:
    return MonkeySettings(**{"guidance_scale": GUIDANCE[model], "layers": [DEEP_LAYER], **extra})


def test_the_twins_load_h94s_sdxl_adapters_through_load_ip_adapter():
    base, plus = load_tiny("tiny_sdxl"), None
    projection = base.unet.encoder_hid_proj.image_projection_layers[0]
    assert isinstance(projection, ImageProjection) and num_image_tokens(base.unet) == 4
    assert base.image_encoder.config.hidden_size == 40  # sdxl_models/image_encoder: the bigG twin
    layers = attn2_layers(base.unet)
    assert len(layers) == 17 and DEEP_LAYER in layers  # 2 + 2x2 + 2 (mid) + 3x2 + 3 attn2 layers
    plus = load_tiny("tiny_sdxl_plus")
    projection = plus.unet.encoder_hid_proj.image_projection_layers[0]
    assert isinstance(projection, IPAdapterPlusImageProjection) and num_image_tokens(plus.unet) == 16
    assert plus.image_encoder.config.hidden_size == 32  # models/image_encoder: the ViT-H twin
    assert attn2_layers(plus.unet) == layers


@pytest.mark.parametrize("model", ["tiny_sdxl", "tiny_sdxl_plus", "tiny_sdxl_turbo"])
def test_recording_leaves_the_image_equal_to_the_stock_sdxl_pipeline(model):
    """Recording at two layers on every step, IP scale 1, no mask: the stock image, to 1e-5 in latents.
    For the plus adapter this also checks the hidden-state embedding and its CFG negative."""
    pipe = load_tiny(model)
    steps = [0, 1, 2]
    layers = [DEEP_LAYER, "down_blocks.1.attentions.0.transformer_blocks.0.attn2"]
    config = knobs(model, layers=layers, capture_steps=steps, initial_steps=3, save_pass1_image=True)
    batch = batch_of(pipe)
    before = [(name, type(p), list(getattr(p, "scale", []))) for name, p in pipe.unet.attn_processors.items()]
    pass1 = MonkeySampler(pipe, config).record(batch, output_type="latent")
    reference = stock_latents(pipe, model, batch, 3, [1.0] * 3)
    torch.testing.assert_close(pass1.images, reference, atol=1e-5, rtol=0)
    assert len(pass1.records[0]) == len(layers) * len(steps)
    tokens = num_image_tokens(pipe.unet)
    assert pass1.records[0][map_key(DEEP_LAYER, 1)].shape == (2, 2, tokens)  # 64 px: 8x8 latent, 2x2 here
    after = [(name, type(p), list(getattr(p, "scale", []))) for name, p in pipe.unet.attn_processors.items()]
    assert after == before


@pytest.mark.parametrize("model", ["tiny_sdxl_plus", "tiny_sdxl_turbo"])
def test_recorded_map_equals_a_hand_softmax_at_a_second_transformer_block(model):
    pipe = load_tiny(model)
    attn = pipe.unet.get_submodule(DEEP_LAYER)
    inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keep_inputs(module, args, kwargs):
        # [rows, HW, C], [rows, 1, T, D]
        inputs.append((args[0].clone(), kwargs["encoder_hidden_states"][1][0].clone()))

    handle = attn.register_forward_pre_hook(keep_inputs, with_kwargs=True)
    try:
        batch = SubjectBatch(PROMPTS, SEEDS, batch_of(pipe).image_embeds, 128, 192, batch_of(pipe).negative_embeds)
        pass1 = MonkeySampler(pipe, knobs(model, capture_steps=[1])).record(batch)
    finally:
        handle.remove()
    assert len(inputs) == 2  # steps 0, 1: pass 1 stopped after its last capture step
    n, tokens = len(PROMPTS), num_image_tokens(pipe.unet)
    hidden, ip_tokens = inputs[1]
    guided = hidden.shape[0] == 2 * n
    assert guided == (GUIDANCE[model] > 1)
    cond = slice(n, 2 * n) if guided else slice(0, n)
    expected = hand_image_token_probs(attn, hidden[cond], ip_tokens[cond].flatten(1, 2))  # [n, 6, T]
    for index in range(n):
        recorded = pass1.records[index][map_key(DEEP_LAYER, 1)]  # 128 x 192 px: 16 x 24 latent, 4 x 6 here
        assert recorded.shape == (4, 6, tokens)
        torch.testing.assert_close(recorded.reshape(24, tokens), expected[index], atol=1e-6, rtol=0)


@pytest.mark.parametrize("model", ["tiny_sdxl", "tiny_sdxl_plus"])
def test_masks_act_only_on_the_mask_steps(model):
    """Adapter on at every step, a zero mask on step 1 only: the stock pipeline with scale 0 at step 1
    (and 1 elsewhere); a full mask on every step: the plain IP-Adapter image."""
    pipe = load_tiny(model)
    batch = batch_of(pipe, PROMPTS[:1], SEEDS[:1])
    every = [0, 1, 2]
    zero_on_one = MonkeySampler(pipe, knobs(model, final_steps=3, ip_steps=every, mask_steps=[1]))
    out = zero_on_one.final(batch, torch.zeros(1, SIZE, SIZE), output_type="latent")
    reference = stock_latents(pipe, model, batch, 3, [1.0, 0.0, 1.0])
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)
    plain = stock_latents(pipe, model, batch, 3, [1.0] * 3)
    assert (plain - reference).abs().max() > 1e-2  # step 1's mask did matter
    full = MonkeySampler(pipe, knobs(model, final_steps=3, ip_steps=every, mask_steps=every))
    ones = full.final(batch, torch.ones(1, SIZE, SIZE), output_type="latent")
    torch.testing.assert_close(ones, plain, atol=1e-5, rtol=0)


def test_the_ip_adapter_baseline_on_the_plus_twin_equals_the_stock_pipeline():
    """Under CFG the plus adapter's unconditional rows get the encoder's hidden states of a zero image
    (as encode_image makes them), not zeros: the baseline's batch equals the stock call to uint8 rounding."""
    import numpy as np
    from conftest import compose_config
    from monkey.baselines.ip_adapter import IPAdapterMethod

    from monkey.methods.base import GenerationRequest
    from monkey.models.profiles import profile_from_config, resolve_runtime
    from monkey.plan import build_plan
    from monkey.prompts import load_prompt_set

    runtime = resolve_runtime(profile_from_config(compose_config("model=tiny_sdxl_plus").model), "cpu", "float32")
    method = IPAdapterMethod("ip", runtime, scale=1.0, num_inference_steps=3, guidance_scale=5.0)
    items = build_plan(
        load_dreambooth()[:1], load_prompt_set("locations", "{subject_word} {location}"), limit_prompts=1
    )
    got = method.generate([GenerationRequest(items[0], items[0].prompt, items[0].seed, SIZE, SIZE)])[0].image
    method.pipe.set_ip_adapter_scale(1.0)
    stock_image = method.pipe(
        prompt=items[0].prompt,
        height=SIZE,
        width=SIZE,
        num_inference_steps=3,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(items[0].seed),
        ip_adapter_image=items[0].source.load_image(),
    ).images[0]
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(stock_image, np.float32), atol=1.0)
