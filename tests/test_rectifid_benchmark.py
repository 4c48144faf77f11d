"""The prepared GPU check runs as is: in --quick mode (tiny twins, CPU) it writes its record, and the
record's extrapolation and its batch sweep's images per second are the formulas it states."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_rectifid.py"


def test_gpu_check_runs_quick_and_records_its_figures(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--iterations",
            "2",
            "--batch-iterations",
            "2",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "gpu_rectifid.json").read_text())
    assert record["settings"]["quick"] and record["settings"]["size"] == 64
    assert set(record["variants"]) == {"no_checkpointing", "checkpointing"}
    for run in record["variants"].values():
        assert len(run["iteration_s"]) == 2 and len(run["losses"]) == 1 and len(run["losses"][0]) == 2
        assert run["per_iteration_median_s"] == run["iteration_s"][1]  # the first iteration is warm-up
        assert run["extrapolated_s"] == pytest.approx(50 * run["per_iteration_median_s"] + run["final_pass_s"])
    assert record["settings"]["batches"] == [1, 2] and not record["skipped"]
    for mode, rows in record["batches"].items():
        assert [row["batch"] for row in rows] == [1, 2], mode
        for row in rows:
            assert len(row["losses"]) == row["batch"] and all(len(item) == 2 for item in row["losses"])
            assert row["extrapolated_s"] == pytest.approx(50 * row["iteration_s"][1] + row["final_pass_s"])
            assert row["images_per_s"] == pytest.approx(row["batch"] / row["extrapolated_s"])
            assert row["speedup_vs_batch_1"] == pytest.approx(row["images_per_s"] / rows[0]["images_per_s"])
            assert 0 < row["detector_s"] < row["total_s"]
        assert rows[1]["losses"][0] == pytest.approx(rows[0]["losses"][0], rel=1e-5)  # item 0 alone and in a batch
    text = (tmp_path / "gpu_rectifid.md").read_text()
    assert "extrapolated" in text and "| no checkpointing | 2 |" in text
