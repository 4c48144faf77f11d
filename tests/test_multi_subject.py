"""Several subjects in one image (monkey.multi): pairing, disjoint masks, wiring against diffusers' own
masked multi-image IP-Adapter, and MONKEY's bytes with one subject."""

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
from monkey.baselines.ip_adapter_multi import IPAdapterMultiMethod
from PIL import Image

from monkey.adapter.masks import map_key
from monkey.adapter.method import MonkeyMethod
from monkey.adapter.sampler import SubjectBatch
from monkey.datasets.dreambooth import load_dreambooth
from monkey.errors import ConfigError
from monkey.methods.base import GenerationRequest
from monkey.multi.method import MonkeyMultiMethod, subject_embeds
from monkey.multi.plan import MultiWorkItem, build_multi_plan, check_method, group_subjects, subject_pool
from monkey.multi.regions import disjoint, item_regions
from monkey.plan import build_plan
from monkey.prompts import load_prompt_set

SIZE = 64
PAPER_LAYER = "up_blocks.1.attentions.1.transformer_blocks.0.attn2"
# few steps: every test pipeline call stays well under a second on the tiny model
FAST = {
    "initial_steps": 2,
    "capture_steps": [1],
    "final_steps": 3,
    "ip_steps": [0, 1, 2],
    "mask_steps": [0, 1, 2],
    "share": {"pass1": False, "pass2_prefix": False},
}
TEMPLATE = "{subjects} {location}"


def prompts():
    return load_prompt_set("two_subjects", "{subject_word} {location}")


def requests_for(items):
    return [GenerationRequest(item, item.prompt, item.seed, SIZE, SIZE) for item in items]


# ---- the plan ------------------------------------------------------------------------------
def test_pairing_uses_every_subject_equally_often_once_per_slot_with_distinct_words():
    sources = load_dreambooth()
    plan = build_multi_plan(sources, prompts(), 2, TEMPLATE, base_seed=3, limit_prompts=1)
    pool = subject_pool(sources)
    assert len(plan) == len(pool)
    for slot in (0, 1):  # every subject exactly once as the first and once as the second subject
        assert Counter(item.sources[slot].subject for item in plan) == Counter(s.subject for s in pool)
    assert all(item.sources[0].subject_word != item.sources[1].subject_word for item in plan)
    again = build_multi_plan(sources, prompts(), 2, TEMPLATE, base_seed=3, limit_prompts=1)
    other = build_multi_plan(sources, prompts(), 2, TEMPLATE, base_seed=4, limit_prompts=1)
    assert [i.item_id for i in again] == [i.item_id for i in plan]  # seeded
    assert [i.item_id for i in other] != [i.item_id for i in plan]


def test_a_multi_item_records_both_subjects_its_prompt_and_seed_and_stays_inside_the_run_folder():
    sources = load_dreambooth()
    plan = build_multi_plan(sources, prompts(), 2, TEMPLATE, seeds=2, limit_subjects=2, limit_prompts=2)
    first = {s.subject for s in sources[:2]}
    assert len(plan) == 2 * 2 * 2 and {item.source.subject for item in plan} == first  # an item's first subject
    item = plan[0]
    a, b = item.sources
    assert item.prompt == f"a {a.subject_word} and a {b.subject_word} {prompts().locations[0]}"
    row = item.describe()
    assert row["subjects"] == [a.subject, b.subject] and row["subject"] == a.subject
    assert row["source_paths"] == [str(a.image_path), str(b.image_path)] and row["seed"] == item.seed
    assert item.image_relpath("m") == f"images/m/dreambooth/{a.subject}+{b.subject}/00+00_p00_s0.png"
    assert len({i.item_id for i in plan}) == len(plan) and len({i.seed for i in plan}) == len(plan)
    with pytest.raises(ConfigError, match="distinct subject words"):
        group_subjects([s for s in sources if s.subject_word == "dog"][:2], 2, 0)
    with pytest.raises(ConfigError, match="takes one subject per image"):
        check_method(plan, "monkey.adapter.method.MonkeyMethod", "monkey")
    check_method(plan, "monkey.multi.method.MonkeyMultiMethod", "monkey_multi")


