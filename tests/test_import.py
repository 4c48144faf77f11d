"""`monkey-import`: images made elsewhere become manifest rows like native ones; every mismatch is
reported, none is guessed."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import QUICK
from PIL import Image

from monkey.images import load_rgb
from monkey.import_cli import main
from monkey.imports import AS_MADE
from monkey.runner import generate_stage, plan_from_config
from monkey.store import RunStore

PLAN = ("plan.limit.subjects=2", "plan.limit.prompts=2")  # 4 items: backpack, backpack_dog x jungle, snow


def picture(seed: int, size: int = 48) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.fixture
def plan(make_config):
    return plan_from_config(make_config(*PLAN))


@pytest.fixture
def external(tmp_path, plan):
    """A folder of images named the external tool's way, and a CSV naming each one's work item in the
    different ways a mapping may: item_id; subject + location + seed_index; subject + plan prompt + seed."""
    folder = tmp_path / "external"
    folder.mkdir()
    for index in range(3):
        picture(index).save(folder / f"out_{index}.png")
    picture(3).convert("RGB").save(folder / "out_3.jpg", quality=95)
    rows = [
        {"file": "out_0.png", "item_id": plan[0].item_id, "prompt": "in the jungle"},
        {"file": "out_1.png", "subject": "backpack", "location": "in the snow", "seed_index": "0", "note": "x"},
        {"file": "out_2.png", "subject": "backpack_dog", "prompt": "backpack dog in the jungle", "seed": plan[2].seed},
    ]
    return folder, rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    columns = sorted({key for row in rows for key in row})
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def import_args(name: str, folder: Path, mapping: Path, run_dir: Path, *extra: str) -> list[str]:
    """`monkey-import images` arguments for a folder + mapping, with the test plan's overrides."""
    return [
        "images",
        "--name",
        name,
        "--images",
        str(folder),
        "--mapping",
        str(mapping),
        "--run-dir",
        str(run_dir),
        *extra,
        *PLAN,
    ]


def test_folder_with_mapping_becomes_manifest_rows(tmp_path, plan, external, capsys):
    folder, rows = external
    mapping = write_csv(tmp_path / "map.csv", rows)
    run_dir = tmp_path / "run"
    code = main(import_args("freegraftor", folder, mapping, run_dir))
    assert code == 0
    report = capsys.readouterr().out
    assert re.search(r"written\s+3\n", report) and re.search(r"plan items with no image\s+1 of 4", report)
    assert plan[3].item_id in report  # the missing item is named
    imported = RunStore(run_dir).finished("freegraftor")
    assert sorted(imported) == sorted(item.item_id for item in plan[:3])
    by_id = {item.item_id: item for item in plan}
    expected_prompts = {
        plan[0].item_id: "in the jungle",
        plan[1].item_id: plan[1].prompt,
        plan[2].item_id: plan[2].prompt,
    }
    for item_id, row in imported.items():
        item = by_id[item_id]
        assert row["prompt"] == expected_prompts[item_id]  # the exact text, from the mapping or the plan
        assert (row["source_path"], row["seed"], row["plan_prompt"]) == (
            str(item.source.image_path),
            item.seed,
            item.prompt,
        )
        assert (row["origin"], row["writer"], row["method"], row["status"]) == (
            "imported",
            "import-freegraftor",
            "freegraftor",
            "ok",
        )
        original = load_rgb(row["info"]["imported_from"], AS_MADE)
        assert np.array_equal(np.asarray(load_rgb(run_dir / row["image"], AS_MADE)), np.asarray(original))
    assert imported[plan[1].item_id]["info"]["prompt_source"].startswith("plan")
    assert imported[plan[1].item_id]["info"]["columns"] == {"note": "x"}
    summary = json.loads((run_dir / "import-freegraftor.json").read_text())
    assert summary["written"] == 3 and summary["missing_items"] == [plan[3].item_id]


