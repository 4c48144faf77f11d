"""Masked metrics (issue 28 part 1): the GroundingDINO + SAM segmenter against the models called directly,
patch matching and the mask-to-grid rule against computations written out another way, each row's masked
scores against its own image, source, mask and text, and `monkey-bench ... eval.masked=true` end to end."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config
from PIL import Image

from monkey.datasets.dreambooth import load_dreambooth
from monkey.hashing import to_plain


def tiny_backbones():
    from monkey.eval.backbones import backbone_specs, load_backbone

    specs = backbone_specs(to_plain(compose_config().eval.backbones))  # the demo's eval=tiny
    return {spec.key: load_backbone(spec, "cpu", 32) for spec in specs}


def test_grounding_sam_is_gdino_best_box_then_sam_mask_as_the_models_compute_them():
    """The box: the query of highest sigmoid token score above box_threshold, its (cx, cy, w, h) scaled to the
    image; the mask: SAM's low-res logits upsampled to the padded input, cropped, upsampled to the image, > 0."""
    from transformers import AutoProcessor, GroundingDinoForObjectDetection, SamModel, SamProcessor

    from monkey.models.tiny_segmenters import materialize_tiny_segmenter
    from monkey.rank.segmenters import GroundingSamSegmenter

    segmenter = GroundingSamSegmenter(tiny=True, box_threshold=0.3)
    source = load_dreambooth()[0]
    image = source.load_image().resize((48, 40))
    mask = segmenter(image, source)
    assert mask.shape == (40, 48) and mask.dtype == bool

    folder = materialize_tiny_segmenter("grounding_dino")
    processor = AutoProcessor.from_pretrained(folder)
    detector = GroundingDinoForObjectDetection.from_pretrained(folder).eval()
    inputs = processor(images=image, text=f"{source.subject_word}.".lower(), return_tensors="pt")
    with torch.no_grad():
        outputs = detector(**inputs)
    scores = outputs.logits[0].sigmoid().max(dim=-1).values  # [Q]
    assert (scores > 0.3).any()
    best = int(torch.where(scores > 0.3, scores, torch.full_like(scores, -1.0)).argmax())
    cx, cy, w, h = outputs.pred_boxes[0, best].tolist()
    box = [(cx - w / 2) * 48, (cy - h / 2) * 40, (cx + w / 2) * 48, (cy + h / 2) * 40]
    assert np.allclose(segmenter.best_box(image, source.subject_word), box, atol=1e-4)

    folder = materialize_tiny_segmenter("sam")
    sam_processor, sam = SamProcessor.from_pretrained(folder), SamModel.from_pretrained(folder).eval()
    sam_inputs = sam_processor(images=image, input_boxes=[[box]], return_tensors="pt")
    with torch.no_grad():
        low = sam(**sam_inputs, multimask_output=False).pred_masks[0, 0]  # [1, 16, 16]
    pad = sam_processor.image_processor.pad_size
    up = F.interpolate(low[None], size=(pad["height"], pad["width"]), mode="bilinear", align_corners=False)
    rh, rw = sam_inputs["reshaped_input_sizes"][0].tolist()
    up = F.interpolate(up[..., :rh, :rw], size=(40, 48), mode="bilinear", align_corners=False)
    assert np.array_equal(mask, (up[0, 0] > 0.0).numpy())
    assert 0 < mask.sum() < mask.size  # a real test: neither all nor nothing

    segmenter.box_threshold = float(scores.max())  # no box scores above it: no subject, an empty mask
    assert not segmenter(image, source).any()


