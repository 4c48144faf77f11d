"""The demo's shape end to end: a multirun that generates, evaluates and reports once after its last job,
then `monkey-report` over the same folders after the fact, which scores nothing again."""

from pathlib import Path

import pandas as pd
from helpers import QUICK
from monkey.eval.cli import main as report_main
from test_cli import run_cli


def cache_files(experiment: Path) -> list[Path]:
    return sorted(experiment.glob("*/cache/embeddings/**/*.safetensors"))


def test_demo_like_multirun_ends_with_a_report(tmp_path):
    result = run_cli(
        tmp_path, "method=ip_adapter_1.0,text_only", "plan.limit.subjects=1", "plan.limit.prompts=2", *QUICK
    )
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = tmp_path / "runs" / "demo"
    report = experiment / "report"
    for name in (
        "table1.csv",
        "table1.md",
        "table1.tex",
        "paper_comparison.md",
        "summary.csv",
        "pareto_dreambooth_clip_i_vs_clip_t.png",
        "pareto_dreambooth_clip_i_vs_clip_t.pdf",
        "pareto_dreambooth_dino_vs_clip_t.png",
        "pareto_dreambooth_dino_vs_clip_t.pdf",
        "grid_dreambooth.png",
        "report.md",
    ):
        assert (report / name).stat().st_size > 0, name
    table = pd.read_csv(report / "table1.csv")
    assert table["variant"].tolist() == ["ip_adapter_1.0", "oracle", "text_only"]
    scores = pd.read_csv(report / "scores.csv")
    assert len(scores) == 2 * 2 + 2  # two methods x 2 items, plus one oracle row per item
    generated = scores[scores["method"] != "oracle"]
    assert (generated["height"] == 64).all() and (generated["width"] == 64).all()  # the size each row was made at
    assert (
        scores.loc[scores["method"] != "oracle", "prompt"] == scores.loc[scores["method"] != "oracle", "plan_prompt"]
    ).all()
    assert "IP-Adapter (base)" in (report / "paper_comparison.md").read_text()
    assert (result.stdout + result.stderr).count("report: deferred") == 2  # each job deferred; one report at the end

    # after the fact, over the same folders: nothing is embedded again, the numbers are the same
    before = cache_files(experiment)
    assert report_main([str(experiment), "--out", str(tmp_path / "again")]) == 0
    assert cache_files(experiment) == before
    assert (tmp_path / "again" / "table1.csv").read_text() == (report / "table1.csv").read_text()
