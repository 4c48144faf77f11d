"""The method registry's presets: `fair` gives every method the same prompt and seed, each model at its
native size (or one common size when generation.height/width are set); `paper` gives each method the
documented choices; the preset and the model actually used are in the hash.

Planted bugs (issue 25, point 7), one at a time, each caught:
- the native size read from the run's model instead of the method's own -> test_real_models_run_at_their_...
  (on tiny runs every twin is 128 px, so only the real profiles tell)
- the common size returned as (width, height) -> test_a_common_size_is_forced_on_every_method_...
"""

from importlib import resources
from pathlib import Path

import pytest
import torch
from transformers import BlipForConditionalGeneration, BlipProcessor

from monkey.config_check import check_job_config
from monkey.errors import ConfigError, RunFolderError
from monkey.hashing import stable_hash, to_plain
from monkey.methods.base import build_method
from monkey.methods.presets import PROMPT_FORMS, format_prompt, method_spec, model_profile_config
from monkey.models.profiles import profile_from_config, resolve_runtime
from monkey.models.tiny_blip import materialize_tiny_blip
from monkey.runner import generate_stage, generation_config, plan_from_config
from monkey.store import RunStore

METHODS = sorted(p.stem for p in Path(str(resources.files("monkey.conf") / "method")).glob("*.yaml"))
# A template other than the paper's, so "the plan's prompt" and "object + location" differ.
TEMPLATE = "prompts.template='a {class_name} {location}'"


@torch.no_grad()
def blip_caption(source) -> str:
    """Reference caption: the tiny BLIP (preset=paper on tiny runs) called directly through transformers."""
    folder = materialize_tiny_blip()
    processor, model = BlipProcessor.from_pretrained(folder), BlipForConditionalGeneration.from_pretrained(folder)
    tokens = model.generate(**processor(images=source.load_image(), return_tensors="pt"), max_new_tokens=30)
    return processor.decode(tokens[0], skip_special_tokens=True).strip()


def built(cfg):
    spec = method_spec(cfg)
    runtime = resolve_runtime(profile_from_config(spec.model), "cpu", "float32")
    return spec, build_method(spec.method, runtime, prompt_form=spec.prompt_form)


def test_the_registry_holds_the_methods():
    assert {"ip_adapter_0.5", "ip_adapter_1.0", "text_only", "masactrl"} <= set(METHODS)


# Each method's native side under `fair` on the tiny run, read from the profile files themselves:
# the methods with their own model keep it, the rest the run's; the real profiles are checked below.
OWN_MODEL = {"masactrl": "tiny_sd14", "rectifid": "tiny_perflow", "tf_ti2i": "tiny_sd3", "freegraftor": "tiny_flux"}


def test_fair_gives_every_method_the_same_prompt_and_seed_each_model_its_native_size(make_config):
    prompts, settings = {}, {}
    items = None
    for name in METHODS:
        cfg = make_config(f"method={name}", "plan.limit.subjects=2", "plan.limit.prompts=2", TEMPLATE)
        items = items or plan_from_config(cfg)
        spec, method = built(cfg)
        prompts[name] = [method.prompt_for(item) for item in items]
        settings[name] = ([spec.seed_for(item) for item in items], spec.height, spec.width)
    expected = [item.prompt for item in items]
    assert expected[0] == "a backpack in the jungle"
    assert all(p == expected for p in prompts.values()), prompts
    native = {name: model_profile_config(OWN_MODEL.get(name, "tiny"))["native_size"] for name in METHODS}
    assert set(native.values()) == {128}  # every tiny twin is small, so tiny runs stay cheap
    assert settings == {name: ([item.seed for item in items], native[name], native[name]) for name in METHODS}


def test_real_models_run_at_their_native_sizes_under_fair(make_config):
    """SD3.5-large and FLUX at 1024, the SD1.x methods at 512, as their profiles say."""
    expected = {"tf_ti2i": 1024, "freegraftor": 1024, "rectifid": 512, "masactrl": 512, "monkey": 512}
    for name, side in expected.items():
        spec = method_spec(make_config(f"method={name}", "model=lcm_dreamshaper"))
        assert (spec.height, spec.width) == (side, side) == (spec.model["native_size"],) * 2, name


