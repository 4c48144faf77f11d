"""RectifID against independent references: the stock diffusers pipeline with the PeRFlow scheduler,
dLoss/dx_i computed by plain autograd through an unguided trajectory, a toy identity whose optimum
is known, transformers' own OWL-ViT post-processing and crops prepared by hand as upstream does.

Planted bugs (issue 25, point 6), one at a time, each caught:
- text-query threshold default 0.0 instead of upstream's 0.1 -> test_owlvit_boxes_are_the_ones_...[-2.3]
- `score < threshold` instead of transformers' `score > threshold` -> test_owlvit_box_is_the_top_score_in_pixels
- the text query reading the image threshold -> test_each_query_uses_its_own_threshold_and_the_images_...
- image query's width and height swapped -> test_each_query_uses_its_own_threshold_and_the_images_...
- generated crop normalised with ImageNet's statistics, not CLIP's -> test_crops_are_nearest_resized_...
- generated crop, or the reference's L1 pixels, resized bilinear, not nearest -> test_crops_are_nearest_resized_...
- reference embedded like a generated crop, not through DINOv2's processor -> test_crops_are_nearest_resized_...
- the image query rounded to uint8 instead of truncated as `(image * 255).int()` -> test_crops_are_nearest_resized_...
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from monkey.baselines.rectifid.detector import Box, SubjectDetector
from monkey.baselines.rectifid.embedder import CropEmbedder
from monkey.baselines.rectifid.guidance import AnchoredGuidance, GuidanceSettings, PeRFlowSampler
from monkey.baselines.rectifid.loss import IdentityLoss, crop_resized
from monkey.baselines.rectifid.method import RectifIDMethod
from monkey.baselines.rectifid.scheduler import PeRFlowScheduler
from PIL import Image
from rectifid_helpers import one_torch_thread, tiny_part, tiny_perflow_runtime, tiny_rectifid

from monkey.datasets.dreambooth import load_dreambooth
from monkey.errors import ConfigError
from monkey.methods.base import GenerationRequest
from monkey.methods.presets import method_spec
from monkey.models.tiny import materialize_tiny
from monkey.plan import build_plan
from monkey.prompts import load_prompt_set

SIZE = 64
TARGET = (0.8, 0.3, 0.1)  # the toy subject's colour


class FixedBoxDetector(SubjectDetector):
    """Always the same box (None: nothing found); counts its calls."""

    def __init__(self, box: Box | None):
        self.box, self.calls = box, 0

    def find_by_text(self, image, text):
        return self.box

    def find_like(self, image, query):
        self.calls += 1
        return self.box


class MeanColourEmbedder(CropEmbedder):
    """The crop's mean colour, centred on grey: its cosine with a solid target colour is 1 at that colour."""

    def embed(self, crops):
        return crops.mean(dim=(2, 3)) - 0.5  # [B, 3]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def runtime():
    return tiny_perflow_runtime()


@pytest.fixture(scope="module")
def method(runtime):
    return tiny_rectifid(runtime, iterations=0)


@pytest.fixture(scope="module")
def request_():
    item = build_plan(
        load_dreambooth(), load_prompt_set("locations", "{subject_word} {location}"), limit_subjects=1, limit_prompts=1
    )[0]
    return GenerationRequest(item=item, prompt=item.prompt, seed=item.seed, height=SIZE, width=SIZE)


def toy_loss(detector: SubjectDetector | None = None, **weights) -> IdentityLoss:
    return IdentityLoss(detector or FixedBoxDetector(Box(8, 8, 56, 56)), MeanColourEmbedder(), size=32, **weights)


def toy_reference(loss: IdentityLoss):
    return loss.reference(
        Image.new("RGB", (SIZE, SIZE), tuple(round(255 * c) for c in TARGET)), "x", torch.device("cpu")
    )


def noise_and_embeds(method, request_):
    return method.initial_noise(request_), method.sampler.text_embeds(request_.prompt, method.runtime.device)


