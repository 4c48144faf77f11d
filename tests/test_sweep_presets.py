"""The sweep presets (conf/experiment/ablate_*.yaml, sweep_*.yaml): each is a multirun over the
parameter it names, and every one of its variants builds a valid method on the demo profile."""

from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from monkey.baselines.ip_adapter import IPAdapterMethod
from omegaconf import OmegaConf

from monkey.adapter.capture import attn2_layers
from monkey.adapter.method import MonkeyMethod
from monkey.methods.base import build_method

# preset -> (swept key, number of variants, run.name)
PRESETS = {
    "ablate_token": ("method.token", 4, "ablate_token"),
    "ablate_layer": ("method.layers", 16, "ablate_layer"),
    "ablate_capture_steps": ("method.capture_steps", 9, "ablate_capture_steps"),
    "ablate_mask_steps": ("method.mask_steps", 6, "ablate_mask_steps"),
    "ablate_threshold": ("method.threshold", 5, "ablate_threshold"),
    "ablate_combine": ("method.combine", 2, "ablate_combine"),
    "sweep_ip_scale": ("method.scale", 11, "ip_scale"),
    "sweep_monkey_scale": ("method.ip_scale", 11, "ip_scale"),
}


def compose_preset(name: str, *overrides: str, hydra: bool = False):
    with initialize_config_module(config_module="monkey.conf", version_base="1.3"):
        return compose("config", overrides=[f"experiment={name}", *overrides], return_hydra_config=hydra)


def sweep_values(name: str, parsed: bool = False) -> dict[str, list]:
    """The preset's sweep as Hydra reads it: command-line strings, or the parsed values."""
    params = compose_preset(name, hydra=True).hydra.sweeper.params
    overrides = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    return {o.key_or_group: list(o.sweep_iterator() if parsed else o.sweep_string_iterator()) for o in overrides}


def test_every_preset_sweeps_its_parameter_and_every_variant_builds(tiny_runtime, tiny_pipe):
    for name, (key, count, run_name) in PRESETS.items():
        sweeps = sweep_values(name)
        assert list(sweeps) == [key] and len(sweeps[key]) == count, name
        for value in sweeps[key]:
            cfg = compose_preset(name, f"{key}={value}")
            assert cfg.run.name == run_name and cfg.model.tiny and cfg.eval.name == "tiny", name
            assert list(cfg.run.stages) == ["generate", "evaluate", "report"], name
            method = build_method(cfg.method, tiny_runtime)
            assert isinstance(method, IPAdapterMethod if name == "sweep_ip_scale" else MonkeyMethod), name
            swept = OmegaConf.select(cfg, key)
            if name == "ablate_mask_steps":  # the IP-Adapter acts exactly on the masked steps
                assert method.settings.ip_steps == method.settings.mask_steps == tuple(swept)
            elif name == "sweep_ip_scale":
                assert method.scale == swept
            else:
                knob = key.removeprefix("method.")
                expected = tuple(swept) if OmegaConf.is_list(swept) else swept
                assert getattr(method.settings, knob) == expected, (name, value)


def test_the_layer_preset_takes_each_attn2_layer_alone_once_and_records_them_all(tiny_pipe):
    layers = sweep_values("ablate_layer", parsed=True)["method.layers"]
    assert all(len(layer) == 1 for layer in layers)
    assert sorted(layer[0] for layer in layers) == sorted(attn2_layers(tiny_pipe.unet))
    assert "up_blocks.1.attentions.1.transformer_blocks.0.attn2" in {layer[0] for layer in layers}  # the paper's
    assert compose_preset("ablate_layer").method.share.record_layers == "all"


def test_the_capture_preset_records_every_swept_step_in_one_pass():
    swept = {
        step for steps in sweep_values("ablate_capture_steps", parsed=True)["method.capture_steps"] for step in steps
    }
    assert set(compose_preset("ablate_capture_steps").method.share.record_steps) == swept
