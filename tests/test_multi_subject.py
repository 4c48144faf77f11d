"""Several subjects in one image (monkey.multi): pairing, disjoint masks, wiring against diffusers' own
masked multi-image IP-Adapter, and MONKEY's bytes with one subject."""

import hashlib
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
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
GRID, CROP, PATCH = 16, 16, 14  # tiny DINOv2: a 256 px image is cropped 16 px each side into 16 x 16 patches of 14 px


class ChosenSegmenter:
    """Answers with the masks a test chose, per (image content, subject word): a stand-in for CLIPSeg that
    also checks the word the module prompts with (an unknown pair is a KeyError)."""

    def __init__(self):
        self.masks: dict[tuple[str, str], np.ndarray] = {}

    def key(self, image: Image.Image, word: str) -> tuple[str, str]:
        return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()[:12], word

    def choose(self, image: Image.Image, word: str, mask: np.ndarray) -> None:
        self.masks[self.key(image, word)] = mask

    def __call__(self, image, source):
        return self.masks[self.key(image, source.subject_word)]


def patches_by_hand(mask: np.ndarray) -> list[tuple[int, int]]:
    """The (row, col) patches at least half inside `mask` ([256, 256] bool), patch by patch."""
    out = []
    for y in range(GRID):
        for x in range(GRID):
            top, left = CROP + PATCH * y, CROP + PATCH * x
            if mask[top : top + PATCH, left : left + PATCH].mean() >= 0.5:
                out.append((y, x))
    return out


def match_by_hand(generated, gen_mask, reference, ref_mask) -> float:
    """Mean over the reference's subject patches of the best cosine with a generated subject patch."""
    best = []
    for ry, rx in patches_by_hand(ref_mask):
        r = reference[ry, rx].tolist()
        best.append(max(math.fsum(a * b for a, b in zip(r, generated[gy, gx].tolist(), strict=True))
                        for gy, gx in patches_by_hand(gen_mask)))  # fmt: skip
    return sum(best) / len(best)


def test_identity_and_mixing_match_the_reference_patches_inside_each_region(pair_items, tmp_path):
    """Two subjects side by side in a 256 px image; the regions are irregular, the references' subject masks
    their bright pixels: identity of i = reference i's subject patches matched in region i, mixing = in
    region j, both recomputed patch by patch; a subject not found is NaN and flagged, never 0."""
    from monkey.eval.backbones import backbone_specs, load_backbone
    from monkey.eval.multi_subject import References, score_image, subject_sources
    from monkey.eval.patch_tokens import patch_tokens

    from monkey.hashing import to_plain

    (spec,) = [s for s in backbone_specs(to_plain(compose_config().eval.backbones)) if s.key == "dino"]
    dino = load_backbone(spec, "cpu", 32)  # eval=tiny's DINOv2: resize 256, crop 224, 14 px patches
    item = pair_items[0]
    a, b = item.sources
    row = item.describe()
    photos, paths = [], []
    for k, source in enumerate((a, b)):  # the references as 256 px photos (the hand grid needs no resize)
        photos.append(source.load_image().resize((256, 256)))
        paths.append(tmp_path / f"ref{k}.png")
        photos[-1].save(paths[-1])
    row["source_paths"] = [str(path) for path in paths]
    image = Image.new("RGB", (256, 256))
    image.paste(photos[0].resize((128, 256)), (0, 0))
    image.paste(photos[1].resize((128, 256)), (128, 0))
    cols, rows_ = np.meshgrid(np.arange(256), np.arange(256))
    regions = [(cols < 120) & (rows_ < 200), (cols >= 140) & (rows_ >= 30)]  # [H, W] bool each
    ref_masks = []
    segmenter = ChosenSegmenter()
    for k, (source, photo) in enumerate(zip((a, b), photos, strict=True)):
        grey = np.asarray(photo.convert("L"), dtype=np.float64)
        ref_masks.append(grey > grey.mean())
        segmenter.choose(photo, source.subject_word, ref_masks[-1])
        segmenter.choose(image, source.subject_word, regions[k])
    assert 0 < len(patches_by_hand(ref_masks[0])) < GRID * GRID  # the reference mask matters

    sources = subject_sources(row)
    scored = score_image(image, sources, segmenter, dino, References(segmenter, dino))
    gen = patch_tokens(dino, [image])[0]
    refs = patch_tokens(dino, photos)
    for i, j in ((0, 1), (1, 0)):
        identity = match_by_hand(gen, regions[i], refs[i], ref_masks[i])
        mixing = match_by_hand(gen, regions[j], refs[i], ref_masks[i])
        assert scored[i]["identity"] == pytest.approx(identity, abs=1e-6)
        assert scored[i]["mixing"] == pytest.approx(mixing, abs=1e-6)  # subject i where subject j should be
        assert abs(identity - mixing) > 1e-3  # the test tells the regions apart
        assert scored[i]["region"] == pytest.approx(regions[i].mean()) and scored[i]["flag"] == ""
    assert [r["scored_subject"] for r in scored] == [a.subject, b.subject]

    segmenter.choose(image, b.subject_word, np.zeros((256, 256), dtype=bool))  # subject b not found
    lost = score_image(image, sources, segmenter, dino)
    assert math.isnan(lost[1]["identity"]) and lost[1]["region"] == 0.0 and lost[1]["flag"] == "no_subject_generated"
    assert math.isnan(lost[0]["mixing"]) and lost[0]["flag"] == "no_other_region"
    assert lost[0]["identity"] == pytest.approx(scored[0]["identity"], abs=1e-9)
    assert lost[1]["mixing"] == pytest.approx(scored[1]["mixing"], abs=1e-9)  # b is still measured in a's region
    sliver = np.zeros((256, 256), dtype=bool)
    sliver[:, 100:105] = True  # pixels, but no patch half inside them
    segmenter.choose(photos[0], a.subject_word, sliver)
    thin = score_image(image, sources, segmenter, dino)
    assert math.isnan(thin[0]["identity"]) and "no_subject_patch_reference" in thin[0]["flag"]


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
    assert "## Several subjects in one image" in report and "(n=" in report
    table = pd.read_csv(root / "report" / "multi_subject.csv")
    assert set(table["method"]) == {"monkey_multi", "ip_adapter_multi", "ip_adapter_halves"}
    assert len(table) == 3 * 2 * len(items["monkey_multi"])  # every image, every subject
    flagged = table["flag"].fillna("") != ""
    assert (table["identity"].isna() <= flagged).all()  # an empty identity always says why


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
