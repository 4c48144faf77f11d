"""The report compares like with like, and its wiring is guarded: each test checks against a computation
written out here (a brute-force frontier, a hand bootstrap loop, a cosine of embeddings of the item's own
source photo, the summary's image means).

Planted bugs each test was seen to catch (then reverted):
- the last Pareto-frontier member dropped in `pareto_membership`         -> test_frontier_marks...
- scoring 1:1 against the subject's first reference photo instead of the
  item's own source (`real[refs[...][0]]`)                                 -> test_one_to_one_scores...
- subject-level aggregation with the median of a subject's images          -> test_subject_level_is_the_mean...
- intervals resampling images instead of subjects                          -> test_image_level_interval...
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
from monkey.eval.aggregate import cluster_bootstrap_interval, summarize
from monkey.eval.backbones import BackboneSpec, backbone_specs, load_backbone
from monkey.eval.report import build_report, metrics_paragraph
from monkey.eval.score_store import ScoreSet
from monkey.eval.scoring import evaluate_run
from monkey.eval.tables import DEFAULT_PAPER_METRICS, paper_comparison, pareto_membership, without_preset
from omegaconf import OmegaConf
from PIL import Image

from monkey.datasets.dreambooth import load_dreambooth
from monkey.hashing import to_plain
from monkey.plan import build_plan
from monkey.prompts import load_prompt_set


def brute_frontier(points: dict[str, tuple[float, float]]) -> set[str]:
    """Sort by x falling; a point is on the frontier when its y beats every y seen before (distinct values)."""
    best, on = -np.inf, set()
    for name, (_, y) in sorted(points.items(), key=lambda kv: -kv[1][0]):
        if y > best:
            on.add(name)
            best = y
    return on


def test_frontier_marks_every_member_including_the_last():
    rng = np.random.default_rng(7)
    rows, expected = [], {}
    for dataset in ("dreambooth", "magic"):
        names = [f"m{i}" for i in range(8)] + ["zz_monkey"]  # MONKEY sorts last, as in the real table
        clip_t = rng.uniform(0.2, 0.35, len(names))
        clip_i = 1.2 - 2 * clip_t + rng.normal(0, 0.01, len(names))  # a trade-off: many frontier members
        clip_t[-1], clip_i[-1] = clip_t.max() + 0.01, clip_i.min() - 0.01  # the last is on it (best CLIP-T)
        for name, x, y in zip(names, clip_t, clip_i, strict=True):
            for metric, value in (("clip_t", x), ("clip_i", y)):
                rows.append(dict(variant=name, method=name, dataset=dataset, metric=metric, level="image", mean=value))
        on = brute_frontier({n: (x, y) for n, x, y in zip(names, clip_t, clip_i, strict=True)})
        assert len(on) >= 3 and "zz_monkey" in on
        label = {"dreambooth": "DreamBooth", "magic": "Magic"}[dataset]
        for name in on:
            expected.setdefault(name, []).append(f"{label} CLIP-I")
    membership = pareto_membership(pd.DataFrame(rows), [("clip_t", "clip_i")], [], {"clip_i": "CLIP-I"})
    assert membership == expected


def test_subject_level_is_the_mean_of_subject_means():
    scores = pd.DataFrame(
        {
            "variant": ["m"] * 5,
            "method": ["m"] * 5,
            "dataset": ["d"] * 5,
            "subject": ["a", "a", "a", "b", "b"],
            "dino": [0.1, 0.2, 0.6, 0.9, 0.7],  # a's median 0.2 != its mean 0.3
        }
    )
    summary = summarize(scores, ["dino"], samples=100, seed=0).set_index("level")
    assert summary.loc["subject", "mean"] == pytest.approx((0.3 + 0.8) / 2)
    assert summary.loc["image", "mean"] == pytest.approx(np.mean([0.1, 0.2, 0.6, 0.9, 0.7]))
    assert (summary["subjects"] == 2).all() and (summary["resampled"] == "subjects").all()


def test_image_level_interval_resamples_subjects():
    rng = np.random.default_rng(3)
    subjects = np.repeat(np.arange(12), 20)  # 12 subjects x 20 images, as DreamBooth's layout
    values = rng.normal(0.5, 0.1, 12)[subjects] + rng.normal(0, 0.03, len(subjects))  # subject effects
    low, high = cluster_bootstrap_interval(values, subjects, samples=300, seed=[5, 6])
    # written out: draw 12 subjects with replacement, average all images of the drawn subjects
    draw = np.random.default_rng([5, 6])
    means = []
    for _ in range(300):
        picked = draw.integers(0, 12, size=12)
        means.append(np.concatenate([values[subjects == s] for s in picked]).mean())
    assert (low, high) == pytest.approx((np.percentile(means, 2.5), np.percentile(means, 97.5)))
    # resampling images as independent would be far narrower here
    iid = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(300)]
    assert high - low > 2 * (np.percentile(iid, 97.5) - np.percentile(iid, 2.5))
    scores = pd.DataFrame({"variant": "m", "method": "m", "dataset": "d", "subject": subjects, "dino": values})
    row = summarize(scores, ["dino"], samples=300, seed=0).set_index("level").loc["image"]
    assert row["ci_high"] - row["ci_low"] == pytest.approx(high - low, rel=0.35)
    assert np.isnan(cluster_bootstrap_interval(values[:20], subjects[:20], 100, 0)).all()  # one subject: n/a


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


def test_variants_pair_with_their_fair_twin():
    assert without_preset("monkey (preset=paper)") == "monkey"
    assert without_preset("monkey (method.token=2, preset=fair)") == "monkey (method.token=2)"
    assert without_preset("monkey (preset=paper, method.token=2)") == "monkey (method.token=2)"
    summary = pd.DataFrame(
        [
            dict(
                variant=v,
                method="monkey",
                preset=p,
                dataset="dreambooth",
                metric="dino_v1",
                level="image",
                n=4,
                subjects=2,
                mean=m,
                ci_low=m - 0.1,
                ci_high=m + 0.1,
            )
            for v, p, m in (("monkey (preset=paper)", "paper", 0.4), ("monkey (preset=fair)", "fair", 0.5))
        ]
    )
    paper = pd.DataFrame(
        {"method": ["MONKEY"], "dataset": ["dreambooth"], "clip_t": [0.3], "dino": [0.529], "clip_i": [0.7]}
    )
    comparison = paper_comparison(summary, paper, {"monkey": "MONKEY"}, {"dino_v1": "dino"})
    row = comparison.iloc[0]
    assert (row["variant"], row["fair_variant"]) == ("monkey (preset=paper)", "monkey (preset=fair)")
    assert row["diff"] == pytest.approx(0.4 - 0.529) and row["fair_minus_ours"] == pytest.approx(0.1)


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
