"""Mask extraction against hand computations; grids against the UNet's own feature-map shapes."""

import pytest
import torch
from monkey_helpers import load_tiny

from monkey.adapter.capture import attn2_layers, map_key
from monkey.adapter.masks import DegenerateMaskError, extract_mask, layer_grid
from monkey.adapter.sampler import MonkeySampler
from monkey.adapter.settings import MonkeySettings
from monkey.errors import ConfigError

FINE, COARSE = (
    "up_blocks.2.attentions.0.transformer_blocks.0.attn2",
    "up_blocks.1.attentions.1.transformer_blocks.0.attn2",
)


def record_of(maps: dict[tuple[str, int], torch.Tensor], tokens: int = 4, token: int = 1) -> dict[str, torch.Tensor]:
    """A pass-1 record whose `token` channel holds the given [h, w] maps (other tokens: noise)."""
    record = {}
    generator = torch.Generator().manual_seed(0)
    for (layer, step), values in maps.items():
        grid = torch.rand(*values.shape, tokens, generator=generator)
        grid[..., token] = values
        record[map_key(layer, step)] = grid
    return record


def test_layer_grids_match_the_unets_feature_maps_for_non_square_sizes(tiny_pipe):
    unet = tiny_pipe.unet
    seen: dict[str, tuple[int, int]] = {}

    def keep_grid(name: str):
        def hook(module, args) -> None:  # a Transformer2DModel's input is the [B, C, h, w] feature map
            seen[name] = tuple(args[0].shape[-2:])

        return hook

    handles = [
        unet.get_submodule(name.rsplit(".transformer_blocks", 1)[0]).register_forward_pre_hook(keep_grid(name))
        for name in attn2_layers(unet)
    ]
    try:
        for height, width in [(64, 96), (72, 120), (136, 56)]:
            seen.clear()
            latent = torch.zeros(1, 4, height // 8, width // 8)
            with torch.no_grad():
                unet(
                    latent,
                    1,
                    encoder_hidden_states=torch.zeros(1, 3, 32),
                    timestep_cond=torch.zeros(1, 32),
                    added_cond_kwargs={"image_embeds": [torch.zeros(1, 1, 24)]},
                )
            assert len(seen) == len(attn2_layers(unet)) == 16  # SD1.5's layout
            for grid in seen.values():
                assert layer_grid(grid[0] * grid[1], (height // 8, width // 8)) == grid
    finally:
        for handle in handles:
            handle.remove()


def test_mean_averages_layers_and_steps_before_one_threshold():
    coarse_1 = torch.tensor([[0.0, 4.0], [2.0, 2.0]])  # 2x2 grid, shown on the 4x4 grid as 2x2 blocks
    fine_1 = torch.arange(16.0).reshape(4, 4) / 4
    coarse_2 = torch.tensor([[1.0, 1.0], [0.0, 3.0]])
    fine_2 = torch.zeros(4, 4)
    record = record_of({(COARSE, 1): coarse_1, (FINE, 1): fine_1, (COARSE, 2): coarse_2, (FINE, 2): fine_2})
    big = lambda m: m.repeat_interleave(2, 0).repeat_interleave(2, 1)  # noqa: E731
    combined = ((big(coarse_1) + fine_1) / 2 + (big(coarse_2) + fine_2) / 2) / 2
    normalised = (combined - combined.min()) / (combined.max() - combined.min())
    settings = MonkeySettings(layers=[COARSE, FINE], token=1, capture_steps=[1, 2], threshold=0.5)
    result = extract_mask(record, settings)
    torch.testing.assert_close(result.attention, normalised)
    assert torch.equal(result.mask, (normalised > 0.5).float())
    assert 0 < result.mask.sum() < 16 and not result.degenerate
    soft = extract_mask(record, MonkeySettings(layers=[COARSE, FINE], capture_steps=[1, 2], soft=True))
    torch.testing.assert_close(soft.mask, normalised)


def test_union_ors_the_per_step_thresholded_maps():
    step_1 = torch.tensor([[0.0, 1.0, 0.2], [0.9, 0.1, 0.3]])  # above 0.5 after min-max: (0,1), (1,0)
    step_2 = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 2.0]])  # above 0.5: (0,0) only (2/5 = 0.4)
    record = record_of({(COARSE, 1): step_1, (COARSE, 2): step_2})
    union = extract_mask(record, MonkeySettings(layers=[COARSE], capture_steps=[1, 2], combine="union"))
    assert torch.equal(union.mask, torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    mean = extract_mask(record, MonkeySettings(layers=[COARSE], capture_steps=[1, 2], combine="mean"))
    assert not torch.equal(mean.mask, union.mask)  # the two rules differ on this input


@pytest.mark.parametrize("bad", [torch.full((2, 3), 0.25), torch.tensor([[0.1, float("nan"), 0.3], [0.0, 0.2, 0.9]])])
@pytest.mark.parametrize("combine", ["mean", "union"])
def test_degenerate_map_follows_the_policy(bad, combine):
    good = torch.tensor([[0.0, 1.0, 0.2], [0.9, 0.1, 0.3]])
    record = record_of({(COARSE, 1): bad, (COARSE, 2): bad if combine == "mean" else good})
    full = extract_mask(record, MonkeySettings(layers=[COARSE], capture_steps=[1, 2], combine=combine))
    assert full.degenerate and full.fallback == "full"
    assert torch.equal(full.mask, torch.ones(2, 3))
    assert full.info() == {
        "mask_degenerate": True,
        "mask_fallback": "full",
        "mask_area": 1.0,
        "mask_degenerate_reason": "constant",
    }
    strict = MonkeySettings(layers=[COARSE], capture_steps=[1, 2], combine=combine, degenerate="error")
    with pytest.raises(DegenerateMaskError, match="token 1"):
        extract_mask(record, strict, label="dreambooth/dog/00/p00/s0")


def test_config_errors_name_the_key_and_the_allowed_values(tiny_pipe):
    with pytest.raises(ConfigError, match=r"down_blocks\.0\.attentions\.0\.transformer_blocks\.0\.attn2"):
        MonkeySampler(tiny_pipe, MonkeySettings(layers=["up_blocks.9.attn2"]))
    with pytest.raises(ConfigError, match=r"capture_steps has steps \[4\] outside the range 0\.\.3"):
        MonkeySampler(tiny_pipe, MonkeySettings(capture_steps=[1, 4]))
    with pytest.raises(ConfigError, match=r"mask_steps has steps \[8, 9\] outside the range 0\.\.7"):
        MonkeySampler(tiny_pipe, MonkeySettings(mask_steps=[2, 8, 9]))
    with pytest.raises(ConfigError, match=r"token=4 is outside 0\.\.3"):
        MonkeySampler(tiny_pipe, MonkeySettings(token=4))
    with pytest.raises(ConfigError, match="choose one of"):
        MonkeySettings(combine="max")
    with pytest.raises(ConfigError, match="threshold"):
        MonkeySettings(threshold=1.5)


def test_pndm_runs_one_more_loop_step_and_the_range_says_so():
    pipe = load_tiny("tiny_sd15")
    MonkeySampler(pipe, MonkeySettings(ip_steps=[8], mask_steps=[8], guidance_scale=7.5))  # 9 loop steps for 8
    with pytest.raises(ConfigError, match=r"outside the range 0\.\.8: the sampling loop runs 9 steps"):
        MonkeySampler(pipe, MonkeySettings(ip_steps=[9], guidance_scale=7.5))
