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
- `paper.set.initial_scale: 0.5` (monkey.yaml; also with the test's own
  initial_scale assertion removed, so the mask comparison alone sees it)     -> test_paper_masks_equal...
- `paper.set.combine: mean` instead of `union` (monkey.yaml)                 -> test_paper_masks_equal...
- the recorder's dtype ignored, arithmetic always fp32 (capture.py)          -> test_recorded_map_in_a_half...
- `record_dtype` left out of the pass-1 key (sharing.py)                     -> test_cache_keys_follow_the_map...
- `*_dtype: model` not resolved before hashing (runner.py),
  `method.vae_dtype` ignored (presets.runtime_vae_dtype), `runtime.vae_dtype=model`
  giving fp32 (profiles.vae_dtype_for)                                       -> test_paper_resolves_record...
- the code digest over capture.py only, over every file (not only .py),
  or left out of the pass-2 prefix key (sharing.py)                          -> test_cache_keys_follow_a_real_edit...
"""

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from diffusers.models.attention_processor import Attention
from monkey_helpers import PAPER_LAYER, make_batch, settings, stock_latents

import monkey
from monkey.adapter import sharing
from monkey.adapter.capture import map_key
from monkey.adapter.sampler import MonkeySampler
from monkey.adapter.settings import MonkeySettings
from monkey.adapter.sharing import Pass1Cache, PrefixCache, SharedWork, ShareSettings, package_code_digest
from monkey.errors import ConfigError
from monkey.methods.presets import method_spec, runtime_vae_dtype
from monkey.models.profiles import profile_from_config, resolve_runtime
from monkey.runner import generation_config, plan_from_config

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


STEP_ONE_RECORDS = (("sdpa", "float32"), ("none", "float32"), ("none", "float16"))


@pytest.fixture(scope="module")
def step_one(tiny_pipe):
    """The paper layer's UNet inputs at step 1 and its maps recorded per (attention_scale, record_dtype),
    recorded once for the tests below: (hidden [n, HW, C], ip_tokens [n, 1, T, D], {(scale, dtype): records})."""
    attn = tiny_pipe.unet.get_submodule(PAPER_LAYER)
    inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keep_inputs(module, args, kwargs):
        inputs.append((args[0].clone(), kwargs["encoder_hidden_states"][1][0].clone()))

    batch = make_batch(tiny_pipe, PROMPTS, SEEDS)
    records, step_inputs = {}, []
    handle = attn.register_forward_pre_hook(keep_inputs, with_kwargs=True)
    try:
        for mode, dtype in STEP_ONE_RECORDS:
            inputs.clear()
            config = settings("tiny", capture_steps=[1], attention_scale=mode, record_dtype=dtype)
            records[mode, dtype] = MonkeySampler(tiny_pipe, config).record(batch).records
            step_inputs.append(inputs[1])  # step 1; LCM without CFG: every row is conditional
    finally:
        handle.remove()
    hidden, ip_tokens = step_inputs[0]
    for other_hidden, other_tokens in step_inputs[1:]:  # recording never changes the trajectory
        assert torch.equal(other_hidden, hidden) and torch.equal(other_tokens, ip_tokens)
    return hidden, ip_tokens, records


def test_unscaled_map_is_the_softmax_without_one_over_sqrt_d(tiny_pipe, step_one):
    attn = tiny_pipe.unet.get_submodule(PAPER_LAYER)
    hidden, ip_tokens, recorded = step_one
    records = {mode: recorded[mode, "float32"] for mode in ("sdpa", "none")}
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
    assert Pass1Cache.item_keys(base, settings("tiny", record_dtype="float16")) != keys
    assert Pass1Cache.item_keys(base, settings("tiny", threshold_rule="ge")) == keys  # a mask setting, not a map's
    monkeypatch.setattr(sharing, "CAPTURE_FORMAT", sharing.CAPTURE_FORMAT + 1)
    assert Pass1Cache.item_keys(base, settings("tiny")) != keys
    monkeypatch.undo()
    monkeypatch.setattr(sharing, "installed_code_digest", lambda: "an edited package")
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
    monkeypatch.setattr(sharing, "installed_code_digest", lambda: "the package of a newer release")
    upgraded = MonkeySampler(tiny_pipe, settings("tiny"), work)(batch, output_type="latent")
    assert upgraded.sharing["pass1"] == "computed"


def test_paper_preset_runs_the_reference_codes_choices(make_config):
    fair = method_spec(make_config("method=monkey"))
    paper = method_spec(make_config("method=monkey", "preset=paper"))
    expected = {
        "combine": "union",
        "attention_scale": "none",
        "threshold_rule": "ge",
        "initial_scale": 1.0,
        "record_dtype": "model",
        "paper_bug_final_all_steps": True,
    }
    assert {key: paper.method[key] for key in expected} == expected
    assert (paper.vae_dtype, fair.vae_dtype) == ("model", "runtime")
    assert "vae_dtype" not in paper.method  # a spec key: the runner resolves it, the class never sees it
    assert {key: fair.method[key] for key in expected} == {
        "combine": "mean",
        "attention_scale": "sdpa",
        "threshold_rule": "gt",
        "initial_scale": 1.0,
        "record_dtype": "float32",
        "paper_bug_final_all_steps": False,
    }
    items = plan_from_config(make_config("plan.limit.subjects=2", "plan.limit.prompts=2"))
    assert [paper.seed_for(item) for item in items] == [123] * len(items)
    assert [fair.seed_for(item) for item in items] == [item.seed for item in items]
    assert len({item.seed for item in items}) > 1
    assert paper.describe()["fixed_seed"] == 123 and "fixed_seed" not in fair.describe()
    with pytest.raises(ConfigError, match=r"paper.seed='x'"):
        method_spec(make_config("method=monkey", "preset=paper", "method.paper.seed=x"))


# ---- the mask pass as the reference pipeline ran it (issue 25, point 3) ------------------------------

REFERENCE_SIZE = 128  # a 4 x 4 grid at the paper's layer on the tiny UNet (64 px gives 2 x 2)
REFERENCE_PROMPTS, REFERENCE_SEEDS = ["dog in the snow", "dog on the beach", "dog in the jungle"], [3, 4, 5]


def reference_masks(pipe, batch, steps: tuple[int, ...], token: int, threshold: float) -> torch.Tensor:
    """The mask main_seg.py made, written out from jamesBaker361/monkey (3dbb7ce): [n, h, w] bool.

    Its pipeline runs the mask pass at IP scale 1.0 on every step: pipelines.py:472-475 sets 0 outside
    [start, end] x len(timesteps) and 1.0 inside, and main_seg.py:205 calls it with the defaults start=0,
    end=1 (pipelines.py:318-319), so the 0.5 of main_seg.py:203 is overwritten before the first UNet call.
    ipattn.py:298-301 keeps softmax(q k_ip^T) per head, unscaled; get_mask (main_seg.py:59-88) averages
    the heads, takes `token`, min-max normalises, zeroes cells < threshold and multiplies by 255;
    main_seg.py:207 sums the steps and IPAdapterMaskProcessor binarises the sum (>= 0.5 -> 1)."""
    attn = pipe.unet.get_submodule(PAPER_LAYER)
    inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keep_inputs(module, args, kwargs):
        inputs.append((args[0].clone(), kwargs["encoder_hidden_states"][1][0].clone()))

    handle = attn.register_forward_pre_hook(keep_inputs, with_kwargs=True)
    try:
        stock_latents(pipe, "tiny", batch, steps=4, scale=1.0)  # one UNet call per step: LCM, no CFG
    finally:
        handle.remove()
    summed = torch.zeros(())
    for step in steps:
        hidden, ip_tokens = inputs[step]
        probs = hand_probs(attn, hidden, ip_tokens.flatten(1, 2), 1.0)  # [n, HW, T]
        side = int(probs.shape[1] ** 0.5)
        avg = probs.view(-1, side, side, probs.shape[-1])[..., token]  # [n, h, w]
        low, high = avg.amin(dim=(1, 2), keepdim=True), avg.amax(dim=(1, 2), keepdim=True)
        x_norm = (avg - low) / (high - low)
        x_norm[x_norm < threshold] = 0.0
        summed = summed + x_norm * 255
    return summed >= 0.5


def paper_settings(make_config) -> MonkeySettings:
    """MONKEY's knobs exactly as `preset=paper` resolves them."""
    spec = method_spec(make_config("method=monkey", "preset=paper"))
    fields = {field.name for field in dataclasses.fields(MonkeySettings)}
    return MonkeySettings(**{key: value for key, value in spec.method.items() if key in fields})