def test_no_iterations_is_the_stock_pipeline(method, request_):
    """iterations=0: the image is the stock StableDiffusionPipeline's with the PeRFlow scheduler."""
    stock = StableDiffusionPipeline.from_pretrained(
        materialize_tiny("perflow").pipeline, safety_checker=None, requires_safety_checker=False
    )
    stock.scheduler = PeRFlowScheduler.from_config(
        stock.scheduler.config, prediction_type="diff_eps", num_time_windows=4
    )
    stock.set_progress_bar_config(disable=True)
    method.loss = toy_loss()
    result = method.generate([request_])[0]
    expected = stock(
        prompt=request_.prompt,
        height=SIZE,
        width=SIZE,
        num_inference_steps=4,
        guidance_scale=3.0,
        generator=torch.Generator("cpu").manual_seed(request_.seed),
        output_type="pil",
    ).images[0]
    assert list(result.image.getdata()) == list(expected.getdata())
    assert result.info["iterations"] == 0 and result.info["first_loss"] is None


def test_first_guided_pass_is_the_unguided_sampler_bit_for_bit(method, request_):
    noise, embeds = noise_and_embeds(method, request_)
    with torch.no_grad():
        plain = method.sampler.decode(method.sampler.sample(noise, embeds))
    seen = {}
    loss = toy_loss()
    reference = toy_reference(loss)
    guidance = AnchoredGuidance(method.sampler, GuidanceSettings(iterations=1))
    guidance.run(
        noise,
        embeds,
        lambda image: [loss(image, reference)],
        on_iteration=lambda k, image, _: seen.setdefault(k, image),
    )
    assert torch.equal(seen[0], plain)


def reference_gradients(sampler: PeRFlowSampler, noise, embeds, loss_fn) -> list[torch.Tensor]:
    """dLoss/dx_i of every state entering a step, by plain autograd through the unguided trajectory."""
    states, x = [], noise.clone().requires_grad_(True)
    for t in sampler.timesteps(noise.device):
        x.retain_grad()
        states.append(x)
        x = sampler.step(x, t, embeds)
    loss_fn(sampler.decode(x))[0].total.backward()
    return [state.grad[0] for state in states]


@pytest.mark.parametrize(("grad_clip", "window_factor"), [(1.0, 0.95796674), (1e6, "exact")])
def test_update_moves_each_state_by_the_clipped_gradient(method, request_, grad_clip, window_factor):
    """Every P_i gets dLoss/dx_i; after one SGD step the state after step 0 moved by exactly
    f_0 * (-lr * g_0 scaled to norm <= grad_clip) (step 0's input is the fixed noise, so its raw output
    does not change)."""
    noise, embeds = noise_and_embeds(method, request_)
    loss = toy_loss()
    reference = toy_reference(loss)
    loss_fn = lambda image: [loss(image, reference)]  # noqa: E731
    expected = reference_gradients(method.sampler, noise, embeds, loss_fn)
    lr = 0.5
    guidance = AnchoredGuidance(
        method.sampler, GuidanceSettings(iterations=1, lr=lr, grad_clip=grad_clip, window_factor=window_factor)
    )
    final = guidance.run(noise, embeds, loss_fn)
    norms = final.history[0].grad_norms
    assert len(norms) == 4 and all(n > 0 for n in norms)
    torch.testing.assert_close(torch.tensor(norms), torch.stack([g.norm() for g in expected]), rtol=1e-4, atol=1e-6)
    g0 = expected[0]
    clipped = g0 * min(1.0, grad_clip / float(g0.norm()))
    assert float(clipped.norm()) <= grad_clip * (1 + 1e-6)
    factor = 0.95796674 if window_factor != "exact" else method.pipe.scheduler.window_factor(0)
    with torch.no_grad():
        first = method.sampler.step(noise, method.sampler.timesteps(noise.device)[0], embeds)[0]
    torch.testing.assert_close(guidance.anchor[0, 0] - first, factor * (-lr * clipped), rtol=1e-4, atol=1e-6)
    if grad_clip == 1.0:
        assert norms[0] > 1.0  # the clip was active in this case