def test_a_common_size_is_forced_on_every_method_and_half_a_size_is_refused(make_config):
    for name in ("ip_adapter_1.0", "monkey", *OWN_MODEL):
        spec = method_spec(make_config(f"method={name}", "generation.height=64", "generation.width=96"))
        assert (spec.height, spec.width) == (64, 96), name
    paper = method_spec(make_config("method=tf_ti2i", "preset=paper", "generation.height=64", "generation.width=96"))
    assert (paper.height, paper.width) == (256, 256)  # the paper's own size wins under `paper`
    with pytest.raises(ConfigError, match=r"generation.height=64 and generation.width=None: set both"):
        check_job_config(make_config("generation.height=64"))
    with pytest.raises(ConfigError, match=r"generation.height=64 and generation.width=None: set both"):
        method_spec(make_config("generation.height=64"))


def test_paper_gives_each_method_its_documented_prompt_and_size(make_config):
    overrides = ("preset=paper", "plan.limit.subjects=2", "plan.limit.prompts=1", TEMPLATE)
    cfg = make_config("method=masactrl", *overrides)
    items = plan_from_config(cfg)
    spec, method = built(cfg)
    assert type(method.captioner).__name__ == "BlipCaptioner"
    expected = [f"{blip_caption(item.source)} in the jungle" for item in items]
    assert [method.prompt_for(item) for item in items] == expected and len(expected[0]) > len("in the jungle") + 2
    assert (spec.height, spec.width, spec.seeded) == (256, 256, True)
    assert spec.method["paper_bug_save_source_branch"] is True and method.paper_bug_save_source_branch
    assert spec.clip_t_prompt_form == "location"
    for name in ("ip_adapter_0.5", "ip_adapter_1.0"):
        spec, method = built(make_config(f"method={name}", *overrides))
        assert [method.prompt_for(item) for item in items] == ["backpack in the jungle", "backpack dog in the jungle"]
        assert (spec.height, spec.width, spec.clip_t_prompt_form) == (256, 256, "subject_location")


def test_fair_leaves_every_paper_flag_off(make_config):
    spec = method_spec(make_config("method=masactrl"))
    assert spec.method["paper_bug_save_source_branch"] is False
    assert spec.method["captioner"]["_target_"].endswith("TemplateCaptioner")
    assert spec.method["captioner"]["template"] == ""  # upstream's real-image source prompt (docs/methods/masactrl.md)
    assert "paper" not in spec.method and "model" not in spec.method


def test_preset_and_the_methods_own_model_are_in_the_hash(make_config, tiny_runtime):
    fair = make_config("method=masactrl")
    paper = make_config("method=masactrl", "preset=paper")
    assert stable_hash(generation_config(fair, tiny_runtime)) != stable_hash(generation_config(paper, tiny_runtime))
    config = generation_config(fair, tiny_runtime)
    assert config["model"]["name"] == "tiny_sd14" and config["preset"]["model_source"] == "tiny_sd14"
    assert generation_config(make_config(), tiny_runtime)["model"]["name"] == "tiny"  # ip_adapter: the run's
    other_size = make_config("method=masactrl", "+method.model_overrides.native_size=64")
    assert stable_hash(generation_config(other_size, tiny_runtime)) != stable_hash(config)


def test_a_method_picks_its_tiny_or_real_model_and_overrides_win(make_config):
    real = method_spec(make_config("method=masactrl", "model=lcm_dreamshaper"))
    assert real.model["pretrained"] == "CompVis/stable-diffusion-v1-4" and real.method["num_inference_steps"] == 50
    assert real.model["scheduler"] == "DDIMScheduler" and real.model["ip_adapter"] is None
    tiny = method_spec(make_config("method=masactrl"))
    assert tiny.model["tiny"] == "sd14" and tiny.method["num_inference_steps"] == 10
    assert tiny.model["scheduler_kwargs"] == real.model["scheduler_kwargs"]  # tiny_sd14 composes sd14
    chosen = method_spec(make_config("method=masactrl", "method.num_inference_steps=3", "method.model=sd14"))
    assert chosen.method["num_inference_steps"] == 3 and chosen.model["name"] == "sd14"


