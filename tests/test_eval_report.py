"""Aggregation, Table 1, the paper side by side, Pareto frontiers, plots, grids and wandb, checked
against hand computations and hand-made inputs."""

import json

import numpy as np
import pandas as pd
import pytest
from eval_helpers import fake_generate, make_dataset, plan_items
from monkey.eval.aggregate import bootstrap_interval, summarize
from monkey.eval.pareto import pareto_mask
from monkey.eval.report import build_report
from monkey.eval.tables import paper_comparison, rank_marks, table1_frame, table1_latex, table1_markdown
from omegaconf import OmegaConf
from PIL import Image


def test_pareto_frontier_of_hand_made_points():
    x = np.array([0.10, 0.20, 0.15, 0.30, 0.30, np.nan, 0.05, 0.20])
    y = np.array([0.90, 0.80, 0.70, 0.30, 0.20, 1.00, 0.90, 0.80])
    # 0.15/0.70 is beaten by 0.20/0.80; 0.30/0.20 by 0.30/0.30 (tie on x); 0.05/0.90 by 0.10/0.90 (tie on y);
    # NaN is never on it; two identical points do not dominate each other
    assert pareto_mask(x, y).tolist() == [True, True, False, True, False, False, False, True]


def test_bootstrap_interval_equals_a_written_out_loop():
    values = np.random.default_rng(1).normal(0.5, 0.1, size=37)
    low, high = bootstrap_interval(values, samples=500, seed=[3, 4])
    rng = np.random.default_rng([3, 4])
    means = [values[rng.integers(0, len(values), size=len(values))].mean() for _ in range(500)]
    assert (low, high) == pytest.approx((np.percentile(means, 2.5), np.percentile(means, 97.5)))
    assert low < values.mean() < high
    # close to the normal-theory interval for a mean
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert high - low == pytest.approx(2 * half, rel=0.25)


def test_summary_levels_images_and_subjects_first():
    scores = pd.DataFrame(
        {
            "variant": ["m"] * 4,
            "method": ["m"] * 4,
            "dataset": ["d"] * 4,
            "subject": ["a", "a", "a", "b"],
            "clip_t": [0.1, 0.2, 0.3, 0.9],
        }
    )
    summary = summarize(scores, ["clip_t"], samples=200, seed=0).set_index("level")
    assert summary.loc["image", "mean"] == pytest.approx(0.375) and summary.loc["image", "n"] == 4
    assert summary.loc["subject", "mean"] == pytest.approx((0.2 + 0.9) / 2) and summary.loc["subject", "n"] == 2
    assert summary.loc["image", "std"] == pytest.approx(np.std([0.1, 0.2, 0.3, 0.9], ddof=1))


def hand_summary() -> pd.DataFrame:
    means = {  # variant -> dataset -> (clip_t, dino, clip_i)
        "monkey": {"dreambooth": (0.31, 0.50, 0.74), "magic": (0.27, 0.49, 0.76)},
        "ip_adapter_1.0": {"dreambooth": (0.28, 0.62, 0.80), "magic": (0.23, 0.56, 0.82)},
        "masactrl": {"dreambooth": (0.19, 0.51, 0.77), "magic": (0.18, 0.30, 0.61)},
        "text_only": {"dreambooth": (0.33, 0.20, 0.50), "magic": (0.30, 0.10, 0.40)},
    }
    rows = []
    for variant, per_dataset in means.items():
        for dataset, values in per_dataset.items():
            for metric, mean in zip(("clip_t", "dino", "clip_i"), values, strict=True):
                rows.append(
                    dict(
                        variant=variant,
                        method=variant,
                        dataset=dataset,
                        metric=metric,
                        level="image",
                        n=10,
                        mean=mean,
                        std=0.1,
                        ci_low=mean - 0.02,
                        ci_high=mean + 0.02,
                    )
                )
    return pd.DataFrame(rows)


