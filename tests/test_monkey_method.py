"""MONKEY through the harness: the runner writes images, masks, overlays and manifest flags; config
errors name the key and the allowed values; the CLI sweeps any MONKEY knob."""

import numpy as np
import pytest
from helpers import image_bytes
from PIL import Image
from test_cli import GENERATE_ONLY, run_cli

from monkey.errors import ConfigError
from monkey.methods.base import build_method
from monkey.runner import generate_stage
from monkey.store import RunStore

SMALL = (
    "method=monkey",
    "plan.limit.subjects=1",
    "plan.limit.prompts=2",
    "generation.height=64",
    "generation.width=96",
)


def test_runner_writes_masks_overlays_and_flags(make_config, run_dir):
    generate_stage(make_config(*SMALL, "method.save_pass1_image=true"), run_dir)
    rows = RunStore(run_dir).rows()
    assert len(rows) == 2
    for row in rows:
        assert set(row["artifacts"]) == {"mask", "mask_latent", "attention", "overlay", "pass1"}
        assert row["info"]["mask_degenerate"] is False and row["info"]["mask_fallback"] is None
        image = np.asarray(Image.open(run_dir / row["image"]), dtype=np.int16)
        mask_png = Image.open(run_dir / row["artifacts"]["mask"])
        assert mask_png.mode == "L" and mask_png.size == (96, 64)
        mask = np.asarray(mask_png)
        assert set(np.unique(mask)) <= {0, 255}
        latent = np.load(run_dir / row["artifacts"]["mask_latent"])
        assert latent.shape == (8, 12)
        assert np.array_equal(np.kron(latent, np.ones((8, 8))) * 255, mask)  # the latent mask, 8x nearest
        assert row["info"]["mask_area"] == pytest.approx(latent.mean(), abs=1e-6)
        overlay = np.asarray(Image.open(run_dir / row["artifacts"]["overlay"]), dtype=np.int16)
        inside = mask == 255
        assert np.array_equal(overlay[~inside], image[~inside])  # untouched outside the mask
        assert (overlay[inside][:, 0] >= image[inside][:, 0]).all()  # tinted red inside
        assert Image.open(run_dir / row["artifacts"]["pass1"]).size == (96, 64)
    assert len(image_bytes(run_dir)) == 2 * 4  # image, mask, overlay, pass-1 image per item (.npy beside them)


def test_unknown_layer_lists_the_valid_attn2_layers(make_config, tiny_runtime):
    cfg = make_config("method=monkey", "method.layers=[up_blocks.1.attn2]")
    with pytest.raises(ConfigError, match=r"unknown layer\(s\) \['up_blocks\.1\.attn2'\].*mid_block\.attentions\.0"):
        build_method(cfg.method, tiny_runtime)
    with pytest.raises(ConfigError, match=r"capture_steps has steps \[5\] outside the range 0\.\.3"):
        build_method(make_config("method=monkey", "method.capture_steps=[1,5]").method, tiny_runtime)
    with pytest.raises(ConfigError, match="unexpected keyword argument 'tokens'"):
        build_method(make_config("method=monkey", "+method.tokens=2").method, tiny_runtime)


def test_cli_sweeps_a_monkey_knob_into_one_folder_per_value(tmp_path):
    result = run_cli(
        tmp_path,
        "-m",
        GENERATE_ONLY,
        "method=monkey",
        "method.token=0,3",
        "plan.limit.subjects=1",
        "plan.limit.prompts=1",
        "generation.height=64",
        "generation.width=64",
    )
    assert result.returncode == 0, result.stderr
    folders = sorted(p for p in (tmp_path / "runs" / "demo").iterdir() if p.is_dir())
    names = [p.name.split(",") for p in folders]
    assert [name[0] for name in names] == ["monkey", "monkey"]
    assert ["method.token=0" in names[0], "method.token=3" in names[1]] == [True, True]
    rows = [RunStore(folder).rows()[0] for folder in folders]
    assert rows[0]["config_hash"] != rows[1]["config_hash"]
    for folder, row in zip(folders, rows, strict=True):
        assert (folder / row["artifacts"]["mask"]).is_file() and (folder / row["artifacts"]["overlay"]).is_file()


def test_sd15_profile_names_the_hub_models(make_config):
    from monkey.models.profiles import profile_from_config

    profile = profile_from_config(make_config("model=sd15").model)
    assert (profile.pipeline_class, profile.pretrained) == (
        "StableDiffusionPipeline",
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
    )
    assert (profile.ip_adapter.repo, profile.ip_adapter.weight_name) == ("h94/IP-Adapter", "ip-adapter_sd15.bin")
