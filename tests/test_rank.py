"""`monkey-attention rank`: IoU scoring and ranking on synthetic maps whose best (layer, token, step) is
known by construction; the probe's UNet input equals the noising formula written out; the command on
the tiny SDXL twin writes its files, takes masks from files or a segmenter run once, and refuses bad
input with exit 2."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from monkey_helpers import load_tiny, subject_embeds
from PIL import Image

from monkey.adapter.masks import map_key
from monkey.adapter.sampler import MonkeySampler, SubjectBatch
from monkey.adapter.settings import MonkeySettings
from monkey.datasets.dreambooth import load_dreambooth
from monkey.figures.cli import main
from monkey.rank.probe import noised_inputs, noised_source
from monkey.rank.score import iou, mask_on_grid, rank, score_record

LAYERS = ("down.a", "mid.b", "up.c")  # grids 4x4, 2x2, 8x8 on an 8x8 scoring grid
LAYER = {
    "tiny": "up_blocks.1.attentions.1.transformer_blocks.0.attn2",
    "tiny_sdxl": "up_blocks.0.attentions.1.transformer_blocks.1.attn2",
}
GRIDS = {"down.a": (4, 4), "mid.b": (2, 2), "up.c": (8, 8)}


def planted_record(subject: torch.Tensor, generator: torch.Generator, tokens: int = 4) -> dict[str, torch.Tensor]:
    """Noise everywhere except: up.c, token 2, step 1 is the subject mask itself (IoU 1), and down.a,
    token 0, step 2 is the mask shifted one column (IoU known by counting)."""
    record = {}
    for layer in LAYERS:
        for step in (0, 1, 2):
            record[map_key(layer, step)] = torch.rand(*GRIDS[layer], tokens, generator=generator) * 0.1
    record[map_key("up.c", 1)][..., 2] = subject.float()
    coarse = torch.nn.functional.adaptive_avg_pool2d(subject.float()[None, None], (4, 4))[0, 0] >= 0.5
    record[map_key("down.a", 2)][..., 0] = torch.roll(coarse.float(), 1, dims=1)
    return record


def hand_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / np.logical_or(a, b).sum())


def test_the_planted_map_ranks_first_and_every_iou_is_counted_by_hand():
    generator = torch.Generator().manual_seed(0)
    subjects = []
    for top, left in ((0, 0), (2, 4), (4, 2)):  # three items, a 4x4 subject block each
        subject = torch.zeros(8, 8, dtype=torch.bool)
        subject[top : top + 4, left : left + 4] = True
        subjects.append(subject)
    frames = [score_record(planted_record(s, generator), s, 0.5, "gt", item=f"i{n}") for n, s in enumerate(subjects)]
    scores = pd.concat(frames, ignore_index=True)
    table = rank(scores)
    assert len(table) == len(LAYERS) * 3 * 4  # every (layer, step, token)
    first = table.iloc[0]
    assert (first["layer"], first["token"], first["step"], first["mean_iou"]) == ("up.c", 2, 1, 1.0)
    # the shifted map: its 4x4 cells, upsampled to 8x8, against each subject, counted by numpy
    expected = []
    for s in subjects:
        coarse = s.reshape(4, 2, 4, 2).float().mean(dim=(1, 3)) >= 0.5
        shifted = np.roll(coarse.numpy(), 1, axis=1).repeat(2, axis=0).repeat(2, axis=1)
        expected.append(hand_iou(shifted, s.numpy()))
    shifted_row = table[(table["layer"] == "down.a") & (table["token"] == 0) & (table["step"] == 2)].iloc[0]
    assert shifted_row["mean_iou"] == pytest.approx(np.mean(expected))
    assert shifted_row["min_iou"] == pytest.approx(min(expected))
    assert table.iloc[1]["mean_iou"] < 1.0  # only the planted map finds every subject exactly
    # a 2x2 map (mid.b) thresholded at 0.5 of its own range: IoU counted by hand for one item
    maps = planted_record(subjects[0], torch.Generator().manual_seed(1))[map_key("mid.b", 0)][..., 3]
    normalised = (maps - maps.min()) / (maps.max() - maps.min())
    hand = (normalised > 0.5).numpy().repeat(4, axis=0).repeat(4, axis=1)
    one = score_record(
        {map_key("mid.b", 0): planted_record(subjects[0], torch.Generator().manual_seed(1))[map_key("mid.b", 0)]},
        subjects[0],
        0.5,
        "gt",
    )
    assert one[one["token"] == 3].iloc[0]["iou"] == pytest.approx(hand_iou(hand, subjects[0].numpy()))


@pytest.mark.parametrize("rule", ["gt", "ge"])
def test_a_constant_map_gives_no_mask_and_counts_as_degenerate_under_either_rule(rule):
    """At threshold 0 `ge` keeps every cell of a normalised map; a constant map (no spatial signal) must
    still give no mask (IoU 0), not a full one scoring the subject's share of the grid."""
    subject = torch.zeros(8, 8, dtype=torch.bool)
    subject[:6, :6] = True  # a full mask would score 36 / 64
    maps = torch.rand(4, 4, 2, generator=torch.Generator().manual_seed(3))
    maps[..., 1] = 0.25  # token 1: constant
    scores = score_record({map_key("down.a", 0): maps}, subject, 0.0, rule)
    constant = scores[scores["token"] == 1].iloc[0]
    assert constant["iou"] == 0.0 and constant["degenerate"]
    varying = scores[scores["token"] == 0].iloc[0]
    assert not varying["degenerate"] and varying["iou"] > 0


