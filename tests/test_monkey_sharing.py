"""Work shared across the variants of a sweep (monkey.adapter.sharing): cached pass-1 maps and cached
pass-2 prefixes must give exactly the images an uncached run gives, and must skip the work."""

from pathlib import Path

import pytest
import torch
from monkey_helpers import LAYERS, PAPER_LAYER, UNetCalls, load_tiny, make_batch, settings
from test_cli import GENERATE_ONLY, run_cli

from monkey.adapter.sampler import MonkeySampler
from monkey.adapter.sharing import PREFIX_NAMESPACE, Pass1Cache, PrefixCache, SharedWork, ShareSettings
from monkey.errors import ConfigError
from monkey.store import RunStore

PROMPTS, SEEDS = ["dog in the snow", "dog on the beach"], [5, 6]


def shared_work(root: Path, **knobs) -> SharedWork:
    return SharedWork(ShareSettings(dir=str(root), **knobs), {"test": "identity"})


def run(pipe, knobs: dict, batch, work: SharedWork | None):
    """One MONKEY call and the number of UNet evaluations it made."""
    calls = UNetCalls(pipe)
    try:
        output = MonkeySampler(pipe, settings("tiny", **knobs), work)(batch, output_type="latent")
    finally:
        calls.handle.remove()
    return output, calls.count


def test_cached_pass_one_and_prefix_give_the_uncached_images_and_skip_their_steps(tiny_pipe, tmp_path):
    batch = make_batch(tiny_pipe, PROMPTS, SEEDS)
    work = shared_work(tmp_path, record_layers=["all"])
    # (knobs, expected sources, completed UNet evaluations): pass 1 leaves the UNet at capture step 2 after
    # its last recorded layer (2 whole evaluations), pass 2 has 8 steps whose first 2 are text only
    # (ip_steps = mask_steps = 2..5 by default)
    variants = [
        ({"token": 1}, ("computed", "computed", 0), 2 + 8),
        ({"token": 2, "layers": [LAYERS[0]]}, ("cache", "cache", 2), 6),  # another layer, recorded by the first
        ({"token": 0, "threshold": 0.3, "mask_steps": [3, 4, 5]}, ("cache", "cache", 2), 6),  # step 2 unmasked
        ({"token": 3, "mask_steps": [3, 4, 5]}, ("cache", "cache", 3), 5),  # the previous one stored step 3
    ]
    for knobs, (pass1, prefix, reused), evaluations in variants:
        plain, _ = run(tiny_pipe, knobs, batch, None)
        cached, count = run(tiny_pipe, knobs, batch, work)
        assert cached.sharing == {"pass1": pass1, "pass2_prefix": prefix, "pass2_prefix_steps": reused}, knobs
        assert count == evaluations, knobs
        assert torch.equal(cached.image_masks, plain.image_masks), knobs
        assert torch.equal(cached.images, plain.images), knobs  # bitwise, not merely close
    assert plain.sharing == {"pass1": "off", "pass2_prefix": "off", "pass2_prefix_steps": 0}


def test_pass_one_entries_are_per_layer_and_step_and_a_missing_one_recomputes(tiny_pipe, tmp_path):
    batch = make_batch(tiny_pipe, PROMPTS[:1], SEEDS[:1])
    work = shared_work(tmp_path, record_steps=[0, 3], pass2_prefix=False)
    first, _ = run(tiny_pipe, {"layers": [PAPER_LAYER]}, batch, work)
    entries = list((tmp_path / "monkey-pass1").rglob("*.safetensors"))
    assert len(entries) == 1 * 1 * 4  # 1 item x 1 layer x steps {0, 1, 2, 3}
    steps_only, _ = run(tiny_pipe, {"layers": [PAPER_LAYER], "capture_steps": [0, 3]}, batch, work)
    assert steps_only.sharing["pass1"] == "cache"
    other_layer, _ = run(tiny_pipe, {"layers": [LAYERS[2]]}, batch, work)
    assert other_layer.sharing["pass1"] == "computed"  # not recorded before: pass 1 runs again
    assert first.sharing["pass2_prefix"] == "off" and not (tmp_path / PREFIX_NAMESPACE).exists()


