"""Scores against independent computations, the embedding cache's accounting, incremental rescoring."""

import functools

import numpy as np
import open_clip
import pytest
import timm
import torch
from eval_helpers import fake_generate, make_dataset, plan_items
from monkey.eval.score_store import ORACLE, ScoreSet
from monkey.eval.scoring import evaluate_run
from monkey.eval.tiny_backbones import materialize_tiny_open_clip, materialize_tiny_timm
from PIL import Image, ImageOps

from monkey.errors import RunFolderError
from monkey.hashing import to_plain

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


@pytest.fixture
def eval_cfg(make_config):
    return make_config().eval  # the demo's: eval=tiny


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path / "data")


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum() / (a.norm() * b.norm()))


def dino_pixels(path) -> torch.Tensor:
    """Resize the short side to 256 (bicubic), centre-crop 224, ImageNet mean/std: written out by hand."""
    with Image.open(path) as handle:
        image = ImageOps.exif_transpose(handle).convert("RGB")
    w, h = image.size
    size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = round((size[0] - 224) / 2), round((size[1] - 224) / 2)
    array = (np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float64) / 255 - MEAN) / STD
    return torch.from_numpy(array.transpose(2, 0, 1)).float()[None]  # [1, 3, 224, 224]


def test_scores_equal_direct_backbone_calls(tmp_path, eval_cfg, dataset):
    run_dir = tmp_path / "run"
    items = plan_items(dataset, prompts=1)  # alpha (two photos) and beta (one)
    fake_generate(run_dir, items, "m", paper_location=True)
    evaluate_run(run_dir, eval_cfg, dataset)
    scores = ScoreSet(run_dir, "tiny")
    spec = to_plain(eval_cfg.backbones)

    # DINOv2 (tiny): a fresh model from the same checkpoint file, CLS token from forward_features
    dino = spec["dino"]
    model = timm.create_model(
        dino["model_name"],
        pretrained=True,
        pretrained_cfg_overlay={"file": str(materialize_tiny_timm(dino["model_name"], dino["tiny"]))},
        num_classes=0,
        img_size=224,
        **dino["tiny"],
    ).eval()
    # CLIP (tiny): open_clip's own transform and tokenizer
    clip = spec["clip"]
    name, weights = materialize_tiny_open_clip(clip["tiny"])
    clip_model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=str(weights), force_quick_gelu=True
    )
    clip_model.eval()
    tokenizer = open_clip.get_tokenizer(name)

    cls = functools.cache(lambda path: model.forward_features(dino_pixels(path))[0, 0])  # [D]
    image = functools.cache(lambda path: clip_model.encode_image(preprocess(Image.open(path).convert("RGB"))[None])[0])
    with torch.no_grad():
        for item in items:
            record = scores.read("m", item.item_id)
            generated = run_dir / item.image_relpath("m")
            refs = sorted((dataset_root := item.source.image_path.parent).glob("*.jpg"))
            assert record["n_refs"] == len(refs) and dataset_root.name == item.source.subject

            assert record["scores"]["dino"] == pytest.approx(
                cosine(cls(generated), cls(item.source.image_path)), abs=1e-5
            )
            expected_all = np.mean([cosine(cls(generated), cls(ref)) for ref in refs])
            assert record["scores"]["dino_all"] == pytest.approx(expected_all, abs=1e-5)

            text = clip_model.encode_text(tokenizer([record["prompt"]]))[0]
            assert record["prompt"] == item.prompt
            assert record["scores"]["clip_i"] == pytest.approx(
                cosine(image(generated), image(item.source.image_path)), abs=1e-5
            )
            assert record["scores"]["clip_t"] == pytest.approx(cosine(image(generated), text), abs=1e-5)
            location = clip_model.encode_text(tokenizer([item.location]))[0]  # the paper preset's CLIP-T text
            assert record["scores"]["clip_t_paper"] == pytest.approx(cosine(image(generated), location), abs=1e-5)

            oracle = scores.read(ORACLE, item.item_id)
            others = [ref for ref in refs if ref != item.source.image_path]
            if others:  # alpha: its source against its other photo
                expected = np.mean([cosine(cls(item.source.image_path), cls(ref)) for ref in others])
                assert oracle["scores"]["dino_all"] == pytest.approx(expected, abs=1e-5)
            else:  # beta has one photo: no oracle identity score
                assert oracle["scores"]["dino_all"] is None
            assert oracle["scores"]["dino"] is None
            assert oracle["scores"]["clip_t"] == pytest.approx(cosine(image(item.source.image_path), text), abs=1e-5)
    # the scores are not degenerate: random tiny weights still tell images apart
    values = [scores.read("m", item.item_id)["scores"]["dino"] for item in items]
    assert max(values) - min(values) > 1e-3


