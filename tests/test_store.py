"""The store: atomic files, one manifest file per writer, union reads, tolerance of killed writers."""

import json
import multiprocessing as mp

import pytest
from PIL import Image

from monkey.errors import RunFolderError
from monkey.store import RunStore, read_manifest_file


def row(item: str, method: str = "m", **extra) -> dict:
    """A row with every field the reader checks (monkey.manifest_rows), `extra` replacing any."""
    return {
        "method": method,
        "item_id": item,
        "status": "ok",
        "image": f"images/{item}.png",
        "created": 1.0,
        "config_hash": "c0ffee",
        "plan_index": 0,
        "dataset": "d",
        "subject": "s",
        "source_path": "/data/s/00.jpg",
        "plan_prompt": "a photo",
        "prompt": "a photo",
        "seed": 1,
        **extra,
    }


def test_image_write_is_atomic_and_carries_its_prompt(run_dir):
    store = RunStore(run_dir)
    store.write_image("images/a.png", Image.new("RGB", (8, 8)), text={"prompt": "dog in the snow", "seed": "7"})
    assert [p.name for p in (run_dir / "images").iterdir()] == ["a.png"]  # no temp file left
    with Image.open(run_dir / "images" / "a.png") as image:
        assert image.text["prompt"] == "dog in the snow" and image.text["seed"] == "7"


def test_union_of_writers_latest_row_wins(run_dir):
    store = RunStore(run_dir)
    with store.writer("m", "shard-0") as w0, store.writer("m", "shard-1") as w1:
        w0.append(row("a", status="failed", created=1.0))
        w1.append(row("b"))
        w1.append(row("a", created=2.0))
    rows = store.rows("m")
    assert [(r["item_id"], r["status"]) for r in rows] == [("a", "ok"), ("b", "ok")]


def test_finished_requires_the_image(run_dir):
    store = RunStore(run_dir)
    store.write_image("images/a.png", Image.new("RGB", (4, 4)))
    with store.writer("m", "w") as writer:
        writer.append(row("a"))
        writer.append(row("b"))  # its image was never written
    assert set(store.finished("m")) == {"a"}


def test_second_writer_of_one_file_is_refused(run_dir):
    store = RunStore(run_dir)
    with store.writer("m", "shard-0"), pytest.raises(RunFolderError, match="same shard"):
        store.writer("m", "shard-0")


def test_partial_last_line_is_ignored_then_repaired(run_dir):
    store = RunStore(run_dir)
    with store.writer("m", "w") as writer:
        writer.append(row("a"))
    path = next((run_dir / "manifest").iterdir())
    with open(path, "ab") as handle:
        handle.write(b'{"method": "m", "item_id": "b", "sta')  # killed mid-write
    assert [r["item_id"] for r in read_manifest_file(path)] == ["a"]
    with store.writer("m", "w") as writer:  # the next writer cuts the fragment before appending
        writer.append(row("c"))
    lines = path.read_text().splitlines()
    assert [json.loads(line)["item_id"] for line in lines] == ["a", "c"]


def _write_rows(args: tuple[str, str, int]) -> None:
    root, writer_id, count = args
    store = RunStore(root)
    with store.writer("m", writer_id) as writer:
        for k in range(count):
            writer.append(row(f"{writer_id}-{k}", payload="x" * 5000))


def test_concurrent_writers_never_corrupt(run_dir):
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_write_rows, [(str(run_dir), f"shard-{k}", 200) for k in range(4)])
    rows = RunStore(run_dir).rows("m")
    assert len(rows) == 800
