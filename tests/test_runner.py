"""The generate stage: resumption after a crash, refusal to mix configs, clear errors on bad images."""

import shutil

import pytest
from helpers import QUICK, image_bytes, manifest_line_count, stable_rows
from monkey.baselines.ip_adapter import IPAdapterMethod

from monkey.errors import DataError, RunFolderError
from monkey.paths import bundled_dreambooth_root
from monkey.runner import generate_stage
from monkey.store import ManifestWriter, RunStore

PLAN = ("plan.limit.subjects=2", "plan.limit.prompts=3", "generation.batch_size=2", *QUICK)


class Interrupted(Exception):
    pass


def test_interrupted_run_resumes_to_the_uninterrupted_result(make_config, tmp_path, monkeypatch):
    cfg = make_config(*PLAN)
    reference = tmp_path / "reference"
    assert generate_stage(cfg, reference).generated == 6

    calls = {"n": 0}
    original = IPAdapterMethod.generate

    def crash_after_two_batches(self, requests):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Interrupted
        return original(self, requests)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(IPAdapterMethod, "generate", crash_after_two_batches)
    with pytest.raises(Interrupted):
        generate_stage(cfg, resumed)
    assert manifest_line_count(resumed) == 4
    before = image_bytes(resumed)
    mtimes = {p: p.stat().st_mtime_ns for p in (resumed / "images").rglob("*.png")}

    monkeypatch.setattr(IPAdapterMethod, "generate", original)
    summary = generate_stage(cfg, resumed)
    assert (summary.skipped, summary.generated) == (4, 2)
    assert manifest_line_count(resumed) == 6  # no duplicate rows
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # finished images untouched
    assert {k: v for k, v in image_bytes(resumed).items() if k in before} == before
    assert stable_rows(resumed) == stable_rows(reference)
    assert image_bytes(resumed) == image_bytes(reference)
    assert generate_stage(cfg, resumed).generated == 0


def test_rerun_with_another_config_is_refused_naming_the_key(make_config, run_dir):
    generate_stage(make_config(*PLAN), run_dir)
    with pytest.raises(RunFolderError, match=r"method\.scale: 1\.0 -> 0\.7"):
        generate_stage(make_config(*PLAN, "method.scale=0.7"), run_dir)


def test_unreadable_image_names_the_file_and_keeps_finished_items(make_config, tmp_path):
    root = tmp_path / "dreambooth"
    shutil.copytree(bundled_dreambooth_root(), root)
    broken = root / "dataset" / "backpack_dog" / "00.jpg"
    broken.write_bytes(broken.read_bytes()[:200])  # truncated JPEG
    run_dir = tmp_path / "run"
    cfg = make_config(*PLAN, f"dataset.root={root}", "generation.batch_size=1")
    with pytest.raises(DataError, match=r"backpack_dog/00\.jpg"):
        generate_stage(cfg, run_dir)
    assert manifest_line_count(run_dir) == 3  # the first subject's three items were kept


def test_batch_cut_short_is_generated_whole_again(make_config, tmp_path, monkeypatch):
    """Killed between two rows of one batch: the rerun regenerates that batch with all its items (its
    neighbours change float rounding), writes only the missing ones, and matches an unbroken run."""
    cfg = make_config("plan.limit.subjects=2", "plan.limit.prompts=3", "generation.batch_size=3", *QUICK)
    reference = tmp_path / "reference"
    generate_stage(cfg, reference)
    original_append = ManifestWriter.append

    def die_on_second_row(self, row):
        if manifest_line_count(resumed) == 1:
            raise Interrupted
        original_append(self, row)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(ManifestWriter, "append", die_on_second_row)
    with pytest.raises(Interrupted):
        generate_stage(cfg, resumed)
    assert manifest_line_count(resumed) == 1
    (row,) = RunStore(resumed).rows()
    kept = resumed / row["image"]  # (the second image is in place too, but has no row: not finished)
    mtime = kept.stat().st_mtime_ns

    calls = []
    original_generate = IPAdapterMethod.generate
    monkeypatch.setattr(ManifestWriter, "append", original_append)
    monkeypatch.setattr(IPAdapterMethod, "generate", lambda self, r: calls.append(len(r)) or original_generate(self, r))
    summary = generate_stage(cfg, resumed)
    assert (summary.skipped, summary.generated) == (1, 5)
    assert calls == [3, 3]  # the cut batch whole, then the next one
    assert kept.stat().st_mtime_ns == mtime and manifest_line_count(resumed) == 6
    assert stable_rows(resumed) == stable_rows(reference)
    assert image_bytes(resumed) == image_bytes(reference)