def test_subject_match_is_the_mean_over_reference_patches_of_the_best_generated_cosine():
    from monkey.eval.patch_tokens import subject_match

    rng = torch.Generator().manual_seed(0)
    generated = F.normalize(torch.randn(3, 4, 5, generator=rng), dim=-1)  # [h, w, D]
    reference = F.normalize(torch.randn(2, 3, 5, generator=rng), dim=-1)
    gen_subject = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.bool)
    ref_subject = torch.tensor([[0, 1, 1], [1, 0, 0]], dtype=torch.bool)
    best = []
    for i in range(2):
        for j in range(3):
            if not ref_subject[i, j]:
                continue
            cosines = [
                math.fsum(a * b for a, b in zip(reference[i, j].tolist(), generated[y, x].tolist(), strict=True))
                for y in range(3)
                for x in range(4)
                if gen_subject[y, x]
            ]
            best.append(max(cosines))
    expected = sum(best) / len(best)
    assert subject_match(generated, gen_subject, reference, ref_subject) == pytest.approx(expected, abs=1e-12)
    assert subject_match(generated, torch.zeros_like(gen_subject), reference, ref_subject) is None


def test_a_mask_reaches_the_patch_grid_through_the_backbones_resize_and_crop():
    """DINO (tiny: resize 256, crop 224, 14 px patches): a 256 px mask is cropped 16 px each side, and each
    patch's subject fraction is the mean of its 14 x 14 pixels; a patch is subject from half of its area."""
    from monkey.eval.patch_tokens import mask_fractions, subject_patches

    dino = tiny_backbones()["dino"]
    rng = np.random.default_rng(0)
    mask = rng.random((256, 256)) < rng.random((256, 1))  # rows of varying density
    fractions = mask_fractions(dino, torch.from_numpy(mask))
    expected = np.zeros((16, 16))
    for y in range(16):
        for x in range(16):
            expected[y, x] = mask[16 + 14 * y : 16 + 14 * (y + 1), 16 + 14 * x : 16 + 14 * (x + 1)].mean()
    assert np.allclose(fractions.numpy(), expected, atol=1e-6)
    assert np.array_equal(subject_patches(dino, torch.from_numpy(mask)).numpy(), expected >= 0.5)


def test_patch_tokens_are_the_backbones_own_final_tokens_without_prefix():
    from monkey.eval.patch_tokens import patch_tokens

    backbones = tiny_backbones()
    image = load_dreambooth()[0].load_image().resize((80, 64))
    for key in ("dino", "dino_v1"):
        model = backbones[key].model
        pixels = backbones[key].preprocess(image)[None]
        with torch.no_grad():  # timm's own route to the normed last-block patch tokens
            last = model.forward_intermediates(pixels, indices=1, norm=True, output_fmt="NLC", intermediates_only=True)
        h, w = model.patch_embed.grid_size
        expected = F.normalize(last[-1][0], dim=-1).reshape(h, w, -1)
        assert torch.allclose(patch_tokens(backbones[key], [image])[0], expected, atol=1e-5), key
    clip = backbones["clip"]
    visual = clip.model.visual
    pixels = clip.preprocess(image)[None]
    with torch.no_grad():  # the transformer run by hand: ln_post on every token, the projection on the patches
        x = visual.ln_post(visual.transformer(visual._embeds(pixels)))
        expected = F.normalize(x[0, 1:] @ visual.proj, dim=-1).reshape(*visual.grid_size, -1)
        assert torch.allclose(F.normalize(x[0, 0] @ visual.proj, dim=-1), clip.embed_images([image])[0], atol=1e-5)
    assert torch.allclose(patch_tokens(clip, [image])[0], expected, atol=1e-5)
    assert not visual.output_tokens  # the global metric's encode_image is left as it was