def test_loss_falls_toward_a_known_optimum(method, request_):
    """Toy identity: mean colour (cosine) and L1 to a solid colour. Its optimum is the image of that
    colour; a few iterations must bring the loss down, and the guided image closer to the colour."""
    noise, embeds = noise_and_embeds(method, request_)
    loss = toy_loss(cos_weight=100.0, pixel_l1_weight=100.0)
    reference = toy_reference(loss)
    result = AnchoredGuidance(method.sampler, GuidanceSettings(iterations=4, lr=2.0)).run(
        noise, embeds, lambda image: [loss(image, reference)]
    )
    losses = [record.loss for record in result.history]
    with torch.no_grad():
        final = loss(method.sampler.decode(result.latents), reference).total.item()
    assert final < losses[0] * 0.9, [*losses, final]
    assert losses[-1] < losses[0], losses


def test_nothing_detected_is_the_whole_image_and_flagged(method, request_):
    detector = FixedBoxDetector(None)
    method.loss = toy_loss(detector)
    method.references.clear()
    method.settings = GuidanceSettings(iterations=1)
    try:
        info = method.generate([request_])[0].info
    finally:
        method.settings = GuidanceSettings(iterations=0)
    assert info["subject_detected"] is False and info["reference_detected"] is False
    assert info["no_detection_fallbacks"] == 1 and info["no_detection"] == "whole_image"
    assert info["subject_box"] == [0, 0, SIZE, SIZE] and detector.calls == 2  # the guided pass and the final image
    assert info["iterations"] == 1 and info["final_loss"] > 0

    method.no_detection = "error"
    method.references.clear()
    try:
        with pytest.raises(ConfigError, match="no 'backpack' box in the subject image"):
            method.generate([request_])
    finally:
        method.no_detection = "whole_image"
        method.references.clear()


def test_detected_box_is_recorded(method, request_):
    method.loss = toy_loss(FixedBoxDetector(Box(4, 8, 40, 60, score=0.7)))
    method.references.clear()
    info = method.generate([request_])[0].info
    assert info["subject_box"] == [4, 8, 40, 60] and info["subject_detected"] is True
    assert "no_detection" not in info and info["no_detection_fallbacks"] == 0


def test_bad_knobs_are_refused(runtime):
    parts = {"detector": tiny_part("detector"), "embedder": tiny_part("embedder")}
    with pytest.raises(ConfigError, match="window_factor='fast'"):
        RectifIDMethod("rectifid", runtime, window_factor="fast", **parts)
    with pytest.raises(ConfigError, match="no_detection='skip'"):
        RectifIDMethod("rectifid", runtime, no_detection="skip", **parts)
    with pytest.raises(ConfigError, match="is not a SubjectDetector"):
        RectifIDMethod("rectifid", runtime, detector=tiny_part("embedder"), embedder=parts["embedder"])


def test_presets(make_config):
    fair = method_spec(make_config("method=rectifid"))
    assert (fair.height, fair.prompt_form, fair.fixed_seed, fair.model["name"]) == (
        128,
        "plan",
        None,
        "tiny_perflow",
    )
    paper = method_spec(make_config("method=rectifid", "preset=paper"))
    assert (paper.height, paper.width, paper.prompt_form, paper.clip_t_prompt_form) == (
        512,
        512,
        "location",
        "location",
    )
    assert paper.fixed_seed == 123 and "fixed_seed" not in paper.method
    assert (fair.method["lr"], paper.method["lr"]) == (2.0, 1.0)  # upstream's --guidance; the fork's generate()
    real = method_spec(make_config("method=rectifid", "model=lcm_dreamshaper"))
    assert real.model["pretrained"] == "hansyan/perflow-sd15-dreamshaper" and real.method["iterations"] == 50
    assert real.method["detector"]["pretrained"] == "google/owlvit-base-patch32" and not real.method["detector"]["tiny"]