def test_iou_and_mask_pooling_match_counts():
    a = torch.tensor([[1, 1, 0], [0, 1, 0]], dtype=torch.bool)
    b = torch.tensor([[1, 0, 0], [0, 1, 1]], dtype=torch.bool)
    assert iou(a[None], b).item() == pytest.approx(2 / 4)
    assert iou(torch.zeros(1, 2, 3, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.bool)).item() == 0.0
    big = torch.zeros(16, 16, dtype=torch.bool)
    big[:8, :5] = True  # cells of 4x4 pixels: columns 0 (4/4) and 1 (1/4 subject)
    assert mask_on_grid(big, (4, 4)).tolist() == [[True, False, False, False]] * 2 + [[False] * 4] * 2


@pytest.mark.parametrize("model", ["tiny", "tiny_sdxl"])
def test_the_probe_feeds_the_unet_the_noised_source_of_each_step(model):
    """x_s written out: LCM (DDPM noising, no input scaling) sqrt(a) z0 + sqrt(1 - a) eps; Euler
    (sigma = sqrt((1 - a) / a)) (z0 + sigma eps) / sqrt(sigma^2 + 1), a = alphas_cumprod[t_s]."""
    pipe = load_tiny(model)
    z0, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    inputs = noised_inputs(pipe, z0, eps, 4)
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(4)
    assert len(inputs) == len(scheduler.timesteps)
    for got, t in zip(inputs, scheduler.timesteps, strict=True):
        alpha = scheduler.alphas_cumprod[int(t)].double()
        if model == "tiny":
            expected = alpha.sqrt() * z0.double() + (1 - alpha).sqrt() * eps.double()
        else:
            sigma = ((1 - alpha) / alpha).sqrt()
            expected = (z0.double() + sigma * eps.double()) / (sigma**2 + 1).sqrt()
        torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=1e-4)
    # and those inputs, not the pipeline's own latents, reach the UNet (both CFG halves)
    seen = []
    with noised_source(pipe, inputs):
        handle = pipe.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
        try:
            sampler = MonkeySampler(pipe, MonkeySettings(layers=[LAYER[model]], capture_steps=[2], guidance_scale=5.0))
            sampler.record(SubjectBatch(["a photo of dog"], [0], subject_embeds(pipe), 64, 64))
        finally:
            handle.remove()
    assert len(seen) == 3
    for got, given in zip(seen, inputs, strict=False):
        assert got.shape[0] == (2 if model == "tiny_sdxl" else 1)  # CFG on SDXL; LCM embeds its guidance
        assert all(torch.equal(row, given[0]) for row in got)