# ---- the overlap rule -----------------------------------------------------------------------
def test_overlaps_go_to_the_larger_normalised_map_and_the_masks_are_disjoint():
    masks = torch.tensor([[[1.0, 1.0, 0.0, 0.0]], [[0.0, 1.0, 1.0, 0.0]]])  # [K=2, 1, 4]
    scores = torch.tensor([[[0.9, 0.6, 0.1, 0.0]], [[0.0, 0.7, 0.8, 0.2]]])
    expected = torch.tensor([[[1.0, 0.0, 0.0, 0.0]], [[0.0, 1.0, 1.0, 0.0]]])  # cell 1: 0.7 > 0.6
    assert torch.equal(disjoint(masks, scores), expected)
    tie = disjoint(masks, torch.ones_like(scores))
    assert torch.equal(tie[:, 0, 1], torch.tensor([1.0, 0.0]))  # a tie: the earlier subject


def planted_record(tokens: int, hot: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
    """A joint K-subject record on a 4x4 grid: subject i's token 1 is 1 at cell hot[i], 0 elsewhere."""
    maps = torch.zeros(4, 4, len(hot) * tokens)
    for subject, (row, col) in enumerate(hot):
        maps[row, col, subject * tokens + 1] = 1.0
    return {map_key(PAPER_LAYER, 1): maps}


def test_each_subject_mask_comes_from_its_own_map():
    from monkey.adapter.settings import MonkeySettings

    settings = MonkeySettings(capture_steps=(1,))
    regions = item_regions(planted_record(4, [(0, 0), (3, 3)]), settings, 2, 4)
    assert regions.masks[0][0, 0] == 1 and regions.masks[0].sum() == 1
    assert regions.masks[1][3, 3] == 1 and regions.masks[1].sum() == 1
    assert regions.info()["subject_masks"][1]["mask_area_disjoint"] == 1 / 16


# ---- sampling on the tiny twin -----------------------------------------------------------
@pytest.fixture(scope="module")
def single_items():
    return build_plan(load_dreambooth(), prompts(), limit_subjects=1, limit_prompts=1)


@pytest.fixture(scope="module")
def pair_items():
    return build_multi_plan(load_dreambooth(), prompts(), 2, TEMPLATE, limit_subjects=1, limit_prompts=1)


def test_with_one_subject_monkey_multi_makes_monkeys_bytes(tiny_runtime, single_items):
    requests = requests_for(single_items)
    plain = MonkeyMethod("monkey", tiny_runtime, **FAST).generate(requests)
    multi = MonkeyMultiMethod("monkey_multi", tiny_runtime, **FAST).generate(requests)
    for a, b in zip(plain, multi, strict=True):
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        assert a.artifacts.keys() == b.artifacts.keys() and a.info == b.info
        assert np.array_equal(np.asarray(a.artifacts["mask"]), np.asarray(b.artifacts["mask"]))


@torch.no_grad()
def test_each_subjects_tokens_act_only_inside_its_own_mask_as_the_stock_processor(tiny_runtime, pair_items):
    """Planted maps put subject 0 in the top-left and subject 1 in the bottom-right cell; pass 2 of
    monkey_multi equals the stock pipeline given those masks image by image (ip_adapter_masks), and
    differs from it with the masks swapped."""
    fast = {**FAST, "final_steps": 2, "ip_steps": [0, 1], "mask_steps": [0, 1]}
    method = MonkeyMultiMethod("monkey_multi", tiny_runtime, **fast)
    pipe, sampler = method.pipe, method.sampler
    item = pair_items[0]
    embeds = subject_embeds(method.embedder, requests_for([item]))  # [1, 2, D]
    batch = SubjectBatch([item.prompt], [item.seed], embeds, SIZE, SIZE, method.embedder.negative_embeds())
    tokens = pipe.unet.encoder_hid_proj.image_projection_layers[0].num_image_text_embeds
    record = planted_record(tokens, [(0, 0), (3, 3)])
    output = sampler(batch, records=[record], output_type="latent")
    masks = output.image_masks  # [1, 2, H, W]
    assert masks[0, 0, :16, :16].all() and masks[0, 1, -16:, -16:].all() and masks.sum() == 2 * 16 * 16

    def stock(ip_masks: torch.Tensor) -> torch.Tensor:
        pipe.set_ip_adapter_scale(1.0)
        return pipe(
            prompt=[item.prompt],
            height=SIZE,
            width=SIZE,
            num_inference_steps=fast["final_steps"],
            guidance_scale=8.5,
            generator=[torch.Generator("cpu").manual_seed(item.seed)],
            ip_adapter_image_embeds=[embeds],
            cross_attention_kwargs={"ip_adapter_masks": [ip_masks]},
            output_type="latent",
        ).images

    assert torch.allclose(output.images, stock(masks), atol=1e-5, rtol=0)
    assert not torch.allclose(output.images, stock(masks.flip(1)), atol=1e-3, rtol=0)


@torch.no_grad()
def test_a_subjects_tokens_change_the_attention_output_only_inside_its_mask(tiny_pipe):
    """One IP-Adapter layer with two images and disjoint masks: changing subject 1's image tokens moves
    the stock processor's output only at the positions of subject 1's mask."""
    attn = tiny_pipe.unet.get_submodule(PAPER_LAYER)
    processor = attn.processor
    assert isinstance(processor, IPAdapterAttnProcessor2_0)
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, 16, attn.to_q.in_features, generator=generator)  # [1, 4x4, C]
    text = torch.randn(1, 5, attn.to_k.in_features, generator=generator)
    ip = torch.randn(1, 2, processor.num_tokens[0], processor.to_k_ip[0].in_features, generator=generator)
    masks = torch.zeros(1, 2, 4, 4)
    masks[0, 0, :, :2], masks[0, 1, 1:3, 2:] = 1, 1  # disjoint; subject 1 holds 4 of 16 cells
    changed = ip.clone()
    changed[:, 1] += torch.randn(changed[:, 1].shape, generator=generator)
    before = processor(attn, hidden, (text, [ip]), ip_adapter_masks=[masks])
    after = processor(attn, hidden, (text, [changed]), ip_adapter_masks=[masks])
    moved = (before - after).abs().amax(dim=-1)[0].reshape(4, 4) > 0
    assert torch.equal(moved, masks[0, 1] > 0)


