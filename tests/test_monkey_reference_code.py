"""MONKEY's `paper` preset against the reference code (jamesBaker361/monkey, ipattn.py / main_seg.py), and
the pass-1 cache key against everything that changes a map.

Each test checks against an independent computation written out here (a hand softmax, the stock
pipeline, hand-thresholded maps). Planted bugs each test was seen to catch (then reverted):
- `attention_scale=none` still multiplying by attn.scale (capture.py)       -> test_unscaled_map...
- (threshold rules and empty masks: tests/test_monkey_mask_rules.py)
- `paper_bug_final_all_steps` ignored in the sampler's step plan             -> test_all_steps_flag...
- pass 1 run at a fixed scale instead of `initial_scale`                     -> test_initial_scale...
- `attention_scale`, CAPTURE_FORMAT or the capture-code digest left out of
  the pass-1 key, guidance left out of the pass-2 prefix key (sharing.py)   -> test_cache_keys..., test_a_changed...
- the paper preset's fixed seed not applied (presets.py)                     -> test_paper_preset...
"""

import pytest
import torch
from diffusers.models.attention_processor import Attention
from monkey_helpers import PAPER_LAYER, make_batch, settings, stock_latents

from monkey.adapter import sharing
from monkey.adapter.capture import map_key
from monkey.adapter.sampler import MonkeySampler
from monkey.adapter.settings import MonkeySettings
from monkey.adapter.sharing import Pass1Cache, PrefixCache, SharedWork, ShareSettings
from monkey.errors import ConfigError
from monkey.methods.presets import method_spec
from monkey.runner import plan_from_config

PROMPTS, SEEDS = ["dog in the snow", "dog on the beach"], [3, 4]


def hand_probs(attn: Attention, hidden: torch.Tensor, ip_tokens: torch.Tensor, scale: float) -> torch.Tensor:
    """Per head exp(s - max) / sum of s = (x W_q^T)(y W_kip^T)^T * scale over the image tokens, then the
    head average, in float64. hidden [b, HW, C], ip_tokens [b, T, D] -> [b, HW, T]."""
    q = hidden.double() @ attn.to_q.weight.double().T
    k = ip_tokens.double() @ attn.processor.to_k_ip[0].weight.double().T
    heads, c = attn.heads, q.shape[-1]
    d = c // heads
    out = torch.zeros(q.shape[0], q.shape[1], k.shape[1], dtype=torch.float64)
    for h in range(heads):
        s = q[..., h * d : (h + 1) * d] @ k[..., h * d : (h + 1) * d].transpose(1, 2) * scale
        e = torch.exp(s - s.max(dim=-1, keepdim=True).values)
        out += e / e.sum(dim=-1, keepdim=True)
    return (out / heads).float()


def test_unscaled_map_is_the_softmax_without_one_over_sqrt_d(tiny_pipe):
    attn = tiny_pipe.unet.get_submodule(PAPER_LAYER)
    inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keep_inputs(module, args, kwargs):
        inputs.append((args[0].clone(), kwargs["encoder_hidden_states"][1][0].clone()))

    batch = make_batch(tiny_pipe, PROMPTS, SEEDS)
    records = {}
    handle = attn.register_forward_pre_hook(keep_inputs, with_kwargs=True)
    try:
        for mode in ("sdpa", "none"):
            inputs.clear()
            config = settings("tiny", layers=[PAPER_LAYER], capture_steps=[1], attention_scale=mode)
            records[mode] = MonkeySampler(tiny_pipe, config).record(batch).records
    finally:
        handle.remove()
    hidden, ip_tokens = inputs[1]  # step 1; LCM without CFG: every row is conditional
    head_dim = attn.to_q.weight.shape[0] // attn.heads
    for mode, scale in (("sdpa", head_dim**-0.5), ("none", 1.0)):
        expected = hand_probs(attn, hidden, ip_tokens.flatten(1, 2), scale)  # [n, HW, 4]
        for index in range(len(PROMPTS)):
            recorded = records[mode][index][map_key(PAPER_LAYER, 1)]
            torch.testing.assert_close(recorded.reshape(expected[index].shape), expected[index], atol=1e-6, rtol=0)
    sharp, soft = records["none"][0][map_key(PAPER_LAYER, 1)], records["sdpa"][0][map_key(PAPER_LAYER, 1)]
    assert (sharp - soft).abs().max() > 1e-3  # the temperature matters on these inputs
    with pytest.raises(ConfigError, match=r"method.attention_scale='half'.*\['sdpa', 'none'\]"):
        MonkeySettings(attention_scale="half")


