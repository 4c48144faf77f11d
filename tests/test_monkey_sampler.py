"""The two-pass sampler against stock pipeline references: masks of ones and zeros, per-item masks in a
batch, early stop of pass 1, per-step switching, seeds, batches, cached pass-1 records."""

import pytest
import torch
from monkey_helpers import (
    PAPER_LAYER,
    UNetCalls,
    ip_processor_state,
    load_tiny,
    loop_range,
    make_batch,
    settings,
    stock_latents,
)

from monkey.adapter.capture import map_key
from monkey.adapter.sampler import MonkeySampler
from monkey.cache import ContentCache

MODELS = ["tiny", "tiny_sd15"]
PROMPTS, SEEDS = ["dog in the snow", "dog on the beach", "dog with a city in the background"], [5, 6, 7]


@pytest.mark.parametrize("model", MODELS)
def test_masks_of_ones_and_zeros_give_plain_ip_adapter_and_text_only(model):
    """ip_steps = mask_steps = every step, one batch with masks [ones, zeros]: item 0 is the plain
    IP-Adapter image, item 1 the text-only image (each item gets its own mask)."""
    pipe = load_tiny(model)
    every = loop_range(pipe, 4)
    sampler = MonkeySampler(pipe, settings(model, final_steps=4, ip_steps=every, mask_steps=every))
    batch = make_batch(pipe, PROMPTS[:2], SEEDS[:2])
    plain = stock_latents(pipe, model, batch, steps=4, scale=1.0)
    text_only = stock_latents(pipe, model, batch, steps=4, scale=0.0)
    assert (plain - text_only).abs().max() > 1.0  # the adapter matters on these inputs
    mixed = sampler.final(batch, torch.stack([torch.ones(64, 64), torch.zeros(64, 64)]), output_type="latent")
    torch.testing.assert_close(mixed[0], plain[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(mixed[1], text_only[1], atol=1e-6, rtol=0)


def test_pass_one_stops_after_its_last_capture_step_unless_its_image_is_asked(tiny_pipe):
    """Pass 1 leaves its last capture step's evaluation right after the recorded layer: the UNet's
    forward (counted when it returns) completes 2 times in pass 1 and 8 in pass 2."""
    batch = make_batch(tiny_pipe, PROMPTS[:1], SEEDS[:1])
    calls = UNetCalls(tiny_pipe)
    try:
        output = MonkeySampler(tiny_pipe, settings("tiny"))(batch)
        assert calls.count == 2 + 8  # steps 0-1 of pass 1 whole, step 2 up to the capture layer; all 8 of pass 2
        assert output.pass1.images is None
        calls.count = 0
        with_image = MonkeySampler(tiny_pipe, settings("tiny", save_pass1_image=True)).record(batch)
        assert calls.count == 4 and with_image.images[0].size == (64, 64)
    finally:
        calls.handle.remove()


def test_scale_and_mask_switch_per_step_and_are_restored(tiny_pipe):
    attn = tiny_pipe.unet.get_submodule(PAPER_LAYER)
    seen: list[tuple[float, bool]] = []

    def watch(module, args, kwargs) -> None:
        seen.append((module.processor.scale[0], "ip_adapter_masks" in kwargs))

    before = ip_processor_state(tiny_pipe)
    handle = attn.register_forward_pre_hook(watch, with_kwargs=True)
    try:
        config = settings("tiny", ip_steps=[1, 2, 3, 6], mask_steps=[2, 3, 4], ip_scale=0.7)
        MonkeySampler(tiny_pipe, config).final(make_batch(tiny_pipe, PROMPTS[:1], SEEDS[:1]), torch.ones(1, 64, 64))
    finally:
        handle.remove()
    assert [scale for scale, _ in seen] == [0.0, 0.7, 0.7, 0.7, 0.0, 0.0, 0.7, 0.0]
    assert [masked for _, masked in seen] == [False, False, True, True, False, False, False, False]
    assert ip_processor_state(tiny_pipe) == before


def test_a_failing_pass_restores_the_shared_pipeline(tiny_pipe):
    before = ip_processor_state(tiny_pipe)

    def fail_at_step_two(module, args, kwargs) -> None:
        if module.calls == 2:
            raise KeyboardInterrupt
        module.calls += 1

    tiny_pipe.unet.calls = 0
    handle = tiny_pipe.unet.register_forward_pre_hook(fail_at_step_two, with_kwargs=True)
    try:
        with pytest.raises(KeyboardInterrupt):
            MonkeySampler(tiny_pipe, settings("tiny", initial_scale=0.3)).record(
                make_batch(tiny_pipe, PROMPTS[:1], SEEDS[:1])
            )
    finally:
        handle.remove()
        del tiny_pipe.unet.calls
    assert ip_processor_state(tiny_pipe) == before


def test_same_seed_same_image_other_seed_differs(tiny_pipe):
    sampler = MonkeySampler(tiny_pipe, settings("tiny"))
    first = sampler(make_batch(tiny_pipe, PROMPTS[:1], [11]), output_type="latent")
    again = sampler(make_batch(tiny_pipe, PROMPTS[:1], [11]), output_type="latent")
    other = sampler(make_batch(tiny_pipe, PROMPTS[:1], [12]), output_type="latent")
    assert torch.equal(first.images, again.images) and torch.equal(first.image_masks, again.image_masks)
    assert (first.images - other.images).abs().max() > 0.5


@pytest.mark.parametrize(("model", "items"), [("tiny", 3), ("tiny_sd15", 2)])
def test_a_batch_with_its_own_mask_per_item_equals_one_by_one(model, items):
    """Batched float sums differ from single ones by ~1e-6; maps stay within 1e-5, masks identical."""
    pipe = load_tiny(model)
    prompts, seeds = PROMPTS[:items], SEEDS[:items]
    sampler = MonkeySampler(
        pipe, settings(model, layers=[PAPER_LAYER, "up_blocks.2.attentions.1.transformer_blocks.0.attn2"])
    )
    together = sampler(make_batch(pipe, prompts, seeds, height=64, width=96), output_type="latent")
    for index, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True)):
        alone = sampler(make_batch(pipe, [prompt], [seed], height=64, width=96), output_type="latent")
        for key, values in alone.pass1.records[0].items():
            torch.testing.assert_close(together.pass1.records[index][key], values, atol=1e-5, rtol=0)
        assert torch.equal(together.image_masks[index], alone.image_masks[0])
        torch.testing.assert_close(together.images[index], alone.images[0], atol=2e-4, rtol=1e-5)
    assert len({tuple(m.flatten().tolist()) for m in together.image_masks}) > 1  # items do have their own masks