def test_mismatches_are_listed_and_nothing_is_written(tmp_path, plan, external, capsys):
    folder, rows = external
    bad = [
        *rows,
        {"file": "out_3.jpg", "subject": "teapot", "location": "in the snow"},  # no such subject in the plan
        {"file": "out_3.jpg", "subject": "backpack_dog"},  # two plan items fit
        {"file": "out_3.jpg", "item_id": plan[0].item_id},  # the item is already given
        {"file": "nowhere.png", "item_id": plan[3].item_id},  # missing file
        {"file": "out_3.jpg", "subject": "backpack", "location": "in the jungle", "seed": "12"},  # not the plan seed
        {"file": "out_3.jpg", "subject": "backpack", "location": "in the jungle", "seed_index": "one"},
    ]
    mapping = write_csv(tmp_path / "map.csv", bad)
    run_dir = tmp_path / "run"
    args = import_args("x", folder, mapping, run_dir)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "map.csv:5: no plan item has subject='teapot' location='in the snow'" in err
    assert "map.csv:6: subject='backpack_dog' fits 2 plan items" in err
    assert f"map.csv:7: {plan[0].item_id} already given by map.csv:2" in err
    assert "map.csv:8: image file not found" in err
    assert "map.csv:9: no plan item has subject='backpack' location='in the jungle' seed=12" in err
    assert "map.csv:10: seed_index='one' is not an integer" in err
    assert not run_dir.exists()
    assert main([*args, "--skip-problems"]) == 0
    assert len(RunStore(run_dir).finished("x")) == 3


def test_reimport_skips_the_same_images_and_refuses_other_ones(tmp_path, external):
    folder, rows = external
    mapping = write_csv(tmp_path / "map.csv", rows)
    args = import_args("x", folder, mapping, tmp_path / "run")
    assert main(args) == 0 and main(args) == 0
    assert sum(len(p.read_text().splitlines()) for p in (tmp_path / "run" / "manifest").glob("*.jsonl")) == 3
    picture(99).save(folder / "out_0.png")
    assert main(args) == 2


def test_require_all_fails_when_items_are_missing(tmp_path, external):
    folder, rows = external
    mapping = write_csv(tmp_path / "map.csv", rows)
    args = import_args("x", folder, mapping, tmp_path / "r")
    assert main([*args, "--require-all"]) == 2
    assert not (tmp_path / "r").exists()


def test_jobs_template_round_trips(tmp_path, plan):
    jobs = tmp_path / "jobs.jsonl"
    assert main(["jobs", "--out", str(jobs), *PLAN]) == 0
    rows = [json.loads(line) for line in jobs.read_text().splitlines()]
    assert [row["item_id"] for row in rows] == [item.item_id for item in plan]
    folder = tmp_path / "made"
    for index, row in enumerate(rows):
        (folder / row["file"]).parent.mkdir(parents=True, exist_ok=True)
        picture(index).save(folder / row["file"])
    run_dir = tmp_path / "run"
    assert main(import_args("ext", folder, jobs, run_dir)) == 0
    assert len(RunStore(run_dir).finished("ext")) == 4


def test_a_saved_dataset_with_its_columns_as_the_mapping(tmp_path, plan):
    import datasets

    data = datasets.Dataset.from_dict(
        {
            "image": [picture(index) for index in range(2)],
            "subject": ["backpack", "backpack"],
            "location": ["in the jungle", "in the snow"],
            "prompt": ["a backpack in the jungle", "a backpack in the snow"],
        }
    )
    data.save_to_disk(str(tmp_path / "released"))
    run_dir = tmp_path / "run"
    assert (
        main(
            ["images", "--name", "released", "--dataset", str(tmp_path / "released"), "--run-dir", str(run_dir), *PLAN]
        )
        == 0
    )
    rows = RunStore(run_dir).finished("released")
    assert sorted(row["prompt"] for row in rows.values()) == ["a backpack in the jungle", "a backpack in the snow"]
    stored = load_rgb(run_dir / rows[plan[0].item_id]["image"], AS_MADE)
    assert np.array_equal(np.asarray(stored), np.asarray(picture(0)))


def test_imported_rows_carry_every_field_of_a_native_row(make_config, tmp_path, external):
    """The evaluator reads rows; an imported row must have what a generated row has."""
    native_dir = tmp_path / "native"
    generate_stage(make_config(*PLAN, *QUICK, "plan.limit.subjects=1", "plan.limit.prompts=1"), native_dir)
    native = RunStore(native_dir).rows()[0]
    folder, rows = external
    mapping = write_csv(tmp_path / "map.csv", rows)
    run_dir = tmp_path / "run"
    assert main(import_args("x", folder, mapping, run_dir)) == 0
    imported = RunStore(run_dir).rows()[0]
    assert set(native) <= set(imported), set(native) - set(imported)
    for key in ("item_id", "source_path", "image", "prompt", "height", "width", "status"):
        assert type(imported[key]) is type(native[key]), key


def test_console_script_reports_bad_input_in_one_line(tmp_path):
    script = Path(sys.executable).parent / "monkey-import"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "monkey.import_cli"]
    result = subprocess.run(
        [*command, "images", "--name", "x", "--images", str(tmp_path), "--mapping", str(tmp_path / "none.csv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"monkey-import: mapping file not found: {tmp_path / 'none.csv'}"]