def test_identity_loss_is_the_written_out_formula():
    """With a box as large as the crop size no resizing happens, so the loss is the formula on raw pixels."""
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, SIZE, SIZE, generator=generator)
    loss = toy_loss(FixedBoxDetector(Box(10, 20, 42, 52)), cos_weight=100.0, pixel_l1_weight=7.0)
    reference = toy_reference(loss)
    crop = image[0, :, 20:52, 10:42]  # [3, 32, 32]
    mean = crop.mean(dim=(1, 2)) - 0.5
    target = torch.tensor([round(255 * c) / 255 for c in TARGET]) - 0.5  # the PNG-like 8-bit reference
    cosine = float(mean @ target / (mean.norm() * target.norm()))
    l1 = float((crop - (target + 0.5).view(3, 1, 1)).abs().mean())
    result = loss(image, reference)
    assert result.total.item() == pytest.approx(100 * (1 - cosine) + 7.0 * l1, rel=1e-5)
    assert (result.identity, result.pixel) == pytest.approx((100 * (1 - cosine), 7.0 * l1), rel=1e-5)


def test_owlvit_box_is_the_top_score_in_pixels():
    from monkey.baselines.rectifid.detector import OwlVitDetector

    best = OwlVitDetector.best  # only the box maths, no weights
    logits = torch.tensor([[[-2.0], [1.0], [0.0]]])  # [1, N=3, Q=1]; sigmoid(1.0) = 0.73 wins
    boxes = torch.tensor([[[0.1, 0.1, 0.1, 0.1], [0.5, 0.5, 0.5, 0.5], [0.9, 0.9, 0.1, 0.1]]])  # cx, cy, w, h
    box = best(logits, boxes, 100, 200, 0.4)
    assert (box.as_list(), box.score) == ([25, 50, 75, 150], pytest.approx(0.7310586))
    assert best(logits, boxes, 100, 200, 0.8) is None  # below the threshold: nothing detected
    assert best(logits, boxes, 100, 200, float(torch.sigmoid(torch.tensor(1.0)))) is None  # kept: score > threshold
    assert best(logits, torch.tensor([[[0, 0, 0.5, 0.5], [1.2, 0.5, 0.2, 0.2], [0, 0, 1, 1]]]), 100, 200, 0.0) is None


@pytest.mark.parametrize("top_logit", [-2.3, -2.1, 0.5])  # sigmoid: 0.091, 0.109, 0.62 around upstream's 0.1
def test_owlvit_boxes_are_the_ones_transformers_post_processing_gives_upstream(top_logit):
    """RectifID's code takes the arg-max of transformers' post-processed boxes (text query: default
    threshold 0.1, nothing kept -> the whole photo; image query: threshold 0, NMS 0.3). Our box must be
    that box, rounded, on a non-square image; the defaults must be upstream's."""
    import inspect

    from monkey.baselines.rectifid.detector import OwlVitDetector
    from transformers import OwlViTImageProcessor
    from transformers.models.owlvit.modeling_owlvit import (
        OwlViTImageGuidedObjectDetectionOutput,
        OwlViTObjectDetectionOutput,
    )

    defaults = inspect.signature(OwlVitDetector).parameters
    assert (defaults["text_threshold"].default, defaults["image_threshold"].default) == (0.1, 0.0)
    generator = torch.Generator().manual_seed(11)
    logits = torch.full((1, 6, 1), -6.0) + torch.rand(1, 6, 1, generator=generator)
    logits[0, 4, 0] = top_logit
    boxes = torch.rand(1, 6, 4, generator=generator) * 0.5 + 0.2  # cx, cy, w, h inside the image
    width, height = 96, 64
    post = OwlViTImageProcessor()
    text = post.post_process_object_detection(
        OwlViTObjectDetectionOutput(logits=logits, pred_boxes=boxes), target_sizes=torch.tensor([[height, width]])
    )[0]
    image = post.post_process_image_guided_detection(
        OwlViTImageGuidedObjectDetectionOutput(logits=logits.clone(), target_pred_boxes=boxes),
        target_sizes=torch.tensor([[height, width]]),
    )[0]

    def upstream(result):
        if len(result["scores"]) == 0:
            return None
        return [round(v) for v in result["boxes"][result["scores"].argmax()].tolist()]

    ours_text = OwlVitDetector.best(logits, boxes, width, height, defaults["text_threshold"].default)
    ours_image = OwlVitDetector.best(logits, boxes, width, height, defaults["image_threshold"].default)
    assert (ours_text and ours_text.as_list()) == upstream(text)
    assert ours_image.as_list() == upstream(image)
    assert (upstream(text) is None) == (top_logit < -2.2)


