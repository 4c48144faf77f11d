"""benchmarks/time_to_table1.py: its item counts against the experiment composed and planned here, and its
hours against the GPU records and the ceil arithmetic of contiguous shards, written out another way."""

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
from conftest import compose_config, load_benchmark

from monkey.runner import plan_from_config

RECORDS = Path(__file__).resolve().parents[1] / "results" / "benchmarks"
FULL_DREAMBOOTH = Path("/work/shared/dreambooth")  # a resized google/dreambooth copy (tests/test_datasets.py)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The script on copies of the committed GPU records, and its record."""
    records = tmp_path_factory.mktemp("records")
    for name in ("gpu_throughput", "gpu_rectifid", "gpu_tf_ti2i"):
        shutil.copy(RECORDS / f"{name}.json", records)
    script = load_benchmark("time_to_table1")
    path = script.main(["--records", str(records), "--out", str(records), "--gpus", "1", "3", "16"])
    return script, json.loads(path.read_text()), records


def jobs_of(record, experiment):
    return {(r["method"], r["preset"]): r for r in record["jobs"] if r["experiment"] == experiment}


def test_items_are_the_full_grid_of_every_job_of_the_sweep(run):
    _, record, _ = run
    dreambooth = jobs_of(record, "paper_dreambooth")
    methods = ["ip_adapter_0.5", "ip_adapter_1.0", "monkey", "masactrl", "rectifid", "tf_ti2i", "freegraftor"]
    assert set(dreambooth) == {(m, p) for m in methods for p in ("fair", "paper")}
    if FULL_DREAMBOOTH.is_dir():  # the plan of a real copy, composed as monkey-bench composes it
        cfg = compose_config("experiment=paper_dreambooth", f"dataset.root={FULL_DREAMBOOTH}", "dataset.images=all")
        expected = len(plan_from_config(cfg))
    else:
        expected = 158 * 20
    assert expected == 3160 and {r["items"] for r in dreambooth.values()} == {expected}
    magic = jobs_of(record, "paper_magic")  # offline: one card's 20 locations
    assert {r["items"] for r in magic.values()} == {20} and all(r["per_card"] for r in magic.values())
    assert dreambooth[("monkey", "paper")]["size"] == 256 and dreambooth[("tf_ti2i", "fair")]["size"] == 1024
    assert dreambooth[("freegraftor", "fair")]["config_batch_size"] == 1  # its method.batch_size


def test_hours_are_the_records_per_image_times_over_ceil_shards(run):
    _, record, records = run
    throughput = json.loads((records / "gpu_throughput.json").read_text())["throughput"]
    best = {  # each method's fastest batch, found here by sorting
        method: sorted(throughput["batches"], key=lambda b, m=method: -b[m]["images_per_s"])[0]
        for method in ("ip_adapter", "monkey")
    }
    tf = json.loads((records / "gpu_tf_ti2i.json").read_text())["cases"][0]["figures"]["tf_ti2i_s_median"]
    rectifid = json.loads((records / "gpu_rectifid.json").read_text())["variants"]
    seconds = {
        "monkey": (best["monkey"]["batch_size"], 1 / best["monkey"]["monkey"]["images_per_s"]),
        "ip_adapter_1.0": (best["ip_adapter"]["batch_size"], 1 / best["ip_adapter"]["ip_adapter"]["images_per_s"]),
        "rectifid": (1, min(v["extrapolated_s"] for v in rectifid.values())),
        "tf_ti2i": (1, tf),
    }
    dreambooth = jobs_of(record, "paper_dreambooth")
    for method, (batch, per_image) in seconds.items():
        row = dreambooth[(method, "fair")]
        batches = math.ceil(3160 / batch)
        assert row["gpu_hours"] == pytest.approx(batches * batch * per_image / 3600)
        for gpus in (1, 3, 16):  # the slowest of contiguous blocks holds ceil(batches / gpus) batches
            wall = math.ceil(batches / gpus) * batch * per_image / 3600
            assert row["wall_hours"][str(gpus)] == pytest.approx(wall)
    assert dreambooth[("ip_adapter_0.5", "fair")]["gpu_hours"] == dreambooth[("ip_adapter_1.0", "fair")]["gpu_hours"]
    assert dreambooth[("rectifid", "paper")]["status"] == "measured"  # 512 px and 50 iterations under both
    for key in (("monkey", "paper"), ("tf_ti2i", "paper"), ("masactrl", "fair"), ("freegraftor", "fair")):
        assert dreambooth[key]["status"].startswith("not measured") and "gpu_hours" not in dreambooth[key]
    totals = record["totals"]["paper_dreambooth"]
    measured = [r for r in dreambooth.values() if r["status"] == "measured"]
    assert totals["measured_jobs"] == len(measured) == 6
    assert totals["gpu_hours_measured_jobs"] == pytest.approx(sum(r["gpu_hours"] for r in measured))
    assert totals["wall_hours_measured_jobs"]["3"] == pytest.approx(sum(r["wall_hours"]["3"] for r in measured))
    text = (records / "time_to_table1.md").read_text()
    assert f"| monkey | fair | 3160 | 512 | 4 / {best['monkey']['batch_size']} |" in text
    assert "not measured at 256 px" in text and "GPU-hours per card" in text