def test_all_steps_flag_puts_adapter_and_mask_on_every_final_step(tiny_pipe):
    attn = tiny_pipe.unet.get_submodule(PAPER_LAYER)
    seen: list[tuple[float, bool]] = []

    def watch(module, args, kwargs) -> None:
        seen.append((module.processor.scale[0], "ip_adapter_masks" in kwargs))

    batch = make_batch(tiny_pipe, PROMPTS[:1], SEEDS[:1])
    handle = attn.register_forward_pre_hook(watch, with_kwargs=True)
    try:
        flagged = MonkeySampler(tiny_pipe, settings("tiny", paper_bug_final_all_steps=True, ip_scale=0.7))
        flagged.final(batch, torch.ones(1, 64, 64))
    finally:
        handle.remove()
    assert seen == [(0.7, True)] * 8  # the default ip_steps/mask_steps (2..5) are overridden
    assert flagged.mask_free_steps() == 0  # nothing before the first masked step to share
    # the same images as naming every step explicitly
    every = list(range(8))
    explicit = MonkeySampler(tiny_pipe, settings("tiny", ip_steps=every, mask_steps=every))
    mask = torch.zeros(1, 64, 64)
    mask[:, :32] = 1
    flagged = MonkeySampler(tiny_pipe, settings("tiny", paper_bug_final_all_steps=True))
    assert torch.equal(
        flagged.final(batch, mask, output_type="latent"), explicit.final(batch, mask, output_type="latent")
    )


def test_initial_scale_reaches_pass_one(tiny_pipe):
    """Pass 1 run to its end at initial_scale=0.4 is the stock pipeline at IP scale 0.4, not at 1.0."""
    batch = make_batch(tiny_pipe, PROMPTS[:1], SEEDS[:1])
    config = settings("tiny", initial_scale=0.4, save_pass1_image=True)
    latents = MonkeySampler(tiny_pipe, config).record(batch, output_type="latent").images
    torch.testing.assert_close(latents, stock_latents(tiny_pipe, "tiny", batch, steps=4, scale=0.4), atol=1e-6, rtol=0)
    assert (latents - stock_latents(tiny_pipe, "tiny", batch, steps=4, scale=1.0)).abs().max() > 1e-2


def test_cache_keys_follow_the_map_computation_and_guidance(monkeypatch):
    base = {"identity": 1, "prompts": ["a"], "seeds": [1], "subject": "s", "size": [64, 64]}
    keys = Pass1Cache.item_keys(base, settings("tiny"))
    assert Pass1Cache.item_keys(base, settings("tiny", attention_scale="none")) != keys
    assert Pass1Cache.item_keys(base, settings("tiny", threshold_rule="ge")) == keys  # a mask setting, not a map's
    monkeypatch.setattr(sharing, "CAPTURE_FORMAT", sharing.CAPTURE_FORMAT + 1)
    assert Pass1Cache.item_keys(base, settings("tiny")) != keys
    monkeypatch.undo()
    monkeypatch.setattr(sharing, "capture_code_digest", lambda: "edited capture.py")
    assert Pass1Cache.item_keys(base, settings("tiny")) != keys
    monkeypatch.undo()
    assert Pass1Cache.item_keys(base, settings("tiny")) == keys
    prefix = PrefixCache.keys(base, settings("tiny"), [0.0, 0.0])
    assert PrefixCache.keys(base, settings("tiny", guidance_scale=3.0), [0.0, 0.0])[0] != prefix[0]


def test_a_changed_capture_setting_misses_the_pass_one_cache(tiny_pipe, tmp_path, monkeypatch):
    batch = make_batch(tiny_pipe, PROMPTS[:1], SEEDS[:1])
    work = SharedWork(ShareSettings(dir=str(tmp_path), pass2_prefix=False), {"test": "identity"})
    first = MonkeySampler(tiny_pipe, settings("tiny"), work)(batch, output_type="latent")
    assert first.sharing["pass1"] == "computed"
    again = MonkeySampler(tiny_pipe, settings("tiny"), work)(batch, output_type="latent")
    assert again.sharing["pass1"] == "cache"
    sharp = MonkeySampler(tiny_pipe, settings("tiny", attention_scale="none"), work)(batch, output_type="latent")
    uncached = MonkeySampler(tiny_pipe, settings("tiny", attention_scale="none"))(batch, output_type="latent")
    assert sharp.sharing["pass1"] == "computed"
    assert torch.equal(sharp.masks[0].attention, uncached.masks[0].attention)
    monkeypatch.setattr(sharing, "capture_code_digest", lambda: "capture.py of a newer release")
    upgraded = MonkeySampler(tiny_pipe, settings("tiny"), work)(batch, output_type="latent")
    assert upgraded.sharing["pass1"] == "computed"


def test_paper_preset_runs_the_reference_codes_choices(make_config):
    fair = method_spec(make_config("method=monkey"))
    paper = method_spec(make_config("method=monkey", "preset=paper"))
    expected = {
        "combine": "union",
        "attention_scale": "none",
        "threshold_rule": "ge",
        "initial_scale": 0.5,
        "paper_bug_final_all_steps": True,
    }
    assert {key: paper.method[key] for key in expected} == expected
    assert {key: fair.method[key] for key in expected} == {
        "combine": "mean",
        "attention_scale": "sdpa",
        "threshold_rule": "gt",
        "initial_scale": 1.0,
        "paper_bug_final_all_steps": False,
    }
    items = plan_from_config(make_config("plan.limit.subjects=2", "plan.limit.prompts=2"))
    assert [paper.seed_for(item) for item in items] == [123] * len(items)
    assert [fair.seed_for(item) for item in items] == [item.seed for item in items]
    assert len({item.seed for item in items}) > 1
    assert paper.describe()["fixed_seed"] == 123 and "fixed_seed" not in fair.describe()
    with pytest.raises(ConfigError, match=r"paper.seed='x'"):
        method_spec(make_config("method=monkey", "preset=paper", "method.paper.seed=x"))