def test_table1_layout_marks_and_references():
    labels = {"clip_t": "CLIP-T", "dino": "DINO", "clip_i": "CLIP-I"}
    wide = table1_frame(hand_summary(), ["clip_t", "dino", "clip_i"], ["magic", "dreambooth"], ["text_only"])
    assert list(wide.columns) == [(d, m) for d in ("magic", "dreambooth") for m in ("clip_t", "dino", "clip_i")]
    assert list(wide.index) == ["ip_adapter_1.0", "masactrl", "monkey", "text_only"]  # references last
    marks = rank_marks(wide)
    # DreamBooth CLIP-T: text_only is highest but a reference, so monkey is best and IP-Adapter second
    assert marks.loc["monkey", ("dreambooth", "clip_t")] == "best"
    assert marks.loc["ip_adapter_1.0", ("dreambooth", "clip_t")] == "second"
    assert marks.loc["text_only", ("dreambooth", "clip_t")] == ""
    assert marks.loc["masactrl", ("dreambooth", "dino")] == "second"
    membership = {"monkey": ["CLIP-I"]}
    markdown = table1_markdown(wide, marks, membership, labels).splitlines()
    assert markdown[0] == (
        "| method | Magic CLIP-T | Magic DINO | Magic CLIP-I "
        "| DreamBooth CLIP-T | DreamBooth DINO | DreamBooth CLIP-I | Pareto |"
    )
    assert markdown[4] == "| monkey | **0.270** | *0.490* | *0.760* | **0.310** | 0.500 | 0.740 | CLIP-I |"
    assert markdown[5] == "| text_only (reference) | 0.300 | 0.100 | 0.400 | 0.330 | 0.200 | 0.500 |  |"
    latex = table1_latex(wide, marks, membership, labels)
    assert r"\multicolumn{3}{c}{Magic} & \multicolumn{3}{c}{DreamBooth}" in latex
    assert (
        r"ip\_adapter\_1.0 & \textit{0.230} & \textbf{0.560} & \textbf{0.820} & \textit{0.280} & \textbf{0.620}"
        in latex
    )
    lines = latex.splitlines()
    assert lines[lines.index(r"text\_only & 0.300 & 0.100 & 0.400 & 0.330 & 0.200 & 0.500 &  \\") - 1] == r"\midrule"


