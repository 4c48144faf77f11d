"""MasaCtrl against independent references: diffusers' stock pipeline and attention processor, and a
self-attention written out by hand."""

import types

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor2_0
from monkey.baselines.captioners import TemplateCaptioner
from monkey.baselines.ddim_inversion import ddim_invert
from monkey.baselines.masactrl import MasaCtrlMethod
from monkey.baselines.mutual_attention import MutualAttentionControl, mutual_self_attention, transformer_blocks

from monkey.datasets.dreambooth import load_dreambooth
from monkey.errors import ConfigError
from monkey.methods.base import GenerationRequest
from monkey.methods.presets import model_profile_config
from monkey.models.profiles import profile_from_config, resolve_runtime
from monkey.models.tiny import materialize_tiny
from monkey.plan import build_plan
from monkey.prompts import load_prompt_set

SIZE, STEPS, GUIDANCE = 64, 6, 7.5
SD14_UP_BLOCKS_2_AND_3 = [f"up_blocks.{b}.attentions.{a}.transformer_blocks.0.attn1" for b in (2, 3) for a in range(3)]


@pytest.fixture(scope="module")
def runtime():
    profile = profile_from_config(model_profile_config("tiny_sd14"))
    return resolve_runtime(profile, "cpu", "float32")


def masactrl(runtime, **knobs) -> MasaCtrlMethod:
    knobs = {"num_inference_steps": STEPS, "guidance_scale": GUIDANCE, **knobs}
    return MasaCtrlMethod("masactrl", runtime, **knobs)


@pytest.fixture(scope="module")
def items():
    prompts = load_prompt_set("locations", "{subject_word} {location}")
    return build_plan(load_dreambooth(), prompts, limit_subjects=2, limit_prompts=2)