@pytest.fixture(scope="module")
def masks_dir(tmp_path_factory):
    """A box mask per image of the first two bundled subjects, as the original files' size."""
    root = tmp_path_factory.mktemp("masks")
    for source in load_dreambooth()[:2]:
        with Image.open(source.image_path) as image:
            width, height = image.size
        mask = np.zeros((height, width), np.uint8)
        mask[height // 4 : 3 * height // 4, width // 5 : 4 * width // 5] = 255
        (root / source.subject).mkdir()
        Image.fromarray(mask).save(root / source.subject / f"{source.image_id}.png")
    return root


TINY_SDXL = [
    "method=monkey_sdxl",
    "method.model=tiny_sdxl",
    "subjects=2",
    "generation.height=64",
    "generation.width=64",
    "method.initial_steps=2",
    "method.capture_steps=[1]",
]


def test_the_command_ranks_every_map_of_the_sdxl_twin_from_mask_files(masks_dir, tmp_path, capsys):
    out = tmp_path / "rank"
    assert main(["rank", *TINY_SDXL, f"masks.dir={masks_dir}", f"out={out}"]) == 0
    table = pd.read_csv(out / "ranking.csv")
    scores = pd.read_csv(out / "scores.csv")
    assert len(table) == 17 * 4 * 2 and len(scores) == 2 * len(table)  # layers x tokens x steps, per item
    assert "up_blocks.0.attentions.1.transformer_blocks.1.attn2" in set(table["layer"])
    assert list(table["mean_iou"]) == sorted(table["mean_iou"], reverse=True)
    by_hand = scores.groupby(["layer", "token", "step"])["iou"].mean()
    best = table.iloc[0]
    assert best["mean_iou"] == pytest.approx(by_hand.max())
    assert by_hand[(best["layer"], best["token"], best["step"])] == pytest.approx(best["mean_iou"])
    summary = json.loads((out / "ranking.json").read_text())
    assert summary["best"]["layer"] == best["layer"] and summary["image_tokens"] == 4
    assert (out / "ranking.png").stat().st_size > 0 and (out / "ranking.pdf").stat().st_size > 0
    assert best["layer"] in (out / "ranking.md").read_text()
    assert "best:" in capsys.readouterr().out


class BoxSegmenter:
    """A stand-in segmentation model: the centre box of the image; counts its calls."""

    calls = 0

    def __init__(self, margin: float = 0.25):
        self.margin = margin

    def __call__(self, image, source):
        type(self).calls += 1
        mask = np.zeros((image.height, image.width), bool)
        m = int(self.margin * image.height)
        mask[m:-m, m:-m] = True
        return mask


def test_a_segmenter_runs_once_per_image_and_its_masks_are_reused(tmp_path):
    out = tmp_path / "rank"
    layer = "down_blocks.1.attentions.0.transformer_blocks.0.attn2"
    args = ["rank", *TINY_SDXL, "subjects=1", "steps=[1]", f"layers=[{layer}]", f"out={out}"]
    BoxSegmenter.calls = 0
    assert main([*args, "masks.segmenter={_target_:test_rank.BoxSegmenter}"]) == 0
    assert BoxSegmenter.calls == 1
    saved = next((out / "masks").glob("*/*.png"))
    assert np.asarray(Image.open(saved)).astype(bool).mean() == pytest.approx(0.25, abs=0.01)
    assert main([*args, "masks.segmenter={_target_:test_rank.BoxSegmenter}"]) == 0
    assert BoxSegmenter.calls == 1  # read back from out/masks
    # masks of another segmenter are not mixed in
    assert main([*args, "masks.segmenter={_target_:test_rank.BoxSegmenter,margin:0.1}"]) == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "give exactly one mask source"),
        (["masks.dir=/nonexistent"], "masks.dir='/nonexistent' is not a folder"),
        (["masks.dir=MASKS", "layers=[nope.attn2]"], "layers has unknown layer"),
        (["masks.dir=MASKS", "steps=[5]"], "steps=[5] has steps outside 0..1"),
        (["masks.dir=MASKS", "subjects=[unicorn]"], "subjects has names ['unicorn']"),
        (["masks.dir=MASKS", "prompt=a photo"], "must contain {word}"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_key(masks_dir, tmp_path, caplog, overrides, message):
    given = [o.replace("MASKS", str(masks_dir)) for o in overrides]
    assert main(["rank", *TINY_SDXL, f"out={tmp_path}", *given]) == 2
    assert message in caplog.text


def test_a_missing_mask_file_names_the_expected_path(masks_dir, tmp_path, caplog):
    assert main(["rank", *TINY_SDXL, "subjects=3", f"masks.dir={masks_dir}", f"out={tmp_path}"]) == 2
    assert "no mask for dreambooth/" in caplog.text and "expected" in caplog.text


def test_clipseg_segmenter_loads_by_path_and_thresholds_its_own_probabilities(tmp_path):
    """A tiny random CLIPSeg written in the hub layout, loaded by `from_pretrained` through the segmenter;
    its mask is sigmoid(logits) at the image's size > threshold, computed here from the model directly."""
    from transformers import (
        CLIPSegConfig,
        CLIPSegForImageSegmentation,
        CLIPSegProcessor,
        CLIPTokenizer,
        ViTImageProcessor,
    )

    from monkey.models.tiny_tokenizer import write_tiny_clip_tokenizer
    from monkey.rank.segmenters import ClipSegSegmenter

    write_tiny_clip_tokenizer(tmp_path / "tok", ["a", "dog", "photo", "of"])
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path / "tok")
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "max_position_embeddings": 77,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    config = CLIPSegConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=16,
        extract_layers=[0, 1],
        reduce_dim=8,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=16,
    )
    torch.manual_seed(0)
    CLIPSegForImageSegmentation(config).save_pretrained(tmp_path / "clipseg")
    image_processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(tmp_path / "clipseg")
    segmenter = ClipSegSegmenter(model=str(tmp_path / "clipseg"), prompt="a photo of {word}", threshold=0.5)
    source = load_dreambooth()[0]
    image = source.load_image().resize((48, 40))
    mask = segmenter(image, source)
    assert mask.shape == (40, 48) and mask.dtype == bool
    model = CLIPSegForImageSegmentation.from_pretrained(tmp_path / "clipseg").eval()
    inputs = segmenter.processor(text=[f"a photo of {source.subject_word}"], images=[image], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits.reshape(1, 1, 32, 32)
    probs = torch.nn.functional.interpolate(logits, size=(40, 48), mode="bilinear", align_corners=False).sigmoid()
    assert np.array_equal(mask, (probs[0, 0] > 0.5).numpy())
    with pytest.raises(Exception, match="must contain"):
        ClipSegSegmenter(model=str(tmp_path / "clipseg"), prompt="a photo")


def test_the_tiny_clipseg_twin_loads_through_the_segmenter_and_masks_at_the_image_size(tmp_path, monkeypatch):
    """`tiny=true` swaps in the code-written twin (monkey.models.tiny_segmenters); its mask equals the twin's own
    probabilities thresholded, at the loaded image's size."""
    from monkey.rank.segmenters import ClipSegSegmenter

    monkeypatch.setenv("MONKEY_CACHE", str(tmp_path))
    segmenter = ClipSegSegmenter(tiny=True, threshold=0.5)
    source = load_dreambooth()[0]
    image = source.load_image().resize((40, 24))
    mask = segmenter(image, source)
    assert mask.shape == (24, 40) and mask.dtype == bool
    assert np.array_equal(mask, (segmenter.probabilities(image, source.subject_word) > 0.5).numpy())
    assert list(tmp_path.glob("tiny/clipseg-*/clipseg/model.safetensors"))