def test_paper_comparison_lists_every_paper_row_with_differences():
    paper = pd.DataFrame(
        {
            "method": ["IP-Adapter (base)", "MONKEY", "RectifID"],
            "dataset": ["dreambooth"] * 3,
            "clip_t": [0.282, 0.318, 0.273],
            "dino": [0.621, 0.529, 0.14],
            "clip_i": [0.806, 0.743, 0.543],
        }
    )
    names = {"ip_adapter_1.0": "IP-Adapter (base)", "monkey": "MONKEY"}
    metrics = {"clip_t": "clip_t", "dino": "dino", "clip_i": "clip_i"}
    comparison = paper_comparison(hand_summary(), paper, names, metrics)
    row = comparison.set_index(["paper_method", "metric"]).loc[("MONKEY", "dino")]
    assert row["variant"] == "monkey" and row["diff"] == pytest.approx(0.50 - 0.529)
    rectifid = comparison[comparison["paper_method"] == "RectifID"]
    assert len(rectifid) == 3 and (rectifid["variant"] == "").all() and rectifid["ours"].isna().all()
    assert set(comparison["dataset"]) == {"dreambooth"}  # magic is not in this paper table


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Three run folders as a sweep lays them out, evaluated and merged into one report."""
    from conftest import compose_config

    root = tmp_path_factory.mktemp("report")
    dataset = make_dataset(root / "data")
    items = plan_items(dataset, prompts=2)
    experiment = root / "runs" / "sweep"
    folders = {
        "ip_adapter_1.0": "ip_adapter_1.0,plan.limit.prompts=2",
        "text_only": "text_only,plan.limit.prompts=2",
        "scaled": "ip_adapter_1.0,method.scale=0.5,plan.limit.prompts=2",
    }
    for method, folder in folders.items():
        fake_generate(experiment / folder, items, "ip_adapter_1.0" if method == "scaled" else method)
    hydra_dir = experiment / folders["scaled"] / ".hydra" / "shard-0-of-1"
    hydra_dir.mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create({"method": {"scale": 0.5}, "dataset": OmegaConf.to_container(dataset)}),
        hydra_dir / "config.yaml",
    )
    cfg = compose_config()
    return build_report([experiment], experiment / "report", cfg.eval, dataset_cfg=dataset)


def test_report_merges_folders_with_labels_and_config_columns(report):
    scores = report.scores
    assert sorted(scores["variant"].unique()) == [
        "ip_adapter_1.0",
        "ip_adapter_1.0 (method.scale=0.5)",
        "oracle",
        "text_only",
    ]
    assert (scores["variant"] == "oracle").sum() == 4  # one per item, not one per folder
    scaled = scores[scores["variant"] == "ip_adapter_1.0 (method.scale=0.5)"]
    assert (scaled["cfg.method.scale"] == 0.5).all() and scores.loc[
        scores["variant"] == "text_only", "cfg.method.scale"
    ].isna().all()
    table = pd.read_csv(report.out_dir / "table1.csv")
    assert table["variant"].tolist() == ["ip_adapter_1.0", "ip_adapter_1.0 (method.scale=0.5)", "oracle", "text_only"]
    assert table["reference"].tolist() == [False, False, True, True]
    # Table 1's numbers are the per-image means of the merged scores
    mean = scores.loc[scores["variant"] == "text_only", "clip_i"].mean()
    assert table.loc[table["variant"] == "text_only", "dreambooth:clip_i"].iloc[0] == pytest.approx(mean, rel=1e-5)
    comparison = pd.read_csv(report.out_dir / "paper_comparison.csv")
    matched = comparison[comparison["paper_method"] == "IP-Adapter (base)"]
    assert set(matched["variant"]) == {"ip_adapter_1.0", "ip_adapter_1.0 (method.scale=0.5)"}
    # the shipped results/paper/table1.csv; the paper's DINO sits beside DINO v1, DINOv2 is not compared
    assert matched["metric"].tolist() == ["clip_t", "dino_v1", "dino", "clip_i"] * 2
    assert matched["paper_column"].fillna("").tolist() == ["clip_t", "dino", "", "clip_i"] * 2
    assert np.allclose(matched["paper"], [0.282, 0.621, np.nan, 0.806] * 2, equal_nan=True)
    assert np.allclose(matched["diff"], matched["ours"] - matched["paper"], atol=1e-5, equal_nan=True)


def test_report_plots_and_grid_are_written(report):
    names = {p.name for p in report.out_dir.iterdir()}
    for stem in ("pareto_dreambooth_clip_i_vs_clip_t", "pareto_dreambooth_dino_vs_clip_t"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
        assert (report.out_dir / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
    for png in ("pareto_dreambooth_clip_i_vs_clip_t.png", "grid_dreambooth.png"):
        pixels = np.asarray(Image.open(report.out_dir / png).convert("L"))
        assert pixels.std() > 5  # something is drawn
    grid = np.asarray(Image.open(report.out_dir / "grid_dreambooth.png"))
    assert grid.shape[0] > grid.shape[1] * 0.8  # 1 + 3 rows of images over 4 columns
    assert {"table1.md", "table1.tex", "summary.csv", "scores.csv", "scores.parquet", "report.md"} <= names


def test_wandb_offline_writes_its_files(report, tmp_path, monkeypatch):
    from monkey.eval.wandb_logger import log_report

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "data"))  # where wandb stages a table's images
    logger = OmegaConf.create(
        {"name": "wandb", "project": "monkey-test", "mode": "offline", "dir": str(tmp_path), "max_images": 3}
    )
    folder = log_report(report, logger, {"eval": {"name": "tiny"}})
    runs = list(folder.glob("offline-run-*"))
    assert len(runs) == 1
    assert next(runs[0].glob("run-*.wandb")).stat().st_size > 0
    tables = list((runs[0] / "files" / "media" / "table").glob("scores_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert len(table["data"]) == (report.scores["method"] != "oracle").sum()
    plots = {p.name.split("_0_")[0] for p in (runs[0] / "files" / "media" / "images").rglob("*.png")}
    assert plots == {
        "pareto_dreambooth_clip_i_vs_clip_t",
        "pareto_dreambooth_dino_vs_clip_t",
        "pareto_dreambooth_dino_v1_vs_clip_t",  # the paper's DINO (v1) points go on this one only
        "grid_dreambooth",
    }
    staged = [p for p in (tmp_path / "data").rglob("*") if p.is_file() and p.read_bytes()[:4] == b"\x89PNG"]
    assert len(staged) == 3  # the table's first max_images images


def test_report_writes_a_gallery_of_every_image_with_its_scores(report, tmp_path):
    import re

    from monkey.eval.cli import main as report_main

    page = (report.out_dir / "gallery.html").read_text()
    cards = re.findall(r'<td class="card" data-method="([^"]*)".*?</td>', page, flags=re.S)
    generated = report.scores[report.scores["variant"] != "oracle"]
    assert sorted(cards) == sorted(generated["variant"])  # one card per generated image, labelled as in Table 1
    for row in generated.itertuples():  # each card shows its image's own CLIP-T, as scored; its row the seed
        item = re.search(rf'<tr class="item" data-item="{re.escape(row.item_id)}".*?</tr>', page, re.S).group(0)
        card = re.search(rf'data-method="{re.escape(row.variant)}" data-item="{re.escape(row.item_id)}".*?</td>', item)
        assert f"clip_t {row.clip_t:.3f}" in card.group(0) and f"seed {row.seed}" in item
    out = tmp_path / "gallery_only"
    assert report_main([str(report.run_dirs[0].parent), "--html", "--out", str(out)]) == 0
    assert (out / "gallery.html").read_text().count('class="card"') == len(generated)
    assert not (out / "table1.csv").exists()  # --html writes the gallery alone
