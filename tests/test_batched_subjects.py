"""Several subjects in one pipeline call, and pass 1's early exit from the UNet.

Bound (fp32, CPU, the tiny models at 64 px): an item's final latents move by at most 1e-4 with the
subjects that share its batch (measured: 2.6e-5), its pass-1 maps by at most 1e-6 (measured: 2.7e-7),
its mask not at all, its 8-bit image by at most one level; another subject moves them by far more.
"""

import numpy as np
import pytest
import torch
from conftest import compose_config
from monkey.baselines.ip_adapter import IPAdapterMethod
from monkey_helpers import PAPER_LAYER, load_tiny, settings, subject_embeds, subject_image

from monkey.adapter.sampler import MonkeySampler, SubjectBatch
from monkey.datasets.dreambooth import load_dreambooth
from monkey.item_embeds import rows_for
from monkey.methods.base import GenerationRequest
from monkey.models.profiles import profile_from_config, resolve_runtime
from monkey.plan import build_plan
from monkey.prompts import load_prompt_set
from monkey.subject_embeds import pipeline_image_embeds

MODELS = {"tiny": 8.5, "tiny_sd15": 7.5}  # guidance: LCM's embedded one; real CFG for SD
PROMPTS = ["dog in the snow", "cat on the beach", "bear plushie with a city in the background"]
LATENT_BOUND, MAP_BOUND = 1e-4, 1e-6


def runtime(model: str):
    return resolve_runtime(profile_from_config(compose_config(f"model={model}").model), "cpu", "float32")


@pytest.mark.parametrize("guided", [False, True])
def test_one_subject_rows_are_the_pipelines_own_embeddings(guided):
    """For a one-subject batch the hook hands the UNet the very tensor the pipeline builds itself."""
    pipe = load_tiny("tiny")
    embeds = subject_embeds(pipe, 0)  # [1, 1, D]
    pipeline = pipe.prepare_ip_adapter_image_embeds(None, pipeline_image_embeds(embeds, guided), "cpu", 3, guided)[0]
    assert torch.equal(rows_for(embeds.expand(3, -1, -1), pipeline.shape[0]), pipeline)
    with pytest.raises(RuntimeError, match="5 rows for 3"):
        rows_for(embeds.expand(3, -1, -1), 5)


@pytest.mark.parametrize("model", ["tiny_sd15"])  # CFG: the zero embedding in the unconditional rows
def test_a_mixed_subject_ip_adapter_batch_equals_each_subjects_stock_call(model):
    """Reference: the stock pipeline encoding each item's own subject image itself, one call per item."""
    items = build_plan(
        load_dreambooth()[:3], load_prompt_set("locations", "{subject_word} {location}"), limit_prompts=1
    )
    assert len({item.source.source_id for item in items}) == 3
    method = IPAdapterMethod("ip", runtime(model), scale=1.0, num_inference_steps=4, guidance_scale=MODELS[model])
    results = method.generate([GenerationRequest(item, item.prompt, item.seed, 64, 64) for item in items])
    sources = load_dreambooth()
    stock = []
    for item in items:
        index = next(i for i, source in enumerate(sources) if source.source_id == item.source.source_id)
        image = method.pipe(
            prompt=[item.prompt],
            height=64,
            width=64,
            num_inference_steps=4,
            guidance_scale=MODELS[model],
            generator=[torch.Generator("cpu").manual_seed(item.seed)],
            ip_adapter_image=subject_image(index),
        ).images[0]
        stock.append(np.asarray(image, dtype=np.float32))
    batched = [np.asarray(result.image, dtype=np.float32) for result in results]
    for mine, reference in zip(batched, stock, strict=True):
        assert np.abs(mine - reference).max() <= 1.0  # one uint8 level of rounding at most
    assert np.abs(batched[1] - stock[0]).mean() > 2.0  # a leaked neighbour's subject would show


@pytest.mark.parametrize("model", ["tiny_sd15", "tiny"])  # the order loads each model once
def test_a_monkey_item_does_not_depend_on_the_subjects_beside_it(model):
    """Item (subject 0, prompt 0, seed 5) alone, beside subject 1, and behind subject 2 in row 1."""
    pipe = load_tiny(model)
    embeds = [subject_embeds(pipe, index) for index in range(3)]
    sampler = MonkeySampler(pipe, settings(model))

    def run(subjects: list[int], prompts: list[str], seeds: list[int]):
        batch = SubjectBatch(prompts, seeds, torch.cat([embeds[i] for i in subjects]), 64, 64)
        return sampler(batch, output_type="latent")

    alone = run([0], PROMPTS[:1], [5])
    for together, row in [(run([0, 1], PROMPTS[:2], [5, 6]), 0), (run([2, 0], PROMPTS[2::-2], [7, 5]), 1)]:
        torch.testing.assert_close(together.images[row], alone.images[0], atol=LATENT_BOUND, rtol=0)
        for key, values in alone.pass1.records[0].items():
            torch.testing.assert_close(together.pass1.records[row][key], values, atol=MAP_BOUND, rtol=0)
        assert torch.equal(together.image_masks[row], alone.image_masks[0])
    other = run([1], PROMPTS[:1], [5])  # the same prompt and seed with another subject
    assert (other.images[0] - alone.images[0]).abs().max() > 100 * LATENT_BOUND


def test_pass_one_early_exit_keeps_the_maps_and_images_and_skips_the_layers_after_the_capture_layer():
    pipe = load_tiny("tiny")
    batch = SubjectBatch(PROMPTS[:2], [5, 6], torch.cat([subject_embeds(pipe, 0), subject_embeds(pipe, 1)]), 64, 64)
    counts = {"conv_out": 0, "capture": 0}  # the UNet's last layer; the capture layer's output projection
    hooks = [
        pipe.unet.conv_out.register_forward_hook(lambda *_: counts.__setitem__("conv_out", counts["conv_out"] + 1)),
        pipe.unet.get_submodule(PAPER_LAYER).to_out[0].register_forward_hook(
            lambda *_: counts.__setitem__("capture", counts["capture"] + 1)
        ),
    ]
    try:
        whole = MonkeySampler(pipe, settings("tiny"), early_exit=False)(batch, output_type="latent")
        assert counts == {"conv_out": 3 + 8, "capture": 3 + 8}
        counts.update(conv_out=0, capture=0)
        early = MonkeySampler(pipe, settings("tiny"))(batch, output_type="latent")
        assert counts == {"conv_out": 2 + 8, "capture": 3 + 8}  # the capture layer ran, the output layer did not
    finally:
        for hook in hooks:
            hook.remove()
    assert torch.equal(early.images, whole.images) and torch.equal(early.image_masks, whole.image_masks)
    for mine, reference in zip(early.pass1.records, whole.pass1.records, strict=True):
        assert mine.keys() == reference.keys() and all(torch.equal(mine[k], reference[k]) for k in mine)