@pytest.fixture(scope="module")
def reference_pipe():
    """A separately loaded stock pipeline with the profile's DDIM scheduler and untouched processors."""
    pipe = StableDiffusionPipeline.from_pretrained(
        materialize_tiny("sd14").pipeline, safety_checker=None, requires_safety_checker=False
    )
    kwargs = model_profile_config("sd14")["scheduler_kwargs"]
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def plain_generation(pipe, prompt: str, start: torch.Tensor, steps: int = STEPS) -> tuple[torch.Tensor, list]:
    """Stock diffusers sampling from `start`; returns final latents and the latents after every step."""
    after: list[torch.Tensor] = []

    def keep(_pipe, _step, _t, tensors):
        after.append(tensors["latents"].clone())
        return tensors

    latents = pipe(
        prompt,
        latents=start.clone(),
        height=SIZE,
        width=SIZE,
        num_inference_steps=steps,
        guidance_scale=GUIDANCE,
        output_type="latent",
        callback_on_step_end=keep,
    ).images
    return latents, after


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float reordering of batched vs single attention (~1e-6 relative)."""
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max())))


def test_source_branch_equals_plain_generation_and_target_differs(runtime, items, reference_pipe):
    method = masactrl(runtime, start_step=2)
    source, target = "a photo of a backpack", items[0].prompt
    start = method.invert(items[0].source, SIZE, SIZE)[-1]
    out = method.sample(start, [source, target])
    plain_source, _ = plain_generation(reference_pipe, source, start)
    plain_target, _ = plain_generation(reference_pipe, target, start)
    assert close(out[:1], plain_source)
    assert not close(out[1:], plain_target)
    assert (out[1:] - plain_target).abs().mean() > 1e-2 * plain_target.abs().mean()


def test_target_follows_plain_generation_until_the_start_step(runtime, items, reference_pipe):
    """The step comes from the sampling loop: steps 0..2 are plain, step 3 on is mutual."""
    method = masactrl(runtime, start_step=3)
    start = method.invert(items[0].source, SIZE, SIZE)[-1]
    trajectory: list[torch.Tensor] = []
    method.sample(start, ["a photo of a backpack", items[1].prompt], trajectory=trajectory)
    _, plain_after = plain_generation(reference_pipe, items[1].prompt, start)
    after = [latents[1:] for latents in trajectory[1:]]  # target latents after each step
    for step in range(3):
        assert close(after[step], plain_after[step]), step
    for step in range(3, STEPS):
        assert not close(after[step], plain_after[step]), step


def test_start_step_past_the_end_is_plain_generation(runtime, items, reference_pipe):
    method = masactrl(runtime, start_step=STEPS)
    start = method.invert(items[0].source, SIZE, SIZE)[-1]
    out = method.sample(start, ["a photo of a backpack", items[1].prompt])
    assert close(out[1:], plain_generation(reference_pipe, items[1].prompt, start)[0])


def hand_mutual_attention(attn, x: torch.Tensor, halves: int) -> torch.Tensor:
    """softmax(Q K_src^T / sqrt(d)) V_src per head, written out; x: [B, N, C], source = first of each half."""
    batch = x.shape[0]
    heads = attn.heads
    q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
    d = q.shape[-1] // heads
    out = torch.empty_like(q)
    per_half = batch // halves
    for b in range(batch):
        src = (b // per_half) * per_half
        for h in range(heads):
            cols = slice(h * d, (h + 1) * d)
            weights = torch.softmax(q[b, :, cols] @ k[src, :, cols].T / d**0.5, dim=-1)  # [N, N]
            out[b, :, cols] = weights @ v[src, :, cols]
    return attn.to_out[0](out)


@torch.no_grad()
def test_layers_below_start_layer_are_stock_and_above_are_mutual(runtime):
    """Per attn1 layer of one UNet call with the control active: recorded outputs against the stock
    processor and a hand-written mutual attention on the recorded inputs."""
    method = masactrl(runtime)
    unet = method.pipe.unet
    blocks = transformer_blocks(unet)
    assert len(blocks) == 16
    assert method.layers == SD14_UP_BLOCKS_2_AND_3
    records: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    order: list[str] = []
    hooks = []
    for name, block in blocks:

        def record(module, args, output, name=name):
            order.append(name)
            records[name] = (args[0].clone(), output.clone())

        hooks.append(block.attn1.register_forward_hook(record))
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(4, 4, 8, 8, generator=generator)  # [uncond src, uncond tgt, cond src, cond tgt]
    text = torch.randn(4, 77, 32, generator=generator)
    control = MutualAttentionControl(start_step=0, halves=2, step=None)
    try:
        with mutual_self_attention(unet, control, start_layer=10):
            control.step = 0
            unet(latents, 500, encoder_hidden_states=text)
    finally:
        for hook in hooks:
            hook.remove()
    assert order == [name for name, _ in blocks]  # the structure's order is the execution order
    stock = AttnProcessor2_0()
    for index, (name, block) in enumerate(blocks):
        x, out = records[name]
        plain = stock(block.attn1, x)
        if index < 10:
            assert torch.allclose(out, plain, atol=1e-6), name
        else:
            assert torch.allclose(out, hand_mutual_attention(block.attn1, x, halves=2), atol=1e-5), name
            assert torch.allclose(out[0::2], plain[0::2], atol=1e-5), name  # sources attend to themselves
            assert not torch.allclose(out[1::2], plain[1::2], atol=1e-3), name


def test_processors_are_restored_even_after_an_error(runtime):
    method = masactrl(runtime)
    unet = method.pipe.unet
    before = dict(unet.attn_processors)
    with pytest.raises(RuntimeError, match="boom"), mutual_self_attention(unet, MutualAttentionControl(0), 10):
        assert unet.attn_processors != before
        raise RuntimeError("boom")
    assert unet.attn_processors == before


def test_batched_targets_equal_one_by_one(runtime, items):
    method = masactrl(runtime, start_step=1)
    start = method.invert(items[0].source, SIZE, SIZE)[-1]
    both = method.sample(start, ["a photo of a backpack", items[0].prompt, items[1].prompt])
    first = method.sample(start, ["a photo of a backpack", items[0].prompt])
    second = method.sample(start, ["a photo of a backpack", items[1].prompt])
    assert close(both[1:2], first[1:]) and close(both[2:], second[1:])
    assert not close(both[1:2], both[2:])


def test_reset_source_branch_follows_the_inversion(runtime, items):
    method = masactrl(runtime, start_step=1, reset_source_to_inversion=True)
    inversion = method.invert(items[0].source, SIZE, SIZE)
    trajectory: list[torch.Tensor] = []
    method.sample(inversion[-1], ["a photo of a backpack", items[0].prompt], inversion, trajectory)
    for step in range(STEPS):
        assert torch.equal(trajectory[step][0], inversion[-1 - step][0])
    assert not torch.equal(trajectory[1][1], inversion[-2][0])


def test_generate_returns_the_target_and_the_paper_bug_the_source(runtime, items):
    requests = [GenerationRequest(item, item.prompt, item.seed, SIZE, SIZE) for item in items[:2]]  # one subject
    fair = masactrl(runtime).generate(requests)
    buggy = masactrl(runtime, paper_bug_save_source_branch=True).generate(requests)
    method = masactrl(runtime)
    start = method.invert(items[0].source, SIZE, SIZE)[-1]
    expected = method.decode(method.sample(start, ["a photo of a backpack", items[0].prompt, items[1].prompt]))
    assert fair[0].image.tobytes() == expected[1].tobytes() and fair[1].image.tobytes() == expected[2].tobytes()
    assert buggy[0].image.tobytes() == buggy[1].image.tobytes() == expected[0].tobytes()
    assert fair[0].info["output_branch"] == "target" and buggy[0].info["output_branch"] == "source (paper bug)"
    assert fair[0].info["source_prompt"] == "a photo of a backpack"


def test_inversion_is_the_exact_inverse_of_ddim_sampling(runtime, items):
    """With predictions that do not depend on the latent (the UNet sees zeros; timestep and text still
    enter), DDIM inversion then DDIM sampling must return the input to float precision: the inversion
    is the algebraic reverse of diffusers' DDIMScheduler.step, timestep for timestep."""
    method = masactrl(runtime, num_inference_steps=20, guidance_scale=1.0)
    unet = method.pipe.unet
    original = unet.forward
    latents = method.encode(items[0].source, SIZE, SIZE)
    unet.forward = types.MethodType(lambda self, x, t, **kw: original(torch.zeros_like(x), t, **kw), unet)
    try:
        inversion = method.invert(items[0].source, SIZE, SIZE)
        reconstruction = method.sample(inversion[-1], [""])
    finally:
        unet.forward = original
    assert len(inversion) == 21 and torch.equal(inversion[0], latents)
    assert (reconstruction - latents).norm() / latents.norm() < 1e-4
    assert (inversion[-1] - latents).norm() / latents.norm() > 1.0  # it did travel to noise and back