def test_profile_loader_matches_hydra_composition(make_config):
    for name in ("sd14", "tiny_sd14", "tiny", "lcm_dreamshaper"):
        assert model_profile_config(name) == to_plain(make_config(f"model={name}").model), name


def test_preset_errors_name_the_key(make_config):
    with pytest.raises(ConfigError, match="preset='unfair'"):
        method_spec(make_config("preset=unfair"))
    with pytest.raises(ConfigError, match=r"paper.set names \['paper_bug_typo'\]"):
        method_spec(make_config("method=masactrl", "preset=paper", "+method.paper.set.paper_bug_typo=true"))
    with pytest.raises(ConfigError, match=r"paper\.prompt='object'"):
        method_spec(make_config("method=masactrl", "preset=paper", "method.paper.prompt=object"))
    with pytest.raises(ConfigError, match=r"method\.model='sd99'"):
        method_spec(make_config("method=masactrl", "method.model=sd99"))


def test_a_method_without_paper_block_runs_fair_under_paper(make_config, caplog):
    spec = method_spec(make_config("method=ip_adapter_1.0", "preset=paper", "~method.paper"))
    assert (spec.prompt_form, spec.height, spec.seeded) == ("plan", 128, True)
    assert "no `paper:` block" in caplog.text


def test_unseeded_paper_choice_draws_fresh_recorded_seeds(make_config):
    spec = method_spec(make_config("preset=paper", "method.paper.seeded=false"))
    item = plan_from_config(make_config("plan.limit.subjects=1", "plan.limit.prompts=1"))[0]
    seeds = {spec.seed_for(item) for _ in range(4)}
    assert len(seeds) > 1 and item.seed not in seeds


def test_rows_store_the_exact_prompt_and_the_papers_clip_t_text(make_config, tmp_path):
    small = ("plan.limit.subjects=1", "plan.limit.prompts=2", "method.num_inference_steps=2", "generation.batch_size=2")
    paper = make_config("method=masactrl", "preset=paper", "method.paper.size=64", *small)
    generate_stage(paper, tmp_path / "paper")
    rows = RunStore(tmp_path / "paper").rows()
    caption = blip_caption(plan_from_config(paper)[0].source)
    assert [row["prompt"] for row in rows] == [f"{caption} in the jungle", f"{caption} in the snow"]
    assert rows[0]["info"]["source_prompt"] == caption
    assert [row["paper_clip_t_prompt"] for row in rows] == ["in the jungle", "in the snow"]
    assert {(row["preset"], row["height"], row["info"]["output_branch"]) for row in rows} == {
        ("paper", 64, "source (paper bug)")
    }
    fair = make_config("method=masactrl", "generation.height=64", "generation.width=64", *small)
    generate_stage(fair, tmp_path / "fair")
    rows = RunStore(tmp_path / "fair").rows()
    assert [row["prompt"] for row in rows] == ["backpack in the jungle", "backpack in the snow"]
    assert all("paper_clip_t_prompt" not in row and row["preset"] == "fair" for row in rows)
    with pytest.raises(RunFolderError, match=r"method\.start_step: 4 -> 1"):
        generate_stage(
            make_config(
                "method=masactrl", "generation.height=64", "generation.width=64", *small, "method.start_step=1"
            ),
            tmp_path / "fair",
        )


def test_prompt_forms_keep_dreambooths_modifier_entries(make_config):
    """An entry such as 'red {subject}' puts its words before the subject in every form."""
    items = plan_from_config(
        make_config("prompts=dreambooth_object", "plan.limit.subjects=1", "plan.limit.prompts=null")
    )
    red = next(item for item in items if item.location == "red {subject}")
    assert red.prompt == "red backpack"
    forms = {form: format_prompt(form, red, caption=lambda source: "a bag") for form in PROMPT_FORMS}
    assert forms == {
        "plan": "red backpack",
        "location": "red",
        "subject_location": "red backpack",
        "caption_location": "a bag red",
    }