def test_paper_masks_equal_the_reference_pipeline_and_a_half_scale_mask_pass_does_not(tiny_pipe, make_config):
    paper = paper_settings(make_config)
    assert paper.layers == (PAPER_LAYER,) and paper.initial_scale == 1.0
    batch = make_batch(tiny_pipe, REFERENCE_PROMPTS, REFERENCE_SEEDS, REFERENCE_SIZE, REFERENCE_SIZE)
    expected = reference_masks(tiny_pipe, batch, paper.capture_steps, paper.token, paper.threshold)

    def masks(knobs: MonkeySettings) -> torch.Tensor:
        sampler = MonkeySampler(tiny_pipe, knobs)
        items, _ = sampler.masks(sampler.record(batch).records, batch)
        assert not any(item.degenerate for item in items)
        return torch.stack([item.mask.bool() for item in items])  # [n, h, w]

    assert expected.shape == (3, 4, 4) and 0 < int(expected.sum()) < expected.numel()
    assert torch.equal(masks(paper), expected)
    # what main_seg.py asked for but its pipeline never ran: other masks
    half = masks(dataclasses.replace(paper, initial_scale=0.5))
    assert int((half != expected).sum()) > 0


# ---- the recorded map's precision (issue 25, point 4) -------------------------------------------------


