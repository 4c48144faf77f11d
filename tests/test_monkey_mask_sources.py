"""MONKEY's image mask sources (monkey.adapter.mask_sources): which image and subject reach the segmenter
and SAM, which mask reaches pass 2, how the pass-1 image is cached for the variants of a sweep, and the
ablation preset end to end."""

import numpy as np
import pytest
import torch
from monkey_helpers import load_tiny, settings, subject_embeds
from PIL import Image
from test_cli import run_cli

from monkey.adapter.mask_sources import RefinedMaskSource, SegmenterMaskSource
from monkey.adapter.refine import RefineRule
from monkey.adapter.sampler import MonkeySampler, SubjectBatch
from monkey.adapter.sharing import SharedWork, ShareSettings
from monkey.datasets.dreambooth import load_dreambooth
from monkey.methods.base import build_method
from monkey.rank.segmenters import ClipSegSegmenter
from monkey.store import RunStore

PROMPTS, SEEDS = ["dog in the snow", "cat on the beach"], [5, 6]


def two_subjects(pipe) -> tuple[SubjectBatch, list]:
    """A batch of two items with different subjects: a swapped image or source shows."""
    sources = load_dreambooth()[:2]
    embeds = torch.cat([subject_embeds(pipe, 0), subject_embeds(pipe, 1)])  # [2, 1, D]
    return SubjectBatch(PROMPTS, SEEDS, embeds, 64, 64), sources