def test_inversion_error_with_the_random_unet_is_discretisation_error(runtime, items):
    """With the real tiny UNet the round trip is not exact: inversion predicts the noise at the
    lower-noise latent. A trained UNet barely changes its prediction between neighbouring latents;
    the random one does, and DDIM's clean-latent estimate divides by sqrt(alpha_T) ~ 0.07, so the lag
    is amplified (relative error ~0.67 at 30 steps, ~0.35 at 60 on a unit-variance latent, ratios 0.45
    to 0.58 over the first five subjects; the tiny random VAE's own latents have std 0.05, against
    which any lag looks huge). What must hold is that it is a discretisation error: it shrinks as the
    steps get finer (an off-by-one timestep would leave an error that does not)."""
    method = masactrl(runtime, guidance_scale=1.0)
    latents = method.encode(items[0].source, SIZE, SIZE)
    latents = (latents - latents.mean()) / latents.std()  # SD's scaling factor makes latents ~unit variance
    empty = method.text_embeds([""])[1]
    errors = []
    for steps in (30, 60):
        method.num_inference_steps = steps
        inversion = ddim_invert(method.pipe.unet, method.scheduler, latents, empty, steps)
        errors.append(float((method.sample(inversion[-1], [""]) - latents).norm() / latents.norm()))
    assert errors[1] < 0.75 * errors[0] and errors[0] < 1.0, errors


def test_configuration_errors_name_the_key(runtime):
    with pytest.raises(ConfigError, match=r"start_layer=16 must lie in \[0, 16\)"):
        masactrl(runtime, start_layer=16)
    pndm = resolve_runtime(profile_from_config(model_profile_config("tiny_sd15")), "cpu", "float32")
    with pytest.raises(ConfigError, match="DDIMScheduler"):
        masactrl(pndm)


class CountingCaptioner(TemplateCaptioner):
    calls = 0

    def caption(self, source):
        CountingCaptioner.calls += 1
        return super().caption(source)


def test_captioner_is_injectable_and_called_once_per_subject(runtime, items):
    method = masactrl(runtime, captioner={"_target_": f"{__name__}.CountingCaptioner", "template": "{subject_word}"})
    method.prompt_form = "caption_location"
    prompts = [method.prompt_for(item) for item in items]
    assert prompts == [
        "backpack in the jungle",
        "backpack in the snow",
        "backpack dog in the jungle",
        "backpack dog in the snow",
    ]
    assert CountingCaptioner.calls == 2
    with pytest.raises(ConfigError, match="captioner"):
        masactrl(runtime, captioner={"_target_": "builtins.dict"})