def hand_probs_in(attn: Attention, hidden: torch.Tensor, ip_tokens: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """softmax(q k_ip^T) as the reference code's fp16 model computes it, written out: q and k rounded to
    `dtype`, each head's logits summed exactly (float64) and rounded to `dtype`, exp / sum in float64
    rounded to `dtype`, the head mean rounded to `dtype`. [b, HW, C], [b, T, D] -> [b, HW, T] (fp32)."""
    with torch.no_grad():
        q = attn.to_q(hidden).to(dtype).double()
        k = attn.processor.to_k_ip[0](ip_tokens).to(dtype).double()
    heads = attn.heads
    d = q.shape[-1] // heads
    total = torch.zeros(q.shape[0], q.shape[1], k.shape[1], dtype=torch.float64)
    for h in range(heads):
        s = (q[..., h * d : (h + 1) * d] @ k[..., h * d : (h + 1) * d].transpose(1, 2)).to(dtype).double()
        e = torch.exp(s - s.max(dim=-1, keepdim=True).values)
        total += (e / e.sum(dim=-1, keepdim=True)).to(dtype).double()
    return (total / heads).to(dtype).float()


def test_recorded_map_in_a_half_dtype_is_the_softmax_in_that_dtype(tiny_pipe, step_one):
    attn = tiny_pipe.unet.get_submodule(PAPER_LAYER)
    hidden, ip_tokens, records = step_one

    def recorded(dtype: str) -> torch.Tensor:
        return torch.stack([record[map_key(PAPER_LAYER, 1)].flatten(0, 1) for record in records["none", dtype]])

    expected = hand_probs_in(attn, hidden, ip_tokens.flatten(1, 2), torch.float16)  # [n, HW, T]
    assert torch.equal(recorded("float16"), expected)
    assert not torch.equal(recorded("float32"), expected)  # fp32 arithmetic rounds otherwise
    assert (recorded("float32") - expected).abs().max() > 1e-5
    # `model` is the UNet's own dtype, here fp32; the sampler resolves it once, for the recorder and the cache key
    model = MonkeySampler(tiny_pipe, settings("tiny", record_dtype="model"))
    assert model.settings.record_dtype == "float32"
    with pytest.raises(ConfigError, match=r"method.record_dtype='fp8'.*\['float32', 'model'"):
        MonkeySettings(record_dtype="fp8")


def test_paper_resolves_record_and_vae_dtypes_to_the_models_on_cuda_and_the_hash_names_them(make_config):
    """Resolution only (no GPU needed): LCM Dreamshaper's profile runs fp16 on CUDA and fp32 on the CPU."""
    seen = {}
    for preset in ("paper", "fair"):
        cfg = make_config("method=monkey", f"preset={preset}", "model=lcm_dreamshaper")
        spec = method_spec(cfg)
        for device in ("cuda", "cpu"):
            runtime = resolve_runtime(profile_from_config(spec.model), device, "auto", runtime_vae_dtype(spec, "auto"))
            config = generation_config(cfg, runtime, spec)
            seen[preset, device] = (config["dtype"], config["method"]["record_dtype"], str(runtime.vae)[6:])
            assert config.get("vae_dtype", config["dtype"]) == str(runtime.vae)[6:]  # the hash names the VAE's
    assert seen == {
        ("paper", "cuda"): ("float16", "float16", "float16"),  # everything fp16, as the reference code
        ("paper", "cpu"): ("float32", "float32", "float32"),
        ("fair", "cuda"): ("float16", "float32", "float32"),  # fp32 map; the VAE upcast of runtime.vae_dtype=auto
        ("fair", "cpu"): ("float32", "float32", "float32"),
    }
    paper = method_spec(make_config("method=monkey", "preset=paper"))
    with pytest.raises(ConfigError, match=r"runtime.vae_dtype=float32 conflicts with method.vae_dtype=model"):
        runtime_vae_dtype(paper, "float32")
    with pytest.raises(ConfigError, match=r"method.vae_dtype='fp16' is not allowed; choose one of \['runtime'"):
        method_spec(make_config("method=monkey", "method.vae_dtype=fp16"))


# ---- the cache keys against a real edit of the package (issue 25, point 13) --------------------------


def test_cache_keys_follow_a_real_edit_of_any_module_not_only_capture_py(tmp_path, monkeypatch):
    root = Path(monkey.__file__).parent
    copy = tmp_path / "monkey"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert package_code_digest(copy) == package_code_digest(root) == sharing.installed_code_digest()
    (copy / "notes.txt").write_text("not code")
    (copy / "adapter" / "__pycache__").mkdir()
    (copy / "adapter" / "__pycache__" / "stale.py").write_text("compiled leftovers")
    assert package_code_digest(copy) == package_code_digest(root)  # only the package's .py sources count
    control = copy / "adapter" / "control.py"
    source = control.read_text()
    edited = source.replace("[scale] * len(processor.scale)", "[0.5 * scale] * len(processor.scale)")
    assert edited != source  # pass 1's IP scale, set in control.py, not capture.py
    control.write_text(edited)
    assert package_code_digest(copy) != package_code_digest(root)
    call = {"identity": 1, "prompts": ["a"], "seeds": [1], "subject": "s", "size": [64, 64]}
    pass1, prefix = Pass1Cache.item_keys(call, settings("tiny")), PrefixCache.keys(call, settings("tiny"), [0.0])
    monkeypatch.setattr(sharing, "installed_code_digest", lambda: package_code_digest(copy))  # as if installed
    assert Pass1Cache.item_keys(call, settings("tiny")) != pass1
    assert PrefixCache.keys(call, settings("tiny"), [0.0]) != prefix
