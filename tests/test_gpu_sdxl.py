"""benchmarks/gpu_sdxl.py runs unchanged on a CPU with --quick (the tiny SDXL twins): its figures agree
with the raw timings it records, both adapters and both guidance modes run, and the budget skips rows."""

import json
import statistics

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def benchmark():
    return load_benchmark("gpu_sdxl")  # it imports sdxl_arch and benchtools beside it


def test_quick_run_records_consistent_figures(benchmark, tmp_path):
    rows = ["--rows", "base/turbo,plus/cfg", "--batch-sizes", "1"]
    path = benchmark.main(["--quick", "--out", str(tmp_path), *rows, "--budget-s", "600"])
    record = json.loads(path.read_text())
    assert record["settings"]["quick"] and record["settings"]["size"] == 64 and not record["skipped"]
    assert [(r["adapter"], r["mode"], r["batch_size"]) for r in record["rows"]] == [
        ("base", "turbo", 1),
        ("plus", "cfg", 1),
    ]
    for row in record["rows"]:
        for method in ("ip_adapter", "monkey"):
            assert row[method]["s_median"] == statistics.median(row[method]["s_all"])
        assert row["monkey_over_ip_adapter"] == pytest.approx(row["monkey"]["s_median"] / row["ip_adapter"]["s_median"])
        assert row["monkey_images_per_s"] == pytest.approx(row["batch_size"] / row["monkey"]["s_median"])
        assert row["guidance_scale"] == (0.0 if row["mode"] == "turbo" else 5.0)
    table = (tmp_path / "gpu_sdxl.md").read_text()
    assert table.count("\n| base | turbo | 1 |") == 1 and table.count("\n| plus | cfg | 1 |") == 1


def test_the_budget_skips_rows_and_lists_them(benchmark, tmp_path):
    path = benchmark.main(["--quick", "--out", str(tmp_path), "--rows", "base/turbo", "--budget-s", "0"])
    record = json.loads(path.read_text())
    assert record["rows"] == [] and record["skipped"] == [{"adapter": "base", "mode": "turbo", "why": "time budget"}]