class HalfSegmenter:
    """A segmenter whose mask tells the images apart: the cells brighter than the image's median
    red, and which records what it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, image: Image.Image, source) -> np.ndarray:
        self.calls.append((np.asarray(image).copy(), source.subject))
        red = np.asarray(image)[..., 0].astype(float)
        return red > np.median(red)


class GridSam:
    """Automatic 'segments': the four quadrants, and the whole left half."""

    def __init__(self):
        self.images = []

    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        self.images.append(np.asarray(image).copy())
        segments = []
        for rows in (slice(0, 32), slice(32, 64)):
            for cols in (slice(0, 32), slice(32, 64)):
                segment = torch.zeros(64, 64, dtype=torch.bool)
                segment[rows, cols] = True
                segments.append(segment)
        left = torch.zeros(64, 64, dtype=torch.bool)
        left[:, :32] = True
        return [*segments, left]


def test_the_segmenter_sees_each_items_pass1_image_and_its_mask_drives_pass2(tiny_pipe):
    batch, sources = two_subjects(tiny_pipe)
    pass1 = MonkeySampler(tiny_pipe, settings("tiny", save_pass1_image=True)).record(batch)
    segmenter = HalfSegmenter()
    knobs = settings("tiny", mask_source="segmenter")
    output = MonkeySampler(tiny_pipe, knobs, mask_source=SegmenterMaskSource(segmenter))(
        batch, output_type="latent", sources=sources
    )
    assert [subject for _, subject in segmenter.calls] == [s.subject for s in sources]
    for (seen, _), image in zip(segmenter.calls, pass1.images, strict=True):
        assert np.array_equal(seen, np.asarray(image))  # the item's own pass-1 image
    expected = torch.stack([torch.from_numpy(HalfSegmenter()(image, s)).float() for image, s in zip(
        pass1.images, sources, strict=True)])  # fmt: skip
    assert not torch.equal(expected[0], expected[1])
    assert torch.equal(output.image_masks, expected)
    assert [m.info()["mask_source"] for m in output.masks] == ["segmenter", "segmenter"]
    # pass 2 is the plain attention-source pass 2 given those masks
    plain = MonkeySampler(tiny_pipe, settings("tiny"))
    assert torch.equal(output.images, plain.final(batch, expected, output_type="latent"))


def test_the_refined_mask_is_the_rule_applied_to_the_attention_mask_and_the_pass1_segments(tiny_pipe):
    batch, sources = two_subjects(tiny_pipe)
    attention = MonkeySampler(tiny_pipe, settings("tiny", save_pass1_image=True))(batch, output_type="latent")
    sam = GridSam()
    for rule in (RefineRule("overlap", 0.5), RefineRule("exclusive")):
        knobs = settings("tiny", mask_source="refined")
        output = MonkeySampler(tiny_pipe, knobs, mask_source=RefinedMaskSource(sam, rule))(
            batch, output_type="latent", sources=sources
        )
        for index in range(2):
            assert np.array_equal(sam.images[-2 + index], np.asarray(attention.pass1.images[index]))
            cells = attention.image_masks[index].bool().numpy()
            segments = [s.numpy() for s in GridSam()(attention.pass1.images[index])]
            if rule.rule == "overlap":  # whole segments at least half inside the attention mask
                chosen = [s for s in segments if (s & cells).sum() >= 0.5 * s.sum()]
                want = np.logical_or.reduce(chosen) if chosen else np.ones_like(cells)  # none: full + flag
            else:
                want = cells & np.logical_or.reduce(segments)
            assert np.array_equal(output.image_masks[index].numpy().astype(bool), want), (rule, index)
            info = output.masks[index].info()
            assert info["mask_source"] == "refined" and info["refine_segments"] == 5


def test_a_pass1_image_reader_never_takes_maps_cached_without_the_image(tiny_pipe, tmp_path):
    batch, sources = two_subjects(tiny_pipe)
    work = SharedWork(ShareSettings(dir=str(tmp_path), pass2_prefix=False), {"test": "id"}, {"vae_dtype": "fp32"})
    knobs = settings("tiny", mask_source="segmenter")

    def segmented(shared):
        sampler = MonkeySampler(tiny_pipe, knobs, shared, mask_source=SegmenterMaskSource(HalfSegmenter()))
        return sampler(batch, output_type="latent", sources=sources)

    first = MonkeySampler(tiny_pipe, settings("tiny"), work)(batch, output_type="latent")
    assert first.sharing["pass1"] == "computed"
    uncached = segmented(None)
    computed = segmented(work)  # the maps are there, the image is not: pass 1 runs again
    cached = segmented(work)
    assert (computed.sharing["pass1"], cached.sharing["pass1"]) == ("computed", "cache")
    for output in (computed, cached):
        assert torch.equal(output.image_masks, uncached.image_masks)
        assert torch.equal(output.images, uncached.images)  # bitwise
        for image, reference in zip(output.pass1_images, uncached.pass1_images, strict=True):
            assert np.array_equal(np.asarray(image), np.asarray(reference))
    other_vae = SharedWork(work.settings, work.identity, {"vae_dtype": "fp16"})
    assert segmented(other_vae).sharing["pass1"] == "computed"  # another decoder: not the cached image


def test_the_configured_sources_load_the_tiny_segmenter_and_sam_through_hydra(make_config, tiny_runtime):
    load_tiny("tiny")
    segmenter_method = build_method(make_config("method=monkey", "method.mask_source=segmenter").method, tiny_runtime)
    segmenter = segmenter_method.sampler.mask_source.segmenter
    assert isinstance(segmenter, ClipSegSegmenter) and "clipseg" in segmenter.model.name_or_path
    refined = build_method(make_config("method=monkey", "method.mask_source=refined").method, tiny_runtime)
    source = refined.sampler.mask_source
    assert source.rule == RefineRule("overlap", 0.8, False)
    assert source.auto_masker.options["points_per_crop"] == 4  # the tiny profile's grid
    image = Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    segments = source.auto_masker(image)
    assert segments and all(s.dtype == torch.bool and s.shape == (64, 64) for s in segments)
    attention_only = build_method(make_config("method=monkey").method, tiny_runtime)
    assert attention_only.sampler.mask_source is None


def test_ablate_mask_source_runs_pass1_once_and_reports_one_row_per_variant(tmp_path):
    result = run_cli(
        tmp_path,
        "experiment=ablate_mask_source",
        "plan.limit.subjects=1",
        "plan.limit.prompts=1",
        "generation.height=64",
        "generation.width=64",
        f"method.share.dir={tmp_path / 'cache'}",
    )
    assert result.returncode == 0, result.stderr
    root = tmp_path / "runs" / "ablate_mask_source"
    variants = ["unmasked", "normal", "attention", "segmenter", "refined", "all_steps"]
    infos = {}
    for folder in root.iterdir():
        if folder.is_dir() and folder.name != "report":
            variant = folder.name.split("mask_variant=")[1].split(",")[0]
            infos[variant] = [row["info"] for row in RunStore(folder).rows()]
    assert sorted(infos) == sorted(variants)
    assert [infos[v][0]["pass1"] for v in variants] == ["computed"] + ["cache"] * 5  # the first job's, shared
    assert infos["segmenter"][0]["mask_source"] == "segmenter" and infos["refined"][0]["mask_source"] == "refined"
    assert "mask_source" not in infos["attention"][0]
    sweep = (root / "report" / "sweep.csv").read_text().splitlines()
    header = sweep[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in sweep[1:]]
    swept = [row["mask_variant"] for row in rows if row["role"] == "sweep"]
    assert swept == variants  # one row per variant, in the sweep's order


def test_a_segmenter_source_never_stops_on_an_attention_map_it_does_not_read(tiny_pipe):
    """method.degenerate=error with mask_source=segmenter: a flat (degenerate) attention map is not an error,
    since the segmenter's mask replaces it unread; the attention source stops on the same map."""
    from monkey.adapter.masks import DegenerateMaskError

    batch, sources = two_subjects(tiny_pipe)
    pass1 = MonkeySampler(tiny_pipe, settings("tiny", save_pass1_image=True)).record(batch)
    flat = [{key: torch.zeros_like(value) for key, value in record.items()} for record in pass1.records]
    knobs = settings("tiny", mask_source="segmenter", degenerate="error")
    sampler = MonkeySampler(tiny_pipe, knobs, mask_source=SegmenterMaskSource(HalfSegmenter()))
    _, image_masks = sampler.masks(flat, batch, None, pass1.images, sources)
    expected = torch.stack([torch.from_numpy(HalfSegmenter()(image, s)).float() for image, s in zip(
        pass1.images, sources, strict=True)])  # fmt: skip
    assert torch.equal(image_masks, expected)
    with pytest.raises(DegenerateMaskError):
        MonkeySampler(tiny_pipe, settings("tiny", degenerate="error")).masks(flat, batch)
