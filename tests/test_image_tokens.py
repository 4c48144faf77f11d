"""Any number of image tokens: `method.token` as a list sums the tokens' maps, bad values fail with the
key, the value and the allowed range, and the token ablation's range is the loaded adapter's count."""

import pytest
import torch
from conftest import compose_config
from hydra import compose, initialize_config_module
from monkey_helpers import load_tiny
from omegaconf import OmegaConf

from monkey.adapter.capture import num_image_tokens
from monkey.adapter.masks import extract_mask, map_key
from monkey.adapter.sampler import MonkeySampler
from monkey.adapter.settings import MonkeySettings
from monkey.errors import ConfigError
from monkey.methods.base import build_method
from monkey.models.adapter_tokens import image_token_count
from monkey.models.profiles import profile_from_config

LAYER = "up_blocks.1.attentions.1.transformer_blocks.0.attn2"


def test_a_token_list_sums_its_maps_before_the_steps_are_averaged():
    generator = torch.Generator().manual_seed(0)
    record = {map_key(LAYER, step): torch.rand(4, 5, 16, generator=generator) for step in (1, 2)}
    settings = MonkeySettings(token=[3, 9, 14], capture_steps=[1, 2], threshold=0.5)
    got = extract_mask(record, settings)
    # written out: per step the three tokens' maps added, the steps averaged, min-max, > 0.5
    summed = [
        record[map_key(LAYER, s)][..., 3] + record[map_key(LAYER, s)][..., 9] + record[map_key(LAYER, s)][..., 14]
        for s in (1, 2)
    ]
    mean = (summed[0] + summed[1]) / 2
    normalised = (mean - mean.min()) / (mean.max() - mean.min())
    torch.testing.assert_close(got.attention, normalised)
    assert torch.equal(got.mask, (normalised > 0.5).float())
    single = extract_mask(record, MonkeySettings(token=9, capture_steps=[1, 2]))
    assert not torch.equal(single.mask, got.mask)  # the other two tokens count


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ([1, 4], r"method\.token=\[1, 4\] is outside 0\.\.3 \(the IP-Adapter has 4 image tokens\)"),
        ([0, 1, 2, 3], r"method\.token=\[0, 1, 2, 3\] lists all 4 image tokens"),
        (7, r"method\.token=7 is outside 0\.\.3"),
    ],
)
def test_tokens_outside_the_loaded_adapter_name_the_key_value_and_range(tiny_pipe, token, message):
    with pytest.raises(ConfigError, match=message):
        MonkeySampler(tiny_pipe, MonkeySettings(token=token))


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ([1, 1], "lists a token twice"),
        ([], "non-empty"),
        ("1", "index or a list"),
        ([1, True], "non-empty list"),
        ([-1], "negative"),
    ],
)
def test_malformed_token_values_are_refused_when_the_method_is_built(token, message):
    with pytest.raises(ConfigError, match=rf"method\.token=.*{message}"):
        MonkeySettings(token=token)


def test_a_token_list_on_the_command_line_reaches_the_sampler(tiny_runtime):
    cfg = compose_config("method=monkey", "method.token=[2,0]")
    method = build_method(cfg.method, tiny_runtime)
    assert method.settings.tokens == (2, 0)


def sweep(*overrides: str) -> str:
    with initialize_config_module(config_module="monkey.conf", version_base="1.3"):
        cfg = compose("config", overrides=["experiment=ablate_token", *overrides], return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)["method.token"]


@pytest.mark.parametrize(("model", "count"), [("tiny", 4), ("tiny_sdxl_plus", 16)])
def test_the_token_ablation_sweeps_every_token_of_the_loaded_adapter(model, count):
    assert sweep(f"model={model}") == ",".join(str(t) for t in range(count))
    # a method with its own model (monkey_sdxl) counts that model's tokens, not the run's
    assert sweep("method=monkey_sdxl", f"method.model={model}") == ",".join(str(t) for t in range(count))
    profile = profile_from_config(compose_config(f"model={model}").model)
    assert image_token_count(profile) == num_image_tokens(load_tiny(model).unet) == count
