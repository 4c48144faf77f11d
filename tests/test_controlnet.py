"""ControlNet for MONKEY and the IP-Adapter (`method.control`, monkey.controlnet).

References written independently of the code under test: diffusers' own
StableDiffusionControlNetPipeline on the same components (the hook must give its images), hand-made
edge maps for the canny operator, and runs without a ControlNet (a scale of 0 must give their bytes)."""

import hashlib

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionControlNetPipeline
from monkey_helpers import load_tiny, subject_embeds, subject_image
from PIL import Image

from monkey.controlnet.canny import canny, hysteresis
from monkey.controlnet.hook import ControlBatch, control_unet
from monkey.controlnet.images import control_image, location_slug, to_tensor
from monkey.controlnet.model import load_controlnet
from monkey.controlnet.settings import ControlSettings, control_settings
from monkey.datasets.dreambooth import load_dreambooth
from monkey.errors import ConfigError, DataError
from monkey.methods.base import GenerationRequest, build_method
from monkey.models.profiles import profile_from_config, resolve_runtime
from monkey.plan import WorkItem

SIZE = 64
CANNY = {"model": "tiny", "source": "canny"}


def runtime_of(make_config, model: str = "tiny"):
    return resolve_runtime(profile_from_config(make_config(f"model={model}").model), "cpu", "float32")


def requests(count: int = 2, location: str = "in the jungle") -> list[GenerationRequest]:
    sources = load_dreambooth()[:count]  # one subject per item: each has its own control image
    items = [WorkItem(s, i, location, f"{s.subject} {location}", 0, 100 + i) for i, s in enumerate(sources)]
    return [GenerationRequest(item, item.prompt, item.seed, SIZE, SIZE) for item in items]


def pixels(results) -> list[np.ndarray]:
    return [np.asarray(result.image) for result in results]


# ---- the canny operator ------------------------------------------------------------------------
def test_canny_finds_a_step_edge_once_and_drops_isolated_weak_pixels():
    step = np.zeros((12, 16))
    step[:, 9:] = 255  # a vertical step between columns 8 and 9
    edges = canny(step, 100, 200)
    # Sobel gives columns 8 and 9 the same magnitude (1020); the tie rule keeps the one left of the step
    expected = np.zeros_like(edges)
    expected[:, 8] = True
    assert np.array_equal(edges, expected)
    assert not canny(step, 1100, 1200).any()  # 1020 is below both thresholds

    candidates = np.zeros((5, 8), dtype=bool)
    candidates[1, 1:4] = True  # a chain holding a strong pixel: kept whole
    candidates[3, 6] = True  # a weak pixel on its own: dropped
    candidates[2, 4] = True  # touches the chain diagonally (8-neighbourhood): kept
    strong = np.zeros_like(candidates)
    strong[1, 1] = True
    kept = hysteresis(candidates, strong)
    assert kept[1, 1:4].all() and kept[2, 4] and not kept[3, 6]


def test_control_images_from_canny_and_from_a_folder(tmp_path):
    item = requests(1)[0].item
    settings = ControlSettings(model="tiny", source="canny", low=50, high=120)
    made = control_image(settings, item, 48, SIZE)
    gray = np.asarray(subject_image().resize((SIZE, 48), Image.Resampling.LANCZOS).convert("L"))
    expected = canny(gray, 50, 120)
    assert made.image.size == (SIZE, 48) and expected.any()
    assert np.array_equal(np.asarray(made.image), np.repeat(expected[..., None] * 255, 3, axis=2).astype(np.uint8))
    assert made.info["image_sha256"] == hashlib.sha256(b"64x48:RGB:" + made.image.tobytes()).hexdigest()

    assert location_slug("On top of a wooden floor!") == "on_top_of_a_wooden_floor"
    with pytest.raises(DataError, match=r"in_the_jungle\.png.*|folder='.*'"):
        control_image(ControlSettings(model="tiny", source="folder", folder=str(tmp_path)), item, SIZE, SIZE)
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 20, 3), dtype=np.uint8))
    picture.save(tmp_path / "in_the_jungle.png")
    made = control_image(ControlSettings(model="tiny", source="folder", folder=str(tmp_path)), item, SIZE, 32)
    assert np.array_equal(np.asarray(made.image), np.asarray(picture.resize((32, SIZE), Image.Resampling.LANCZOS)))
    assert made.info["image_file"] == str(tmp_path / "in_the_jungle.png")
    assert made.info["file_sha256"] == hashlib.sha256((tmp_path / "in_the_jungle.png").read_bytes()).hexdigest()
    picture.save(tmp_path / "in_the_jungle.jpg")
    with pytest.raises(DataError, match=r"2 control images for location 'in the jungle'"):
        control_image(ControlSettings(model="tiny", source="folder", folder=str(tmp_path)), item, SIZE, SIZE)