@torch.no_grad()
def test_the_ip_adapter_baselines_are_the_stock_pipeline_without_and_with_half_masks(tiny_runtime, pair_items):
    item = pair_items[0]
    none = IPAdapterMultiMethod("ip_adapter_multi", tiny_runtime, regions="none", num_inference_steps=2)
    halves = IPAdapterMultiMethod("ip_adapter_halves", tiny_runtime, regions="halves", num_inference_steps=2)
    pipe = none.pipe
    embeds = subject_embeds(none.embedder, requests_for([item]))

    def stock(attention):
        pipe.set_ip_adapter_scale(1.0)
        return pipe(
            prompt=[item.prompt],
            height=SIZE,
            width=SIZE,
            num_inference_steps=2,
            generator=[torch.Generator("cpu").manual_seed(item.seed)],
            ip_adapter_image_embeds=[embeds],
            cross_attention_kwargs=attention,
        ).images[0]

    left_right = torch.zeros(1, 2, SIZE, SIZE)
    left_right[0, 0, :, : SIZE // 2], left_right[0, 1, :, SIZE // 2 :] = 1, 1
    made = none.generate(requests_for([item]))[0].image
    assert np.array_equal(np.asarray(made), np.asarray(stock(None)))
    made = halves.generate(requests_for([item]))[0].image
    assert np.array_equal(np.asarray(made), np.asarray(stock({"ip_adapter_masks": [left_right]})))
    assert isinstance(item, MultiWorkItem)


# ---- metrics ------------------------------------------------------------------------------
class HalvesSegmenter:
    """Subject slot 0 on the left half, slot 1 on the right half, found by word (a stand-in for CLIPSeg)."""

    def __init__(self, words):
        self.words = list(words)

    def __call__(self, image, source):
        region = np.zeros((image.height, image.width), dtype=bool)
        half = image.width // 2
        if self.words.index(source.subject_word) == 0:
            region[:, :half] = True
        else:
            region[:, half:] = True
        return region


class PixelBackbone:
    """Embeds an image as its normalised mean colour per 2x2 block of a 4x4 thumbnail (a computation
    written out here, independent of the module's)."""

    def embed_images(self, images):
        rows = [np.asarray(image.convert("RGB").resize((4, 4)), dtype=np.float64).ravel() for image in images]
        out = torch.tensor(np.stack(rows), dtype=torch.float64)
        return out / out.norm(dim=-1, keepdim=True)


def test_identity_is_scored_inside_each_subjects_own_region_and_mixing_inside_the_others(pair_items):
    from monkey.eval.multi_subject import score_image, subject_sources

    item = pair_items[0]
    a, b = item.sources
    left, right = a.load_image().resize((32, 64)), b.load_image().resize((32, 64))
    image = Image.new("RGB", (64, 64))
    image.paste(left, (0, 0))
    image.paste(right, (32, 0))  # subject a on the left, b on the right: what halves regions find
    sources = subject_sources(item.describe())
    rows = score_image(image, sources, HalvesSegmenter([a.subject_word, b.subject_word]), PixelBackbone())
    backbone = PixelBackbone()
    crops = backbone.embed_images([image.crop((0, 0, 32, 64)), image.crop((32, 0, 64, 64))])
    refs = backbone.embed_images([a.load_image(), b.load_image()])
    assert rows[0]["identity"] == pytest.approx(float(crops[0] @ refs[0]))
    assert rows[1]["identity"] == pytest.approx(float(crops[1] @ refs[1]))
    assert rows[0]["mixing"] == pytest.approx(float(crops[1] @ refs[0]))  # a measured where b should be
    assert rows[1]["mixing"] == pytest.approx(float(crops[0] @ refs[1]))
    assert rows[0]["region"] == 0.5 and rows[0]["scored_subject"] == a.subject


def test_the_experiment_runs_all_three_methods_on_the_same_items_into_the_report(tmp_path):
    from bad_input_cases import run_entry

    from monkey.store import RunStore

    argv = ["experiment=multi_subject", "generation.height=64", "generation.width=64", "plan.limit.prompts=1"]
    outcome = run_entry("monkey-bench", [*argv, f"run.root={tmp_path}"])
    assert outcome.code == 0, outcome.output[-3000:]
    root = tmp_path / "multi_subject"
    items = {}
    for method in ("monkey_multi", "ip_adapter_multi", "ip_adapter_halves"):
        (folder,) = root.glob(f"{method},*")
        rows = RunStore(folder).rows()
        items[method] = sorted((r["item_id"], r["prompt"], r["seed"]) for r in rows)
        assert all(len(r["subjects"]) == 2 for r in rows)
        if method == "monkey_multi":
            for row in rows:
                masks = [np.asarray(Image.open(folder / row["artifacts"][f"mask_{i}"])) > 0 for i in (0, 1)]
                assert not (masks[0] & masks[1]).any()  # disjoint on the real maps too
    assert items["monkey_multi"] == items["ip_adapter_multi"] == items["ip_adapter_halves"]
    report = (root / "report" / "report.md").read_text()
    assert "## Several subjects in one image" in report
    table = pd.read_csv(root / "report" / "multi_subject.csv")
    assert set(table["method"]) == {"monkey_multi", "ip_adapter_multi", "ip_adapter_halves"}
    assert len(table) == 3 * 2 * len(items["monkey_multi"])  # every image, every subject


@pytest.mark.parametrize(
    ("method", "override", "named"),
    [
        ("monkey_multi", "method.mask_source=segmenter", "method.mask_source='segmenter'"),
        ("monkey_multi", "+control=canny", "method.control"),
        ("ip_adapter_multi", "+control=canny", "method.control"),
    ],
)
def test_multi_subject_methods_refuse_what_their_calls_do_not_take_yet(tmp_path, method, override, named):
    """An image mask source or a ControlNet would be dropped by the multi-subject methods' own calls: refused
    in one line naming the key, never run without them."""
    from bad_input_cases import run_entry

    argv = ["hydra.mode=RUN", f"method={method}", "plan.multi.subjects=2", "plan.limit.prompts=1", override]
    outcome = run_entry("monkey-bench", [*argv, f"run.root={tmp_path}", "run.stages=[generate]"])
    assert outcome.code == 2, outcome.output[-2000:]
    assert named in outcome.output
