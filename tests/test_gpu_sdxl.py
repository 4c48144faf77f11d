"""benchmarks/gpu_sdxl.py runs unchanged on a CPU with --quick (the tiny SDXL twins): its figures agree
with the raw timings it records, both adapters and both guidance modes run, and the budget skips rows."""

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def benchmark():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports sdxl_arch beside it, as `python benchmarks/...` does
    try:
        spec = importlib.util.spec_from_file_location("gpu_sdxl", BENCHMARKS / "gpu_sdxl.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


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
