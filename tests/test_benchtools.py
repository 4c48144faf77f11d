"""The CPU batch records' shared measuring and table (benchmarks/benchtools.py), used by
rectifid_speed.py --batch and tf_ti2i_speed.py --batch: which side is timed in which order, the
figures computed from the pairs, and the markdown table, against values written out by hand."""

import json

import pytest
import torch
from conftest import BENCHMARKS, load_benchmark


@pytest.fixture(scope="module")
def benchtools():
    return load_benchmark("benchtools")


def test_batch_against_one_by_one_times_abba_pairs_and_derives_its_figures(benchtools, monkeypatch):
    """Each side returns the seconds the fake timer reports, so the figures are known exactly: the
    batched call takes 2, 4 s in its pairs, the one-by-one calls 6, 6 s (count 3)."""
    calls: list[str] = []
    seconds = {"batched": iter([0, 0, 2.0, 4.0]), "one_by_one": iter([0, 6.0, 6.0])}  # warm-up, memory, pairs

    def side(name):
        def run():
            calls.append(name)
            return next(seconds[name])

        return run

    monkeypatch.setattr(benchtools, "timed", lambda fn, device: fn())
    figures = benchtools.batch_against_one_by_one(side("batched"), side("one_by_one"), 3, 2, torch.device("cpu"))
    # warm-up (batched), peak memory of each side, then pair 1 A-B and pair 2 B-A
    assert calls == ["batched", "batched", "one_by_one", "batched", "one_by_one", "one_by_one", "batched"]
    assert figures["pairs_s"] == [(2.0, 6.0), (4.0, 6.0)]
    assert figures["seconds_per_image"] == {"batched": 3.0 / 3, "one_by_one": 6.0 / 3}
    assert figures["speedup_median"] == pytest.approx((3.0 + 1.5) / 2)
    assert set(figures["peak_memory"]) == {"batched", "one_by_one"}
    assert all(p["peak_mib"] > 0 for p in figures["peak_memory"].values())


def test_batch_table_renders_the_committed_batch_records_figures(benchtools):
    record = {
        "settings": {"batch": 4},
        "pairs_s": [[1.234, 5.0], [2.0, 6.789]],
        "seconds_per_image": {"batched": 0.40049, "one_by_one": 1.5},
        "speedup_median": 3.456,
        "peak_memory": {"batched": {"peak_mib": 700.4}, "one_by_one": {"peak_mib": 650.6}},
    }
    assert benchtools.batch_table(record) == [
        "| items | s / image, one call of all | s / image, one call each | speed-up (median of pairs) "
        "| peak RSS MiB, batched / one by one |",
        "|---|---|---|---|---|",
        "| 4 | 0.400 | 1.500 | 3.46 | 700 / 651 |",
        "",
        "Pairs (s, batched/one by one): 1.23/5.00, 2.00/6.79.",
        "",
    ]


@pytest.mark.parametrize(
    ("script", "render", "stem"),
    [
        ("rectifid_speed", "markdown", "rectifid_speed"),
        ("rectifid_speed", "batch_markdown", "rectifid_speed_batch"),
        ("tf_ti2i_speed", "batch_markdown", "tf_ti2i_speed_batch"),
    ],
)
def test_committed_speed_records_render_from_their_json_byte_for_byte(script, render, stem):
    folder = BENCHMARKS.parent / "results" / "benchmarks"
    record = json.loads((folder / f"{stem}.json").read_text())
    assert getattr(load_benchmark(script), render)(record) == (folder / f"{stem}.md").read_text()