def test_cached_records_replace_pass_one_and_degenerate_ones_fall_back(tiny_pipe, tmp_path):
    sampler = MonkeySampler(tiny_pipe, settings("tiny"))
    batch = make_batch(tiny_pipe, PROMPTS[:2], SEEDS[:2])
    fresh = sampler(batch, output_type="latent")
    cache = ContentCache(tmp_path, "monkey-pass1")
    for index, record in enumerate(fresh.pass1.records):
        cache.put_tensors(f"item{index}", record)
    cached = cache.get_tensors("item0")
    flat = {key: torch.full_like(values, 0.25) for key, values in fresh.pass1.records[1].items()}
    assert map_key(PAPER_LAYER, 2) in flat
    calls = UNetCalls(tiny_pipe)
    try:
        replay = sampler(batch, records=[cached, flat], output_type="latent")
    finally:
        calls.handle.remove()
    assert calls.count == 8 and replay.pass1 is None  # pass 2 only
    assert torch.equal(replay.image_masks[0], fresh.image_masks[0])
    torch.testing.assert_close(replay.images[0], fresh.images[0], atol=1e-6, rtol=0)
    assert [m.info()["mask_degenerate"] for m in replay.masks] == [False, True]
    assert replay.masks[1].fallback == "full" and bool(replay.image_masks[1].eq(1).all())