def test_a_record_from_another_device_measures_nothing(run, tmp_path):
    script, _, records = run
    throughput = json.loads((records / "gpu_throughput.json").read_text())
    throughput["throughput"]["device_name"] = "NVIDIA A100-SXM4-80GB"
    (tmp_path / "gpu_throughput.json").write_text(json.dumps(throughput))
    assert script.read_measurements(tmp_path) == []  # and no rectifid / tf_ti2i records there


def test_the_gpu_page_shows_the_committed_record():
    """docs/gpu.md's marker becomes results/benchmarks/time_to_table1.md, headings nested (tools/mkdocs_hooks.py)."""
    sys.path.insert(0, str(RECORDS.parents[1] / "tools"))
    try:
        from mkdocs_hooks import on_page_markdown
    finally:
        sys.path.pop(0)
    page = (RECORDS.parents[1] / "docs" / "gpu.md").read_text()
    shown = on_page_markdown(page, None, None, None)
    record = (RECORDS / "time_to_table1.md").read_text()
    assert "<!-- benchmark record:" not in shown and "### Time to Table 1 (benchmarks/time_to_table1.py)" in shown
    assert record.splitlines()[2] in shown  # the record's first paragraph, as written


def test_a_batch_sweep_in_the_records_gives_each_method_its_fastest_batch(run, tmp_path):
    """With RectifID's and TF-TI2I's batch sweeps in the records (issue 30.2), a job takes its method's fastest
    batch: RectifID at the sweep's extrapolated images/s, TF-TI2I at its full-step median over the sweep's
    measured speed-up; a slower batch never wins."""
    script, _, records = run
    rectifid = json.loads((records / "gpu_rectifid.json").read_text())
    base = 1 / min(v["extrapolated_s"] for v in rectifid["variants"].values())
    rectifid["batches"] = [
        {"mode": "plain", "batch": 1, "images_per_s": base},
        {"mode": "plain", "batch": 4, "images_per_s": 3 * base},
        {"mode": "checkpointing", "batch": 8, "images_per_s": 2 * base},
    ]
    tf = json.loads((records / "gpu_tf_ti2i.json").read_text())
    median = tf["cases"][0]["figures"]["tf_ti2i_s_median"]
    size = tf["cases"][0]["size"]
    tf["batches"] = {"size": size, "steps": 2, "rows": [
        {"batch": 1, "seconds": 1.0, "images_per_s": 1.0, "speedup_vs_batch_1": 1.0},
        {"batch": 4, "seconds": 1.6, "images_per_s": 2.5, "speedup_vs_batch_1": 2.5},
    ], "skipped": []}  # fmt: skip
    for name, record in (("gpu_rectifid", rectifid), ("gpu_tf_ti2i", tf)):
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    measurements = script.read_measurements(tmp_path)
    job = script.Job("paper_dreambooth", "rectifid", "fair", 3160, False, 512, 50, 4)
    best = script.match(job, measurements)
    assert best.batch_size == 4 and best.seconds_per_image == pytest.approx(1 / (3 * base))
    job = script.Job("paper_dreambooth", "tf_ti2i", "fair", 3160, False, size, tf["cases"][0]["steps"], 1)
    best = script.match(job, measurements)
    assert best.batch_size == 4 and best.seconds_per_image == pytest.approx(median / 2.5)