def test_keys_follow_what_decides_the_computation_and_nothing_else():
    base = {"identity": 1, "prompts": ["a", "b"], "seeds": [1, 2], "subject": "s", "size": [64, 64]}
    keys = Pass1Cache.item_keys(base, settings("tiny"))
    assert len(set(keys)) == 2  # one per item
    assert Pass1Cache.item_keys(base, settings("tiny", token=3, threshold=0.2, combine="union", ip_scale=0.1)) == keys
    for change in ({"prompts": ["a", "c"]}, {"seeds": [1, 3]}, {"subject": "t"}, {"size": [64, 96]}, {"identity": 2}):
        changed = Pass1Cache.item_keys({**base, **change}, settings("tiny"))
        assert changed[0] != keys[0], change  # a neighbour's change moves item 0's key too
    for knobs in ({"initial_scale": 0.5}, {"initial_steps": 5}, {"guidance_scale": 3.0}):
        assert Pass1Cache.item_keys(base, settings("tiny", **knobs))[0] != keys[0], knobs
    prefix = PrefixCache.keys(base, settings("tiny"), [0.0, 0.0, 1.0])
    assert PrefixCache.keys(base, settings("tiny"), [0.0, 0.0, 0.5])[:2] == prefix[:2]
    assert PrefixCache.keys(base, settings("tiny"), [0.0, 0.0, 0.5])[2] != prefix[2]
    assert PrefixCache.keys(base, settings("tiny", final_steps=6), [0.0])[0] != prefix[0]


def test_a_scheduler_that_cannot_resume_runs_pass_two_whole(tmp_path):
    pipe = load_tiny("tiny_sd15")  # PNDM keeps a multistep history: not resumable
    batch = make_batch(pipe, PROMPTS[:1], SEEDS[:1])
    work = shared_work(tmp_path)
    knobs = {"final_steps": 4, "ip_steps": [1, 2], "mask_steps": [1, 2]}
    plain = MonkeySampler(pipe, settings("tiny_sd15", **knobs))(batch, output_type="latent")
    for expected in ("computed", "cache"):
        cached = MonkeySampler(pipe, settings("tiny_sd15", **knobs), work)(batch, output_type="latent")
        assert cached.sharing == {
            "pass1": expected,
            "pass2_prefix": "not resumable (PNDMScheduler)",
            "pass2_prefix_steps": 0,
        }
        assert torch.equal(cached.images, plain.images)


def test_share_settings_errors_name_the_key_and_the_allowed_values(tiny_pipe):
    with pytest.raises(ConfigError, match=r"record_layers has unknown layer\(s\) \['nope'\].*'all'"):
        MonkeySampler(tiny_pipe, settings("tiny"), shared_work(Path("/tmp"), record_layers=["nope"]))
    with pytest.raises(ConfigError, match=r"record_steps has steps \[7\] outside the range 0..3"):
        MonkeySampler(tiny_pipe, settings("tiny"), shared_work(Path("/tmp"), record_steps=[7]))
    with pytest.raises(ConfigError, match="record_steps"):
        ShareSettings(record_steps=["x"])


def image_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("images/**/*.png"))}


def test_jobs_of_a_multirun_share_pass_one_and_match_an_unshared_sweep(tmp_path):
    """Two token variants through the CLI: the second job takes pass 1 and the prefix from the first;
    every stored file equals the unshared sweep's, and `share` stays out of folder names and hashes."""
    sweep = [
        "experiment=ablate_token",
        "method.token=0,2",
        GENERATE_ONLY,
        "plan.limit.subjects=1",
        "plan.limit.prompts=1",
        "generation.height=64",
        "generation.width=64",
    ]
    shared = run_cli(tmp_path, *sweep, f"method.share.dir={tmp_path / 'cache'}", "run.root=shared")
    assert shared.returncode == 0, shared.stderr
    alone = run_cli(tmp_path, *sweep, "method.share.pass1=false", "method.share.pass2_prefix=false", "run.root=alone")
    assert alone.returncode == 0, alone.stderr
    shared_root, alone_root = tmp_path / "shared" / "ablate_token", tmp_path / "alone" / "ablate_token"
    folders = sorted(p.name for p in shared_root.iterdir() if p.is_dir())
    assert [("method.token=0" in f, "method.token=2" in f, "share" in f) for f in folders] == [
        (True, False, False),
        (False, True, False),
    ]
    assert sorted(p.name for p in alone_root.iterdir() if p.is_dir()) == folders
    sources = {}
    for folder in folders:
        rows = RunStore(shared_root / folder).rows()
        sources[folder] = {(row["info"]["pass1"], row["info"]["pass2_prefix"]) for row in rows}
        alone_rows = {row["item_id"]: row["config_hash"] for row in RunStore(alone_root / folder).rows()}
        assert {row["item_id"]: row["config_hash"] for row in rows} == alone_rows
    assert sources == {folders[0]: {("computed", "computed")}, folders[1]: {("cache", "cache")}}
    assert image_files(shared_root) == image_files(alone_root) and len(image_files(shared_root)) == 2 * 3
    mask = "images/monkey/dreambooth/backpack/00_p00_s0.attention.npy"
    assert (shared_root / folders[1] / mask).read_bytes() == (alone_root / folders[1] / mask).read_bytes()