def test_bad_control_blocks_name_the_key_and_what_is_allowed():
    assert control_settings(None) is None
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['steps'\]; allowed: \['model'"):
        control_settings({**CANNY, "steps": [1, 2]})
    with pytest.raises(ConfigError, match=r"start=0.8 and end=0.5: allowed 0 <= start < end <= 1"):
        control_settings({**CANNY, "start": 0.8, "end": 0.5})
    with pytest.raises(ConfigError, match=r"source=folder needs method.control.folder"):
        control_settings({"model": "tiny", "source": "folder"})
    with pytest.raises(ConfigError, match=r"source='depth' is not allowed; choose one of \['canny', 'folder'\]"):
        control_settings({"model": "tiny", "source": "depth"})
    with pytest.raises(ConfigError, match="needs `model`"):
        control_settings({"source": "canny"})


# ---- the hook against diffusers' ControlNet pipeline ---------------------------------------------
@torch.no_grad()
def test_hook_gives_the_images_of_diffusers_controlnet_pipeline(make_config):
    """tiny_sd15 (CFG, PNDM) with the IP-Adapter: the stock pipeline plus the hook against
    StableDiffusionControlNetPipeline on the same components, with a scale and a start/end window."""
    pipe = load_tiny("tiny_sd15")
    runtime = runtime_of(make_config, "tiny_sd15")
    settings = ControlSettings(model="tiny", scale=0.7, start=0.25, end=0.75)
    controlnet = load_controlnet(settings, runtime)
    control = control_image(settings, requests(1)[0].item, SIZE, SIZE).image
    embeds = subject_embeds(pipe)[0]  # [1, D]
    ip_embeds = [torch.stack([torch.zeros_like(embeds), embeds])]  # [2, 1, D]: CFG's [negative; positive]
    call = {"prompt": ["dog in the snow"], "height": SIZE, "width": SIZE, "num_inference_steps": 4}
    call |= {"guidance_scale": 7.5, "ip_adapter_image_embeds": ip_embeds, "output_type": "np"}
    pipe.scheduler.set_timesteps(4)
    loop = len(pipe.scheduler.timesteps)  # PNDM runs 5 loop steps for 4
    batch = ControlBatch(controlnet, settings, to_tensor([control]), identity={})
    with control_unet(pipe.unet, batch, loop):
        ours = pipe(**call, generator=torch.Generator().manual_seed(3)).images
    reference = StableDiffusionControlNetPipeline(**pipe.components, controlnet=controlnet)
    reference.set_progress_bar_config(disable=True)
    theirs = reference(
        **call,
        image=control,
        controlnet_conditioning_scale=0.7,
        control_guidance_start=0.25,
        control_guidance_end=0.75,
        generator=torch.Generator().manual_seed(3),
    ).images
    plain = pipe(**call, generator=torch.Generator().manual_seed(3)).images
    assert np.abs(ours - plain).max() > 1e-3  # the control acts
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


# ---- the methods ---------------------------------------------------------------------------------
NO_SHARE = ("method.share.pass1=false", "method.share.pass2_prefix=false")


def method(make_config, runtime, name: str, *overrides: str):
    return build_method(make_config(f"method={name}", *overrides).method, runtime)


@pytest.mark.parametrize("name", ["monkey", "ip_adapter_1.0"])
def test_scale_zero_gives_the_uncontrolled_bytes_and_a_scale_acts(make_config, tiny_runtime, name):
    share = NO_SHARE if name == "monkey" else ()  # every image computed, none taken from a cache
    batch = requests(2)
    plain = pixels(method(make_config, tiny_runtime, name, *share).generate(batch))
    zero = method(make_config, tiny_runtime, name, *share, "+control=canny", "method.control.scale=0").generate(batch)
    acting = method(make_config, tiny_runtime, name, *share, "+control=canny").generate(batch)
    for a, b in zip(plain, pixels(zero), strict=True):
        assert np.array_equal(a, b)
    for a, b in zip(plain, pixels(acting), strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 1  # the control changes the image
    for result, request in zip(acting, batch, strict=True):  # the row names its control and keeps its image
        record = result.info["control"]
        assert record["scale"] == 1.0 and record["source"] == "canny" and record["weights"]["files"]
        expected = control_image(control_settings(CANNY), request.item, SIZE, SIZE).image
        assert np.array_equal(np.asarray(result.artifacts["control"]), np.asarray(expected))
        assert record["image_sha256"] == hashlib.sha256(b"64x64:RGB:" + expected.tobytes()).hexdigest()


def spy_controlnet(controlnet) -> tuple[list, object]:
    """Every ControlNet call's (conditioning image [rows, 3, H, W], conditioning scale)."""
    calls: list[tuple[torch.Tensor, float]] = []

    def spy(module, args, kwargs):
        calls.append((kwargs["controlnet_cond"].clone(), float(kwargs["conditioning_scale"])))

    return calls, controlnet.register_forward_pre_hook(spy, with_kwargs=True)


def test_both_passes_see_the_same_control_and_a_resumed_pass_2_keeps_its_steps(make_config, tiny_runtime, tmp_path):
    """MONKEY's pass 1 (4 steps, stops after capture step 2) and pass 2 (8 steps, resumed from the
    cached steps 0-1 on a second run) see one image per item and scale 0.5 on the steps diffusers'
    rule keeps for start=0.25: pass 1 steps 1-3, pass 2 steps 2-7."""
    overrides = ("+control=canny", "method.control.scale=0.5", "method.control.start=0.25")
    made = method(make_config, tiny_runtime, "monkey", *overrides, f"method.share.dir={tmp_path}")
    batch = requests(2)
    calls, handle = spy_controlnet(made.control.controlnet)
    try:
        first = made.generate(batch)
        pass1, pass2 = calls[:3], calls[3:]
        assert [scale for _, scale in pass1] == [0.0, 0.5, 0.5]
        assert [scale for _, scale in pass2] == [0.0, 0.0] + [0.5] * 6
        images = to_tensor([control_image(control_settings(CANNY), r.item, SIZE, SIZE).image for r in batch])
        for cond, _ in calls:  # LCM: no CFG batch, one row per item
            assert torch.equal(cond, images)
        calls.clear()
        again = made.generate(batch)
        assert again[0].info["pass1"] == "cache" and again[0].info["pass2_prefix_steps"] == 2
        assert [scale for _, scale in calls] == [0.5] * 6  # steps 2-7 only
        assert all(map(np.array_equal, pixels(again), pixels(first)))  # the resumed call's bytes
    finally:
        handle.remove()


def test_a_control_has_its_own_pass_1_and_config_hash(make_config, tiny_runtime, tmp_path):
    """The shared caches key by the control: a controlled variant never takes an uncontrolled pass 1
    (or another scale's), and its config hash differs (control is not a runtime-only key)."""
    from monkey.hashing import stable_hash
    from monkey.runner import generation_config

    share = f"method.share.dir={tmp_path}"
    batch = requests(1)
    assert method(make_config, tiny_runtime, "monkey", share).generate(batch)[0].info["pass1"] == "computed"
    assert method(make_config, tiny_runtime, "monkey", share).generate(batch)[0].info["pass1"] == "cache"
    controlled = method(make_config, tiny_runtime, "monkey", share, "+control=canny")
    assert controlled.generate(batch)[0].info["pass1"] == "computed"
    assert controlled.generate(batch)[0].info["pass1"] == "cache"
    other = method(make_config, tiny_runtime, "monkey", share, "+control=canny", "method.control.scale=0.5")
    assert other.generate(batch)[0].info["pass1"] == "computed"

    hashes = {
        stable_hash(generation_config(make_config("method=monkey", *extra), tiny_runtime))
        for extra in ((), ("+control=canny",), ("+control=canny", "method.control.end=0.5"))
    }
    assert len(hashes) == 3


# ---- the experiment ------------------------------------------------------------------------------
def test_the_controlnet_experiment_runs_four_variants_over_the_same_items_into_one_report(tmp_path):
    """`monkey-bench experiment=controlnet` (docs/controlnet.md), smaller: the report's table holds
    MONKEY and IP-Adapter with and without control, each on the same items."""
    import json

    import pandas as pd
    from test_cli import run_cli

    small = ("plan.limit.subjects=1", "plan.limit.prompts=1", "generation.height=64", "generation.width=64")
    result = run_cli(tmp_path, "experiment=controlnet", *small)
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = tmp_path / "runs" / "controlnet"
    table = pd.read_csv(experiment / "report" / "table1.csv")
    variants = {f"{m} (control={c})" for m in ("ip_adapter_1.0", "monkey") for c in ("canny", "none")}
    assert variants <= set(table["variant"])
    scores = pd.read_csv(experiment / "report" / "scores.csv")
    generated = scores[scores["method"] != "oracle"]
    assert generated.groupby("variant")["item_id"].apply(tuple).nunique() == 1  # the same items everywhere
    for folder in experiment.glob("*,control=*"):
        rows = [json.loads(line) for path in (folder / "manifest").glob("*.jsonl") for line in path.open()]
        controlled = folder.name.split(",")[1] == "control=canny"
        assert all(("control" in (row["info"] or {})) == controlled for row in rows), folder.name
