"""The prepared GPU check runs as is: in --quick mode (tiny twins, CPU) it writes its record, and the
record's extrapolation is the formula it states."""

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
        [sys.executable, str(SCRIPT), "--quick", "--iterations", "2", "--out", str(tmp_path)],
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
        assert len(run["iteration_s"]) == 2 and len(run["losses"]) == 2
        assert run["per_iteration_median_s"] == run["iteration_s"][1]  # the first iteration is warm-up
        assert run["extrapolated_s"] == pytest.approx(50 * run["per_iteration_median_s"] + run["final_pass_s"])
    assert "extrapolated" in (tmp_path / "gpu_rectifid.md").read_text()
