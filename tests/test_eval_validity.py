"""The report compares like with like, and its wiring is guarded: each test checks against a computation
written out here (a cosine of embeddings of the item's own source photo, the summary's image means).

Pure aggregation tests (frontier, subject means, cluster intervals) are in test_eval_aggregate.py.
Planted bugs each test was seen to catch (then reverted):
- scoring 1:1 against the subject's first reference photo instead of the
  item's own source (`real[refs[...][0]]`)                                 -> test_one_to_one_scores...
- the paper comparison following `eval.report.level`                       -> test_paper_comparison_uses_image...
- the paper's DINO compared with DINOv2 instead of DINO v1                 -> test_paper_comparison_uses_image...
- the backbone cache key (`BackboneSpec.identity`) without the model name  -> test_backbone_identity...
- eval_config.json listing resize/crop for open_clip                       -> test_eval_config_lists...
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_config
from eval_helpers import fake_generate, make_dataset
from monkey.eval.aggregate import summarize
from monkey.eval.backbones import BackboneSpec, backbone_specs, load_backbone
from monkey.eval.report import build_report, metrics_paragraph
from monkey.eval.score_store import ScoreSet
from monkey.eval.scoring import evaluate_run
from monkey.eval.tables import DEFAULT_PAPER_METRICS
from omegaconf import OmegaConf
from PIL import Image

from monkey.datasets.dreambooth import load_dreambooth
from monkey.hashing import to_plain
from monkey.plan import build_plan
from monkey.prompts import load_prompt_set


@pytest.fixture(scope="module")
def all_images_run(tmp_path_factory):
    """A DreamBooth-layout dataset with images=all (alpha: 2 photos, beta: 1) and 2 methods x 2 presets."""
    root = tmp_path_factory.mktemp("validity")
    dataset = make_dataset(root / "data")
    dataset.images = "all"
    sources = load_dreambooth(root=dataset.root, images="all")
    items = build_plan(sources, load_prompt_set("locations", "{subject_word} {location}"), limit_prompts=2)
    experiment = root / "runs" / "paper"
    for folder, method, preset in (
        ("monkey,preset=fair", "monkey", "fair"),
        ("monkey,preset=paper", "monkey", "paper"),
        ("ip_adapter_1.0,preset=paper", "ip_adapter_1.0", "paper"),
    ):
        run_dir = experiment / folder
        fake_generate(run_dir, items, method, prompt_suffix="" if preset == "fair" else " ")
        hydra_dir = run_dir / ".hydra" / "shard-0-of-1"
        hydra_dir.mkdir(parents=True)
        knobs = {"paper_bug_final_all_steps": False, "paper": {"set": {"paper_bug_final_all_steps": True}}}
        config = {
            "preset": preset,
            "method": {"name": method, **(knobs if method == "monkey" else {})},
            "dataset": OmegaConf.to_container(dataset),
        }
        OmegaConf.save(OmegaConf.create(config), hydra_dir / "config.yaml")
    return experiment, dataset, items


def test_one_to_one_scores_use_each_items_own_source_photo(all_images_run):
    experiment, dataset, items = all_images_run
    eval_cfg = compose_config().eval
    run_dir = experiment / "monkey,preset=fair"
    evaluate_run(run_dir, eval_cfg, dataset)
    spec = next(s for s in backbone_specs(to_plain(eval_cfg.backbones)) if s.image_metric == "dino")
    backbone = load_backbone(spec, "cpu")
    records = {r["item_id"]: r for r in ScoreSet(run_dir, eval_cfg.name).records() if r["method"] == "monkey"}
    second_photo = [item for item in items if item.source.subject == "alpha" and item.source.image_id == "01"]
    assert second_photo  # the test needs an item whose source is not the subject's first photo
    for item in items:
        generated = Image.open(run_dir / item.image_relpath("monkey")).convert("RGB")
        own = Image.open(item.source.image_path).convert("RGB")
        embeddings = backbone.embed_images([generated, own])  # [2, D], unit norm
        expected = float(torch.dot(embeddings[0], embeddings[1]))
        assert records[item.item_id]["scores"]["dino"] == pytest.approx(expected, abs=1e-5), item.item_id
    first = Image.open(Path(dataset.root) / "dataset" / "alpha" / "00.jpg").convert("RGB")  # alpha's first photo
    item = second_photo[0]
    generated = Image.open(run_dir / item.image_relpath("monkey")).convert("RGB")
    wrong = backbone.embed_images([generated, first])
    assert abs(float(torch.dot(wrong[0], wrong[1])) - records[item.item_id]["scores"]["dino"]) > 1e-4


def test_paper_comparison_uses_image_means_paper_rows_and_dino_v1(all_images_run, tmp_path):
    experiment, dataset, _ = all_images_run
    eval_cfg = compose_config("eval.report.level=subject").eval
    report = build_report([experiment], tmp_path / "report", eval_cfg, dataset_cfg=dataset)
    summary, comparison = report.summary, report.comparison
    image = summary[summary["level"] == "image"].set_index(["variant", "metric"])
    monkey = comparison[comparison["paper_method"] == "MONKEY"]
    assert set(monkey["variant"]) == {"monkey (preset=paper)"} and set(monkey["preset"]) == {"paper"}
    assert set(monkey["fair_variant"]) == {"monkey (preset=fair)"}
    for _, row in monkey.iterrows():
        assert row["ours"] == pytest.approx(image.loc[(row["variant"], row["metric"]), "mean"])
        assert row["ci_low"] == pytest.approx(image.loc[(row["variant"], row["metric"]), "ci_low"])
        assert row["fair"] == pytest.approx(image.loc[("monkey (preset=fair)", row["metric"]), "mean"])
        assert row["fair_minus_ours"] == pytest.approx(row["fair"] - row["ours"])
    # the subject level differs on this data (alpha has 4 images, beta 2), so following `level` shows
    subject = summary[summary["level"] == "subject"].set_index(["variant", "metric"])
    assert (
        abs(
            subject.loc[("monkey (preset=paper)", "dino"), "mean"]
            - image.loc[("monkey (preset=paper)", "dino"), "mean"]
        )
        > 1e-6
    )
    assert to_plain(eval_cfg.report.paper_metrics) == DEFAULT_PAPER_METRICS  # config and code agree
    paper_dino = {"MONKEY": 0.529, "IP-Adapter (base)": 0.621}  # results/paper/table1.csv, DreamBooth
    by_metric = comparison.set_index(["paper_method", "metric"])
    for method, number in paper_dino.items():
        assert by_metric.loc[(method, "dino_v1"), "paper"] == number
        assert np.isnan(by_metric.loc[(method, "dino"), "paper"])  # DINOv2: shown, not compared
    text = (tmp_path / "report" / "paper_comparison.md").read_text()
    assert (
        "DINO v1 [vit_small_patch16_224.dino, 224 px]" in text and "[vit_base_patch14_dinov2.lvd142m, 224 px]" in text
    )
    assert "monkey (preset=paper) (paper)" in text
    page = (tmp_path / "report" / "report.md").read_text()  # says which MONKEY image each preset scored
    assert "| monkey (preset=paper) | paper | adapter and mask on every step (reference code) |" in page
    assert "| monkey (preset=fair) | fair | masked on `mask_steps` (text) |" in page


def test_backbone_identity_names_every_setting_that_changes_an_embedding():
    base = BackboneSpec(key="dino", kind="timm", model_name="vit_small_patch16_224.dino", image_metric="dino")
    changes = {
        "model_name": "vit_base_patch14_dinov2.lvd142m",
        "pretrained": "/models/dino.safetensors",
        "resize": 224,
        "crop": 196,
        "force_quick_gelu": True,
        "tiny": {"depth": 2},
        "tiny_seed": 1,
    }
    for field, value in changes.items():
        other = BackboneSpec(**{**base.__dict__, field: value})
        assert other.identity != base.identity, field
    relabelled = BackboneSpec(**{**base.__dict__, "image_metric": "dino_other"})
    assert relabelled.identity == base.identity  # the column name does not change an embedding


def test_eval_config_lists_the_transforms_that_ran(all_images_run):
    experiment, dataset, _ = all_images_run
    run_dir = experiment / "ip_adapter_1.0,preset=paper"
    eval_cfg = compose_config().eval
    evaluate_run(run_dir, eval_cfg, dataset)
    config = json.loads((run_dir / "scores" / eval_cfg.name / "eval_config.json").read_text())
    assert "resize" not in config["backbones"]["clip"] and "crop" not in config["backbones"]["clip"]
    assert config["backbones"]["dino"]["resize"] == 256
    dino = config["transforms"]["dino"]
    assert dino[0].startswith("Resize(size=256") and "bicubic" in dino[0] and dino[1].startswith("CenterCrop(size=(224")
    clip = load_backbone(backbone_specs(to_plain(eval_cfg.backbones))[-1], "cpu")
    assert config["transforms"]["clip"] == clip.describe_transform()
    assert not any("256" in step for step in config["transforms"]["clip"])
    # a score set written before (open_clip listed with resize/crop, no transforms) is still accepted
    old = {k: v for k, v in config.items() if k != "transforms"}
    old["backbones"]["clip"] |= {"resize": 256, "crop": 224}
    (run_dir / "scores" / eval_cfg.name / "eval_config.json").write_text(json.dumps(old))
    evaluate_run(run_dir, eval_cfg, dataset)


def test_report_header_names_weights_inputs_and_clip_t_text():
    specs = backbone_specs(to_plain(compose_config("eval=default").eval.backbones))
    text = "\n".join(metrics_paragraph(specs, "image"))
    assert "`vit_base_patch14_dinov2.lvd142m`, input 224 px" in text
    assert "weights `openai`, QuickGELU" in text
    assert "exact prompt stored in its manifest row" in text and "`paper_clip_t_prompt`" in text
    assert "resample **subjects**" in text


@pytest.mark.parametrize("experiment", ["paper_dreambooth", "paper_magic"])
def test_paper_experiments_run_every_method_under_both_presets(experiment):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="monkey.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert sorted(str(params["preset"]).split(",")) == ["fair", "paper"]
    assert "monkey" in str(params["method"]).split(",")


def test_one_subject_has_no_interval_and_still_plots(tmp_path):
    from monkey.eval.plots import pareto_plot

    scores = pd.DataFrame(
        {
            "variant": ["a"] * 3 + ["b"] * 3,
            "method": ["a"] * 3 + ["b"] * 3,
            "dataset": "d",
            "subject": "only",
            "clip_t": [0.30, 0.32, 0.31, 0.25, 0.26, 0.27],
            "clip_i": [0.60, 0.62, 0.61, 0.70, 0.72, 0.71],
        }
    )
    summary = summarize(scores, ["clip_t", "clip_i"], samples=50, seed=0)
    assert summary["ci_low"].isna().all() and summary["ci_high"].isna().all()  # nothing to resample
    paths = pareto_plot(summary, "d", "clip_t", "clip_i", tmp_path / "pareto", [], {}, None, "image")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)
