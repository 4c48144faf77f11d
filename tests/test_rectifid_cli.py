"""RectifID from the command line beside MONKEY in one multirun, scored and reported under the
paper's "RectifID" row."""

import os
import subprocess

import pandas as pd
from helpers import QUICK_SIZE, stable_rows
from test_cli import command


def test_rectifid_runs_beside_monkey_and_reaches_table1(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # many small ops: one thread is faster on a busy CPU
    result = subprocess.run(
        [*command(), "method=monkey,rectifid", "plan.limit.subjects=1", "plan.limit.prompts=1", *QUICK_SIZE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = tmp_path / "runs" / "demo"
    folders = sorted(p.name.split(",")[0] for p in experiment.iterdir() if p.is_dir() and p.name != "report")
    assert folders == ["monkey", "rectifid"]
    rectifid_dir = next(p for p in experiment.iterdir() if p.name.startswith("rectifid"))
    (row,) = stable_rows(rectifid_dir)
    assert (
        row["method"] == "rectifid"
        and row["prompt"] == row["plan_prompt"]
        and (row["height"], row["width"]) == (64, 64)
    )
    info = row["info"]
    assert info["iterations"] == 3 and isinstance(info["final_loss"], float)  # tiny profile: 3 iterations
    assert isinstance(info["subject_detected"], bool) and isinstance(info["reference_detected"], bool)

    report = experiment / "report"
    table = pd.read_csv(report / "table1.csv")
    assert {"monkey", "rectifid"} <= set(table["variant"])
    comparison = pd.read_csv(report / "paper_comparison.csv")
    ours = comparison[comparison["paper_method"] == "RectifID"]
    assert set(ours["variant"]) == {"rectifid"} and (ours["n"] == 1).all() and ours["ours"].notna().all()
    assert set(ours["metric"]) == {"clip_t", "dino", "dino_v1", "clip_i"}  # DINOv2 beside, DINO v1 compared
    assert "RectifID" in (report / "paper_comparison.md").read_text()
