"""RectifID with several items per call (issue 30, point 2): item k alone equals item k inside a batch
of 4 (two subjects, four prompts and seeds), compared on the tiny twins (PeRFlow UNet and VAE, OWL-ViT,
DINOv2) in float32 on the CPU.

The bound, and why it holds: every operation on the way from an item's noise to its loss acts on that
item's rows alone (convolutions, group and layer norms, attention per sample; one detector call and one
crop per item; the loss is the SUM of per-item losses, so d(sum)/d(item k) is item k's own gradient;
clipping by each (step, item) norm; SGD without momentum), so batched and alone are the same function.
Only the rounding of batched kernels differs: measured on this machine after 3 iterations (lr 2, the
clip active), latents differ by at most 6e-7 of their largest magnitude (3.1e-5 on latents reaching 54),
losses by 2.4e-7 and gradient norms by 8.4e-7 relative, images by 0 grey levels; the tolerances below
(1e-5 relative on latents, losses and gradient norms; 1 grey level on pixels) leave a 10x margin,
while a batch-mixing bug (a mean over the batch: gradients / 4; one norm for the whole batch; a
reference or a prompt given to the wrong row) moves them by orders of magnitude more.

Planted bugs, one at a time, each caught here:
- the mean of the per-item losses instead of their sum (gradients / 4) -> both batch tests
- one gradient norm per step over the whole batch instead of one per item -> both batch tests
- references reversed in IdentityLoss.batch -> both batch tests
- the text rows interleaved [u1, c1, u2, c2, ...] instead of [u1..uB, c1..cB] -> both batch tests
- every item drawn from the first item's seed -> test_method_batch_of_four_gives_each_items_image_and_row
"""

import numpy as np
import pytest
import torch
from monkey.baselines.rectifid.detector import Box, SubjectDetector
from monkey.baselines.rectifid.guidance import AnchoredGuidance
from rectifid_helpers import one_torch_thread, tiny_perflow_runtime, tiny_rectifid

from monkey.datasets.dreambooth import load_dreambooth
from monkey.methods.base import GenerationRequest
from monkey.plan import build_plan
from monkey.prompts import load_prompt_set

SIZE = 64
LATENT_RTOL = 1e-5  # of the largest latent magnitude
LOSS_RTOL = 1e-5


class QueryKeyedDetector(SubjectDetector):
    """A box per subject (keyed by the reference crop's size), so rows of two subjects get different
    boxes and a reference given to the wrong row changes that row's crop; records every call."""

    def __init__(self):
        self.calls: list[tuple[int, int]] = []

    def find_by_text(self, image, text):
        return None  # the whole photo: each subject's own reference crop

    def find_like(self, image, query):
        self.calls.append(query.size)
        side = 16 + (query.size[0] * 7 + query.size[1]) % 40  # [16, 56)
        return Box(2, 4, 2 + side, min(4 + side + 3, SIZE), score=0.5)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def method():
    return tiny_rectifid(tiny_perflow_runtime(), iterations=3, lr=2.0, grad_clip=1.0)


@pytest.fixture(scope="module")
def requests_():
    """Four items: two subjects x two prompts, each with its own seed."""
    items = build_plan(
        load_dreambooth(), load_prompt_set("locations", "{subject_word} {location}"), limit_subjects=2, limit_prompts=2
    )
    requests = [GenerationRequest(item=i, prompt=i.prompt, seed=i.seed, height=SIZE, width=SIZE) for i in items]
    assert len({r.item.source.source_id for r in requests}) == 2 and len({r.seed for r in requests}) == 4
    return requests


def guided(method, requests):
    references = method.batch_references(requests)
    noise = torch.cat([method.initial_noise(r) for r in requests])
    embeds = method.sampler.text_embeds([r.prompt for r in requests], method.runtime.device)
    result = AnchoredGuidance(method.sampler, method.settings).run(
        noise, embeds, lambda images: method.loss.batch(images, references)
    )
    return result


def test_guided_batch_of_four_matches_each_item_alone(method, requests_):
    """Per item: the final latents, every iteration's loss, its gradient norms before clipping (per
    step) and its box, alone and inside the batch."""
    detector = QueryKeyedDetector()
    real = method.loss.detector
    method.loss.detector = detector
    try:
        alone = [guided(method, [request]) for request in requests_]
        calls_alone = len(detector.calls)
        batch = guided(method, requests_)
    finally:
        method.loss.detector = real
    assert calls_alone == 4 * 3 and len(detector.calls) == 2 * 4 * 3  # one detector call per item and pass
    assert len(batch.histories) == 4 and batch.latents.shape == (4, 4, SIZE // 8, SIZE // 8)
    difference = (torch.cat([a.latents for a in alone]) - batch.latents).abs().max().item()
    bound = LATENT_RTOL * batch.latents.abs().max().item()  # the tiny UNet's latents reach ~50
    assert difference <= bound, (difference, bound)
    for k, single in enumerate(alone):
        for one, inside in zip(single.history, batch.histories[k], strict=True):
            assert inside.loss == pytest.approx(one.loss, rel=LOSS_RTOL)
            assert (inside.identity, inside.pixel) == pytest.approx((one.identity, one.pixel), rel=LOSS_RTOL, abs=1e-6)
            assert inside.grad_norms == pytest.approx(one.grad_norms, rel=LOSS_RTOL)
    assert any(n > method.settings.grad_clip for h in batch.histories for r in h for n in r.grad_norms)  # clip active
    assert len({h[0].loss for h in batch.histories}) == 4  # four different optimisations
    moved = (batch.latents - guided_zero(method, requests_)).abs().amax(dim=(1, 2, 3))
    assert (moved > 100 * bound).all(), moved  # the guidance moved every item far beyond the bound


def guided_zero(method, requests):
    """The same batch without guidance: the plain sampler's latents."""
    noise = torch.cat([method.initial_noise(r) for r in requests])
    embeds = method.sampler.text_embeds([r.prompt for r in requests], method.runtime.device)
    with torch.no_grad():
        return method.sampler.sample(noise, embeds)


def test_method_batch_of_four_gives_each_items_image_and_row(method, requests_):
    """The harness call: generate(4 requests) against four generate([request]) calls, on the real tiny
    OWL-ViT and DINOv2; every row's figures and the image within the stated bound."""
    alone = [method.generate([request])[0] for request in requests_]
    batch = method.generate(requests_)
    assert len(batch) == 4
    for single, inside in zip(alone, batch, strict=True):
        pixels = np.abs(np.asarray(single.image, dtype=np.int16) - np.asarray(inside.image, dtype=np.int16))
        assert pixels.max() <= 1 and pixels.mean() < 0.01
        for key in ("final_loss", "first_loss", "final_identity_loss", "final_pixel_loss"):
            assert inside.info[key] == pytest.approx(single.info[key], rel=LOSS_RTOL, abs=1e-6), key
        exact = ("iterations", "subject_box", "reference_box", "noise_seed", "no_detection_fallbacks")
        assert {k: inside.info[k] for k in exact} == {k: single.info[k] for k in exact}
    assert [r.info["noise_seed"] for r in batch] == [r.seed for r in requests_]
    images = [np.asarray(r.image, dtype=np.int16) for r in batch]
    assert all(np.abs(images[0] - other).mean() > 1 for other in images[1:])  # four different images


def test_a_batch_of_two_sizes_is_refused(method, requests_):
    other = GenerationRequest(item=requests_[1].item, prompt="x", seed=1, height=SIZE, width=SIZE + 8)
    with pytest.raises(ValueError, match="one size"):
        method.generate([requests_[0], other])
