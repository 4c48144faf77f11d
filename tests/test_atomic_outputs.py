"""Every file the harness writes: readable by colleagues (the umask decides, as for open()), put in
place by rename (a kill leaves the old file or the new one, never half of one), and a refusing file
system gives one error naming the folder."""

import errno
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pytest
from eval_helpers import fake_generate, make_dataset, plan_items
from PIL import Image

from monkey.atomic import atomic_savefig, atomic_to_parquet, atomic_write, atomic_write_bytes
from monkey.errors import OutputError
from monkey.store import RunStore


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test and put the old one back."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_written_files_get_the_mode_open_would_give(tmp_path, umask, mask):
    umask(mask)
    expected = 0o666 & ~mask  # what open(path, "w") gives a new file
    with open(tmp_path / "by_open.txt", "w") as handle:
        handle.write("x")
    assert mode(tmp_path / "by_open.txt") == expected  # the reference: the OS's own rule
    atomic_write_bytes(tmp_path / "a.bin", b"data")
    store = RunStore(tmp_path / "run")
    store.write_image("images/m/x.png", Image.new("RGB", (4, 4)))
    with store.writer("m", "shard-0") as writer:
        writer.append({"method": "m", "item_id": "x", "status": "ok", "image": "images/m/x.png"})
    fig = plt.figure(figsize=(1, 1))
    atomic_savefig(fig, tmp_path / "plot.pdf")
    plt.close(fig)
    atomic_to_parquet(pd.DataFrame({"a": [1, 2]}), tmp_path / "table.parquet")
    written = [
        tmp_path / "a.bin",
        tmp_path / "run" / "images" / "m" / "x.png",
        *store.manifest_files(),
        tmp_path / "plot.pdf",
        tmp_path / "table.parquet",
    ]
    assert {str(p.relative_to(tmp_path)): oct(mode(p)) for p in written} == {
        str(p.relative_to(tmp_path)): oct(expected) for p in written
    }
    assert (tmp_path / "plot.pdf").read_bytes().rstrip().endswith(b"%%EOF")
    assert pd.read_parquet(tmp_path / "table.parquet")["a"].tolist() == [1, 2]


@pytest.mark.parametrize(
    ("code", "words"), [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"), (errno.EACCES, "permission")]
)
def test_a_refused_write_names_the_folder_and_keeps_the_old_file(tmp_path, code, words):
    target = tmp_path / "out" / "table.csv"
    atomic_write_bytes(target, b"old, complete\n")

    def half_then_fail(handle):
        handle.write(b"new, half")
        raise OSError(code, os.strerror(code))

    with pytest.raises(OutputError) as caught:
        atomic_write(target, half_then_fail)
    message = str(caught.value)
    assert words in message and str(target.parent) in message and "table.csv" in message
    assert "\n" not in message
    assert target.read_bytes() == b"old, complete\n"  # nothing half-written in its place
    assert [p.name for p in target.parent.iterdir()] == ["table.csv"]  # no temp file left behind


@pytest.fixture(scope="module")
def scored_experiment(tmp_path_factory):
    """Two fake run folders, scored with the tiny backbones, ready for a report."""
    from conftest import compose_config
    from monkey.eval.scoring import evaluate_run

    root = tmp_path_factory.mktemp("atomic_report")
    dataset = make_dataset(root / "data")
    items = plan_items(dataset, prompts=2)
    experiment = root / "runs" / "exp"
    cfg = compose_config("eval=tiny")
    for method in ("ip_adapter_1.0", "text_only"):
        fake_generate(experiment / method, items, method)
        evaluate_run(experiment / method, cfg.eval, dataset_cfg=dataset)
    return experiment, cfg, dataset


RENAMED: list[str] | None = None


def record_renames(event: str, args: tuple) -> None:
    if RENAMED is not None and event == "os.rename":  # os.replace raises the os.rename audit event
        RENAMED.append(os.fspath(args[1]))


sys.addaudithook(record_renames)


def test_every_report_file_is_renamed_into_place(scored_experiment, tmp_path):
    """A kill can only leave a broken file where a file is written in place: so every file of the
    report must arrive by rename (matplotlib, pandas and pyarrow outputs included)."""
    global RENAMED
    from monkey.eval.report import build_report

    experiment, cfg, dataset = scored_experiment
    out = tmp_path / "report"
    RENAMED = []
    try:
        build_report([experiment], out, cfg.eval, dataset_cfg=dataset)
    finally:
        renamed, RENAMED = set(RENAMED), None
    files = sorted(str(p) for p in out.rglob("*") if p.is_file())
    assert any(f.endswith(".parquet") for f in files) and any(f.endswith(".pdf") for f in files)
    assert [f for f in files if f not in renamed] == []


def unreadable_files(folder: Path) -> list[str]:
    """Files that a reader cannot open whole: truncated images, PDFs without %%EOF, bad tables."""
    bad = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            if path.suffix in (".png", ".jpg", ".jpeg"):  # plots, grids, the gallery's thumbnails
                with Image.open(path) as image:
                    image.load()
            elif path.suffix == ".pdf":
                assert path.read_bytes().rstrip().endswith(b"%%EOF")
            elif path.suffix == ".parquet":
                pd.read_parquet(path)
            elif path.suffix == ".csv":
                pd.read_csv(path)
            elif path.name.startswith(".") and path.name.endswith(".tmp"):
                continue  # a killed writer's temp file: never read, replaced by the next rename
            else:
                path.read_text(encoding="utf-8")
        except Exception as err:
            bad.append(f"{path.name}: {type(err).__name__}")
    return bad


def test_report_killed_at_random_points_leaves_only_readable_files(scored_experiment):
    """Kills aimed at the report's write phase (the window in which an uninterrupted run wrote its
    files, most of it spent drawing plots), while the previous report's files are in place."""
    experiment, _, _ = scored_experiment
    script = Path(sys.executable).parent / "monkey-report"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "monkey.eval.cli"]
    command += [str(experiment), "--no-evaluate"]
    start = time.time()
    assert subprocess.run(command, capture_output=True, timeout=300).returncode == 0
    out = experiment / "report"
    written = [p.stat().st_mtime - start for p in out.rglob("*") if p.is_file()]
    first, last = min(written), max(written)
    rng = random.Random(18)
    for _ in range(3):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(max(0.0, first - 0.3), last))
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert unreadable_files(out) == []