def fill_with_background_mean(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """The subject pasted over with one flat colour: the mean of the background pixels, channel by channel."""
    pixels = np.asarray(image, dtype=np.float64)
    colour = tuple(round(pixels[..., c][~mask].sum() / (~mask).sum()) for c in range(3))
    flat = Image.new("RGB", image.size, colour)
    return Image.composite(flat, image, Image.fromarray(mask.astype(np.uint8) * 255))


def test_each_row_gets_its_own_masked_scores_and_a_flag_where_no_subject_is_found(tmp_path):
    """Through evaluate_run and ScoreSet.frame (the rows scores.csv holds): every masked number recomputed here
    from that row's own image, source photo, mask and location text; beta's generated images hold no subject."""
    from eval_helpers import fake_generate, make_dataset, plan_items
    from masked_helpers import BrightSegmenter
    from monkey.eval.masked_columns import masked_flags_markdown
    from monkey.eval.patch_tokens import patch_tokens, subject_match, subject_patches
    from monkey.eval.score_store import ScoreSet
    from monkey.eval.scoring import AS_STORED, evaluate_run

    from monkey.images import load_rgb

    dataset = make_dataset(tmp_path / "data")
    items = plan_items(dataset, prompts=1)  # alpha and beta, one location each
    run_dir = tmp_path / "runs" / "x" / "monkey"
    left = np.zeros((64, 64), dtype=np.uint8)
    left[:, :24] = 255  # MONKEY's pass-1 mask artifact: the left 24 columns
    fake_generate(run_dir, items, "monkey", mask=Image.fromarray(left))
    cfg = compose_config(
        "eval.masked=true",
        "+eval.segmenter.empty_subject=beta",
        "eval.segmenter._target_=masked_helpers.BrightSegmenter",
        "~eval.segmenter.detector",
        "~eval.segmenter.sam",
        "~eval.segmenter.prompt",
        "~eval.segmenter.box_threshold",
        "~eval.segmenter.mask_threshold",
        "~eval.segmenter.tiny",
    )
    BrightSegmenter.built = 0
    summary = evaluate_run(run_dir, cfg.eval, dataset)
    assert summary.masked == 2 * len(items) and BrightSegmenter.built == 1  # each image and its oracle row
    frame = ScoreSet(run_dir, cfg.eval.name).frame()
    backbones = tiny_backbones()
    segmenter = BrightSegmenter(empty_subject="beta")
    word = {source.subject: source for source in (item.source for item in items)}
    generated = frame[frame["method"] == "monkey"]
    assert len(generated) == len(items)
    for row in generated.itertuples():
        image = load_rgb(run_dir / row.image, AS_STORED)
        source_image = load_rgb(row.source_path, AS_STORED)
        mask = segmenter(image, word[row.subject])
        source_mask = segmenter(source_image, word[row.subject])
        assert row.subject_area == pytest.approx(mask.mean(), abs=1e-12)
        clip = backbones["clip"]
        filled = clip.embed_images([fill_with_background_mean(image, mask)])[0].double()
        assert row.background_text == row.location
        assert row.clip_t_background == pytest.approx(float(filled @ clip.embed_texts([row.location])[0].double()))
        union = np.logical_or(mask, left > 0).sum()
        expected_iou = np.logical_and(mask, left > 0).sum() / union
        assert row.mask_iou == pytest.approx(expected_iou, abs=1e-12)
        if row.subject == "beta":  # no subject in the generated image: flagged, identity left empty
            assert row.masked_flag == "no_subject_generated" and row.subject_area == 0.0
            assert all(np.isnan(getattr(row, f"{m}_subject")) for m in ("dino", "dino_v1", "clip_i"))
            continue
        assert row.masked_flag == ""
        for key, metric in (("dino", "dino"), ("dino_v1", "dino_v1"), ("clip", "clip_i")):
            backbone = backbones[key]
            gen_tokens, ref_tokens = patch_tokens(backbone, [image, source_image])
            expected = subject_match(
                gen_tokens,
                subject_patches(backbone, torch.from_numpy(mask)),
                ref_tokens,
                subject_patches(backbone, torch.from_numpy(source_mask)),
            )
            assert getattr(row, f"{metric}_subject") == pytest.approx(expected, abs=1e-6), metric
    oracle = frame[frame["method"] == "oracle"]
    assert oracle["dino_subject"].isna().all() and oracle["mask_iou"].isna().all()
    assert oracle["subject_area"].notna().all() and oracle["clip_t_background"].notna().all()

    table = masked_flags_markdown(frame.assign(variant=frame["method"]))
    assert "| monkey | dreambooth | 2 | 1 |" in table and "no_subject_generated" in table
    again = evaluate_run(run_dir, cfg.eval, dataset)  # a rerun: nothing computed, no segmenter built
    assert again.masked == 0 and BrightSegmenter.built == 2  # the one built by this test above


def test_monkey_bench_eval_masked_fills_the_columns_of_scores_and_table1(tmp_path):
    from test_cli import run_cli

    steps = ("method.initial_steps=2", "method.final_steps=2", "method.capture_steps=[1]")
    result = run_cli(
        tmp_path,
        "hydra.mode=RUN",
        "method=monkey",
        "run.stages=[generate,evaluate,report]",
        "plan.limit.subjects=1",
        "plan.limit.prompts=1",
        "generation.height=64",
        "generation.width=64",
        *steps,
        "method.ip_steps=[1]",
        "method.mask_steps=[1]",
        "eval.masked=true",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = tmp_path / "runs" / "demo" / "report"
    scores = pd.read_csv(report / "scores.csv")
    monkey = scores[scores["method"] == "monkey"].iloc[0]
    for column in ("dino_subject", "clip_i_subject", "clip_t_background", "subject_area", "mask_iou"):
        assert np.isfinite(monkey[column]), column
    assert monkey["background_text"] == monkey["location"]
    table = (report / "table1.md").read_text()
    for label in ("DINO (subject)", "CLIP-I (subject)", "CLIP-T (background)", "Subject area", "Mask IoU"):
        assert label in table
    assert "Masked metrics" in table


def test_masked_scores_of_other_image_bytes_are_never_shown(tmp_path):
    """A regenerated image keeps its old masked file until it is scored again: the frame shows none of it."""
    from monkey.eval.score_store import ScoreSet

    scores = ScoreSet(tmp_path, "default")
    base = {"method": "monkey", "item_id": "dreambooth/dog/00/p00/s0", "scores": {"clip_t": 0.3}}
    scores.write({**base, "image_sha256": "a" * 64})
    masked = {"scores": {"dino_subject": 0.7, "mask_iou": 0.5}, "masked_flag": "", "background_text": "in the snow"}
    scores.write_masked({**base, **masked, "image_sha256": "a" * 64})
    frame = scores.frame()
    assert frame[["dino_subject", "mask_iou"]].values.tolist() == [[0.7, 0.5]]
    assert frame["background_text"].tolist() == ["in the snow"]
    scores.write({**base, "image_sha256": "b" * 64})  # the image was made again
    frame = scores.frame()
    assert "dino_subject" not in frame and "background_text" not in frame


def test_prefetch_lists_the_segmenters_models_only_when_eval_masked_is_on():
    from monkey.prefetch import all_needs

    base = ["eval=default", "method=ip_adapter_1.0", "run.stages=[generate,evaluate]"]
    repos = {need.repo_id for need in all_needs([*base, "eval.masked=true"])}
    assert {"IDEA-Research/grounding-dino-tiny", "facebook/sam-vit-base"} <= repos
    assert not {"IDEA-Research/grounding-dino-tiny", "facebook/sam-vit-base"} & {n.repo_id for n in all_needs(base)}


def test_the_segmenter_is_built_once_per_settings_for_every_run_folder():
    """A report over many run folders builds its segmenter once (each folder's SubjectMasks asks again);
    other settings build another."""
    from monkey.eval.masked import MaskedSettings

    settings = MaskedSettings({"_target_": "collections.OrderedDict", "model": "x"}, "cpu")
    first = settings.build_segmenter()
    assert MaskedSettings(dict(settings.segmenter), "cpu").build_segmenter() is first
    assert MaskedSettings({**settings.segmenter, "model": "y"}, "cpu").build_segmenter() is not first
