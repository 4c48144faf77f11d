"""IP-Adapter generation: scale 0 is text-only, scale 1 is not, seeds reproduce, batches don't leak."""

import numpy as np
import pytest
import torch
from diffusers import LatentConsistencyModelPipeline
from monkey.baselines.ip_adapter import IPAdapterMethod

from monkey.datasets.dreambooth import load_dreambooth
from monkey.errors import ConfigError
from monkey.methods.base import GenerationRequest
from monkey.models.tiny import materialize_tiny
from monkey.plan import build_plan
from monkey.prompts import load_prompt_set

STEPS, GUIDANCE, SIZE = 4, 8.5, 64


@pytest.fixture(scope="module")
def items():
    sources = load_dreambooth()
    prompts = load_prompt_set("locations", "{subject_word} {location}")
    return build_plan(sources, prompts, limit_subjects=2, limit_prompts=2)


def requests_for(items):
    return [GenerationRequest(item, item.prompt, item.seed, SIZE, SIZE) for item in items]


def pixels(result) -> np.ndarray:
    return np.asarray(result.image, dtype=np.float32)


def method(tiny_runtime, scale: float) -> IPAdapterMethod:
    return IPAdapterMethod("ip", tiny_runtime, scale=scale, num_inference_steps=STEPS, guidance_scale=GUIDANCE)


def text_only_reference(item) -> np.ndarray:
    """Independent reference: a pipeline loaded without any IP-Adapter, same prompt and seed."""
    pipe = LatentConsistencyModelPipeline.from_pretrained(materialize_tiny("lcm").pipeline, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        item.prompt,
        height=SIZE,
        width=SIZE,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        generator=torch.Generator("cpu").manual_seed(item.seed),
    ).images[0]
    return np.asarray(image, dtype=np.float32)


def test_scale_zero_equals_text_only_and_scale_one_differs(tiny_runtime, items):
    reference = text_only_reference(items[0])
    at_zero = pixels(method(tiny_runtime, 0.0).generate(requests_for(items[:1]))[0])
    at_one = pixels(method(tiny_runtime, 1.0).generate(requests_for(items[:1]))[0])
    np.testing.assert_allclose(at_zero, reference, atol=1.0)  # uint8 rounding at most
    assert np.abs(at_one - reference).mean() > 2.0


def test_same_seed_reproduces_other_seed_differs(tiny_runtime, items):
    ip = method(tiny_runtime, 1.0)
    first = pixels(ip.generate(requests_for(items[:1]))[0])
    again = pixels(ip.generate(requests_for(items[:1]))[0])
    assert np.array_equal(first, again)
    other = GenerationRequest(items[0], items[0].prompt, items[0].seed + 1, SIZE, SIZE)
    assert np.abs(pixels(ip.generate([other])[0]) - first).mean() > 2.0


def test_batch_equals_one_by_one(tiny_runtime, items):
    """Each batch element keeps its own subject embedding, prompt and noise (a batch of two subjects
    once leaked: diffusers repeats the embeds tensor once per prompt). Batched float sums differ from
    single ones by ~1e-6, so at most one uint8 level after rounding."""
    ip = method(tiny_runtime, 1.0)
    batch = [pixels(r) for r in ip.generate(requests_for(items))]
    single = [pixels(ip.generate(requests_for([item]))[0]) for item in items]
    for b, s in zip(batch, single, strict=True):
        assert np.abs(b - s).max() <= 1.0
    assert np.abs(batch[0] - single[1]).mean() > 5.0  # a swapped element would show


def test_subject_embedding_computed_once_per_subject(tiny_runtime, items):
    ip = method(tiny_runtime, 0.5)
    for item in items:  # 2 subjects x 2 prompts
        ip.generate(requests_for([item]))
    assert ip.embedder.computed == 2


def test_one_call_refuses_items_of_two_sizes(tiny_runtime, items):
    """A batch is one pipeline call, so one height and width (the same check serves ip_adapter_multi)."""
    mixed = [*requests_for(items[:1]), GenerationRequest(items[1], items[1].prompt, items[1].seed, SIZE, 2 * SIZE)]
    with pytest.raises(ConfigError) as refused:
        method(tiny_runtime, 1.0).generate(mixed)
    assert str(refused.value) == "one IP-Adapter batch must share one image size, got [(64, 64), (64, 128)]"