def test_each_query_uses_its_own_threshold_and_the_images_width_and_height():
    """Text query (reference photo) and image query (generated image) read their own thresholds, and
    boxes are scaled by each image's (width, height), on non-square images."""
    from monkey.baselines.rectifid.detector import OwlVitDetector

    detector = OwlVitDetector(tiny=True, text_threshold=0.25, image_threshold=0.75)
    calls = []
    detector.best = lambda logits, boxes, width, height, threshold: calls.append((width, height, threshold))
    detector.find_by_text(Image.new("RGB", (48, 32), (200, 40, 40)), "dog")
    detector.find_like(torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(1)), Image.new("RGB", (8, 8)))
    assert calls == [(48, 32, 0.25), (56, 40, 0.75)]


def test_crops_are_nearest_resized_and_embedded_as_upstream_prepares_them():
    """The generated crop: nearest-resized to 224 (F.interpolate's default) and normalised with CLIP's
    mean and std; the reference: DINOv2's image processor (shortest side 256 bicubic, centre crop 224,
    ImageNet statistics), each recomputed here by hand with PIL and transformers' constants."""
    from monkey.baselines.rectifid.detector import to_uint8
    from monkey.baselines.rectifid.embedder import Dinov2Embedder
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    embedder = Dinov2Embedder(tiny=True)
    loss = IdentityLoss(FixedBoxDetector(Box(3, 5, 33, 25)), embedder, size=224)  # a 30 x 20 box
    generator = torch.Generator().manual_seed(2)
    image = torch.rand(1, 3, 40, 48, generator=generator)
    crop = image[:, :, 5:25, 3:33]  # [1, 3, 20, 30]
    rows, cols = (torch.arange(224) * 20 // 224), (torch.arange(224) * 30 // 224)  # nearest: floor(i * in / out)
    nearest = crop[:, :, rows][:, :, :, cols]  # [1, 3, 224, 224]
    assert torch.equal(crop_resized(image, Box(3, 5, 33, 25), 224, loss.resize), nearest)
    clip = (nearest - torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = embedder.model(pixel_values=clip).last_hidden_state[:, 0]
        assert torch.allclose(embedder.embed(nearest), expected, atol=1e-5)

    photo = Image.fromarray(to_uint8(torch.rand(3, 50, 70, generator=generator)))  # 70 x 50 px, no box: whole photo
    reference = IdentityLoss(FixedBoxDetector(None), embedder, size=224).reference(photo, "dog", torch.device("cpu"))
    resized = photo.resize((round(256 * 70 / 50), 256), Image.BICUBIC)  # shortest side 256
    left, top = (resized.width - 224) // 2, (resized.height - 224) // 2
    pixels = torch.from_numpy(np.array(resized.crop((left, top, left + 224, top + 224)))).permute(2, 0, 1)[None] / 255
    imagenet = (pixels - torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_DEFAULT_STD
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = embedder.model(pixel_values=imagenet.float()).last_hidden_state[:, 0]
    assert torch.allclose(reference.embedding, expected, atol=1e-4)
    photo_pixels = torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None] / 255  # [1, 3, 50, 70]
    rows, cols = (torch.arange(224) * 50 // 224), (torch.arange(224) * 70 // 224)
    assert torch.equal(reference.pixels, photo_pixels[:, :, rows][:, :, :, cols].float())  # the L1 term's reference
    with torch.no_grad():  # the loss itself, on the generated crop: both terms from the hand-made pieces
        result = loss(image, reference)
        generated = embedder.model(pixel_values=clip).last_hidden_state[:, 0]
    cosine = float(torch.nn.functional.cosine_similarity(generated, expected))
    l1 = float((nearest - reference.pixels).abs().mean())
    assert (result.identity, result.pixel) == pytest.approx((100 * (1 - cosine), 1000 * l1), rel=1e-4, abs=1e-3)
    assert to_uint8(torch.full((3, 1, 1), 0.999))[0, 0, 0] == 254  # `(image * 255).int()` truncates


class LinearSampler:
    """x -> gain_i * x + offset per step, decode = identity: every gradient is known in closed form."""

    gains = (0.9, 0.8, 1.1, 0.7)
    pipe = SimpleNamespace(scheduler=None)

    def timesteps(self, device):
        return torch.arange(4)

    def step(self, x, t, offset):
        return self.gains[int(t)] * x + offset

    def decode(self, x):
        return x


def test_several_iterations_follow_the_anchored_recursion():
    """Three iterations on a linear sampler with L = |x_4 - target|^2 / 2 against the recursion written
    in RectifID's own form: x_{i+1} = A_i + (r_i - R_i) + f (P_i - R_i), P_i = r_i - lr * clip(g_i),
    g_i = dL/dx_i = prod(gains[i:]) * (x_4 - target)."""
    generator = torch.Generator().manual_seed(5)
    noise, offset, target = (torch.randn(1, 2, 3, 3, generator=generator, dtype=torch.float64) for _ in range(3))
    sampler, lr, clip, f, iterations = LinearSampler(), 0.7, 1.5, 0.9, 3

    def loss_fn(image):
        total = 0.5 * ((image - target) ** 2).sum()
        return [SimpleNamespace(total=total, identity=0.0, pixel=float(total.detach()), detected=True)]

    result = AnchoredGuidance(
        sampler, GuidanceSettings(iterations=iterations, lr=lr, grad_clip=clip, window_factor=f, autocast=False)
    ).run(noise, offset, loss_fn)

    anchor, last_raw, params, losses = [None] * 4, [None] * 4, [None] * 4, []
    for k in range(iterations + 1):
        x = noise
        for i in range(4):
            r = sampler.gains[i] * x + offset
            if k == 0:
                anchor[i], last_raw[i], params[i] = r, r, r
            x = anchor[i] + (r - last_raw[i]) + f * (params[i] - last_raw[i])
            anchor[i], last_raw[i], params[i] = x, r, r
        if k == iterations:
            break
        losses.append(float(0.5 * ((x - target) ** 2).sum()))
        for i in range(4):
            g = torch.tensor(sampler.gains[i:]).prod() * (x - target)
            params[i] = params[i] - lr * g * min(1.0, clip / float(g.norm()))
    torch.testing.assert_close(result.latents, x)
    assert [r.loss for r in result.history] == pytest.approx(losses)
    assert losses[-1] < losses[0]


def test_checkpointing_changes_no_gradient_and_is_put_back(method, request_):
    noise, embeds = noise_and_embeds(method, request_)
    loss = toy_loss()
    reference = toy_reference(loss)
    runs = {}
    for checkpointing in (False, True):
        settings = GuidanceSettings(iterations=1, gradient_checkpointing=checkpointing)
        runs[checkpointing] = AnchoredGuidance(method.sampler, settings).run(
            noise, embeds, lambda image: [loss(image, reference)]
        )
    torch.testing.assert_close(runs[True].history[0].grad_norms, runs[False].history[0].grad_norms, rtol=1e-5, atol=0)
    torch.testing.assert_close(runs[True].latents, runs[False].latents, rtol=1e-5, atol=1e-6)
    assert not method.pipe.unet.is_gradient_checkpointing and not method.pipe.vae.is_gradient_checkpointing


def test_the_runtime_vae_precision_is_the_one_loaded():
    """runtime.vae_dtype enters the config hash where it differs from dtype, so the method must load the
    VAE in it (planted: load_pipeline(model, device, dtype) without it left the VAE in bfloat16)."""
    method = tiny_rectifid(tiny_perflow_runtime("bfloat16", "float32"), iterations=0)
    assert method.pipe.unet.dtype == torch.bfloat16 and method.pipe.vae.dtype == torch.float32