def test_each_image_and_prompt_is_embedded_once(tmp_path, eval_cfg, dataset):
    run_dir = tmp_path / "run"
    items = plan_items(dataset, prompts=2)  # 2 subjects x 2 prompts; alpha has 2 photos, beta 1
    fake_generate(run_dir, items, "a")
    fake_generate(run_dir, items, "b", prompt_suffix=" at night")  # another method, its own prompts
    first = evaluate_run(run_dir, eval_cfg, dataset)
    references, prompts = 3, len({i.prompt for i in items})
    generated = 2 * len(items)
    texts = 2 * prompts  # each method's exact prompts; the oracle's plan prompts are method a's
    assert first.scored == generated and first.oracle_scored == len(items)
    assert first.forwards == {
        "dino": references + generated,
        "dino_v1": references + generated,
        "clip": references + generated + texts,
    }

    again = evaluate_run(run_dir, eval_cfg, dataset)
    assert again.scored == 0 and again.oracle_scored == 0 and again.forwards == {}

    # a third method and one regenerated image: only those are embedded and scored
    fake_generate(run_dir, items[:1], "c")
    regenerated = run_dir / items[1].image_relpath("a")
    Image.new("RGB", (64, 64), (200, 10, 10)).save(regenerated)
    before = ScoreSet(run_dir, "tiny").read("a", items[0].item_id)
    third = evaluate_run(run_dir, eval_cfg, dataset)
    assert third.scored == 2 and third.oracle_scored == 0
    assert third.forwards == {"dino": 2, "dino_v1": 2, "clip": 2}
    assert ScoreSet(run_dir, "tiny").read("a", items[0].item_id) == before

    # scores deleted, cache kept (a new process): everything rescored from the disk cache, same numbers
    records = {(r["method"], r["item_id"]): r["scores"] for r in ScoreSet(run_dir, "tiny").records()}
    for path in (run_dir / "scores" / "tiny" / "items").rglob("*.json"):
        path.unlink()
    rescored = evaluate_run(run_dir, eval_cfg, dataset)
    assert rescored.forwards == {"dino": 0, "dino_v1": 0, "clip": 0}
    assert {(r["method"], r["item_id"]): r["scores"] for r in ScoreSet(run_dir, "tiny").records()} == records


def test_shards_score_disjoint_items_into_one_set(tmp_path, eval_cfg, dataset):
    items = plan_items(dataset, prompts=2)
    whole, split = tmp_path / "whole", tmp_path / "split"
    for run_dir in (whole, split):
        fake_generate(run_dir, items, "m")
    evaluate_run(whole, eval_cfg, dataset)
    ids = [item.item_id for item in items]
    evaluate_run(split, eval_cfg, dataset, set(ids[:1]))
    evaluate_run(split, eval_cfg, dataset, set(ids[1:]))
    # equal up to float noise: a network's output depends slightly on what else is in its batch
    records = {
        s: {(r["method"], r["item_id"]): r["scores"] for r in ScoreSet(s, "tiny").records()} for s in (whole, split)
    }
    assert records[split].keys() == records[whole].keys() and len(records[whole]) == 2 * len(items)
    for key, scores in records[whole].items():
        assert records[split][key] == pytest.approx(scores, abs=1e-6)


def test_other_settings_under_the_same_name_are_refused(tmp_path, eval_cfg, dataset):
    run_dir = tmp_path / "run"
    fake_generate(run_dir, plan_items(dataset, prompts=1), "m")
    evaluate_run(run_dir, eval_cfg, dataset)
    eval_cfg.backbones.dino.resize = 224
    with pytest.raises(RunFolderError, match=r"backbones\.dino\.resize: 256 -> 224"):
        evaluate_run(run_dir, eval_cfg, dataset)


def test_evaluate_stage_scores_only_its_shard(tmp_path, make_config):
    from monkey.eval.stages import evaluate_stage

    from monkey.runner import plan_from_config

    run_dir = tmp_path / "run"
    limits = ("plan.limit.subjects=2", "plan.limit.prompts=2", "generation.batch_size=1")  # shards are whole batches
    shards = [make_config(*limits, f"shard={k}", "num_shards=2") for k in (0, 1)]
    items = plan_from_config(shards[0])
    fake_generate(run_dir, items, shards[0].method.name)
    first = evaluate_stage(shards[0], run_dir)
    assert first.rows == 2 and first.scored == 2
    assert evaluate_stage(shards[1], run_dir).scored == 2
    scored = {r["item_id"] for r in ScoreSet(run_dir, "tiny").records() if r["method"] != ORACLE}
    assert scored == {item.item_id for item in items}
