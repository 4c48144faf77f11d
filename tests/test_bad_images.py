"""dataset.on_bad_image=skip through the real runner: skip rows in the manifest, reruns that neither loop
nor lose them, a fixed image generated on the next run, and no empty run when nothing is usable."""

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import QUICK, manifest_line_count
from standins import noise, truncated_jpeg

from monkey.errors import DataError
from monkey.images import BadImageError
from monkey.runner import generate_stage
from monkey.store import RunStore

PLAN = ("dataset=folder", "plan.limit.prompts=2", "generation.batch_size=4", *QUICK)


def subjects(root: Path, bad: dict[str, Callable[[Path], object]]) -> None:
    for name in ("apple", "kiwi"):
        (root / name).mkdir(parents=True)
        if name in bad:
            bad[name](root / name / "00.jpg")
        else:
            noise(64, 64).save(root / name / "00.jpg")


def statuses(run_dir):
    return {row["item_id"]: row["status"] for row in RunStore(run_dir).rows()}


def test_skipped_images_are_recorded_once_and_generated_when_fixed(make_config, tmp_path):
    data, run_dir = tmp_path / "data", tmp_path / "run"
    subjects(data, {"apple": truncated_jpeg})
    cfg = make_config(*PLAN, f"dataset.root={data}", "dataset.on_bad_image=skip")

    first = generate_stage(cfg, run_dir)
    assert (first.generated, first.unusable) == (2, 2)
    rows = RunStore(run_dir).rows()
    skipped = [row for row in rows if row["status"] == "skipped"]
    assert [row["item_id"] for row in skipped] == ["folder/apple/00/p00/s0", "folder/apple/00/p01/s0"]
    assert all("apple/00.jpg" in row["error"] and row["image"] is None for row in skipped)
    assert set(RunStore(run_dir).finished("ip_adapter_1.0")) == {"folder/kiwi/00/p00/s0", "folder/kiwi/00/p01/s0"}

    again = generate_stage(cfg, run_dir)  # checks the image again, writes nothing new
    assert (again.skipped, again.generated, again.unusable) == (2, 0, 2)
    assert manifest_line_count(run_dir) == 4

    noise(64, 64, seed=3).save(data / "apple" / "00.jpg", format="JPEG")  # the user fixes the file
    fixed = generate_stage(cfg, run_dir)
    assert (fixed.generated, fixed.unusable) == (2, 0)
    assert set(statuses(run_dir).values()) == {"ok"}
    assert manifest_line_count(run_dir) == 6  # the skip rows stay in the history


def test_default_policy_stops_naming_the_file_and_nothing_usable_is_an_error(make_config, tmp_path):
    data = tmp_path / "data"
    subjects(data, {"kiwi": lambda path: path.write_bytes(b""), "apple": truncated_jpeg})
    with pytest.raises(BadImageError, match=r"apple/00\.jpg.*on_bad_image=skip"):
        generate_stage(make_config(*PLAN, f"dataset.root={data}"), tmp_path / "stop")

    run_dir = tmp_path / "skip"
    cfg = make_config(*PLAN, f"dataset.root={data}", "dataset.on_bad_image=skip")
    with pytest.raises(DataError, match="no usable subject image"):
        generate_stage(cfg, run_dir)
    assert set(statuses(run_dir).values()) == {"skipped"} and manifest_line_count(run_dir) == 4
    assert "empty" in next(row["error"] for row in RunStore(run_dir).rows() if "kiwi" in row["item_id"])
