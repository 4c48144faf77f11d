"""Full DreamBooth with its checksums and download, Magic in the hub schema, and any folder of subjects."""

import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import QUICK, stable_rows
from standins import MAGIC_ROWS, magic_standin, noise

from monkey.datasets import download
from monkey.datasets.base import load_sources
from monkey.datasets.checksums import read_checksums, verify_checksums
from monkey.datasets.cli import main as monkey_data
from monkey.datasets.dreambooth import load_dreambooth
from monkey.datasets.folder import load_folder
from monkey.datasets.magic import load_magic
from monkey.errors import DataError
from monkey.runner import plan_from_config

RESIZED = Path("/work/shared/dreambooth")


def classes_from_table(root: Path) -> dict[str, str]:
    text = (root / "dataset" / "prompts_and_classes.txt").read_text()
    block = text.split("Classes", 1)[1].split("Prompts", 1)[0]
    return {row["subject_name"]: row["class"] for row in csv.DictReader(io.StringIO(block.strip()))}


# ---- DreamBooth ---------------------------------------------------------------------------------


def test_full_dreambooth_has_158_images_of_30_subjects():
    sources = load_dreambooth(str(RESIZED), images="all")
    files = sorted(RESIZED.glob("dataset/*/*.jpg"))
    assert [s.image_path for s in sources] == files and len(files) == 158
    table = classes_from_table(RESIZED)
    assert all(s.class_name == table[s.subject] for s in sources)
    assert len({s.subject for s in sources}) == 30
    assert len({s.source_id for s in sources}) == 158
    assert len(load_dreambooth(str(RESIZED), images="first")) == 30


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tiny_dreambooth(root: Path) -> dict[str, bytes]:
    """A two-image copy in the google/dreambooth layout: relative path -> bytes."""
    files = {
        "LICENSE.md": b"Attribution 4.0 International\n",
        "dataset/prompts_and_classes.txt": (RESIZED / "dataset" / "prompts_and_classes.txt").read_bytes(),
        "dataset/can/00.jpg": (RESIZED / "dataset" / "can" / "00.jpg").read_bytes(),
        "dataset/cat/00.jpg": (RESIZED / "dataset" / "cat" / "00.jpg").read_bytes(),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_checksums_catch_a_modified_file(tmp_path):
    files = tiny_dreambooth(tmp_path)
    listing = tmp_path / "tiny.sha256"
    listing.write_text("# a comment line\n" + "".join(f"{sha256(data)}  {name}\n" for name, data in files.items()))
    expected = read_checksums(listing)
    assert verify_checksums(tmp_path, expected).ok
    image = tmp_path / "dataset" / "cat" / "00.jpg"
    image.write_bytes(image.read_bytes()[:-1] + b"\x00")  # one byte changed
    (tmp_path / "LICENSE.md").unlink()
    report = verify_checksums(tmp_path, expected)
    assert not report.ok
    assert report.mismatched == ["dataset/cat/00.jpg"] and report.missing == ["LICENSE.md"]


def test_shipped_checksums_identify_the_resized_copy_and_the_bundled_subset(tmp_path, capsys):
    assert monkey_data(["verify", "dreambooth", str(RESIZED)]) == 0
    assert "resized-512" in capsys.readouterr().out
    resized = read_checksums(download.checksum_file("resized-512"))
    original = read_checksums(download.checksum_file("original"))
    assert set(resized) == set(original) and len(original) == 161  # LICENSE.md, 158 images, 2 text files
    candle = Path("/work/shared/dreambooth/quirks/candle_01_original_mpo.jpg").read_bytes()
    assert original["dataset/candle/01.jpg"] == sha256(candle)  # the one original file we can see
    bundled = Path(download.data_dir()) / "dreambooth"
    assert all(
        resized[f"dataset/{p.parent.name}/00.jpg"] == sha256(p.read_bytes()) for p in bundled.glob("dataset/*/00.jpg")
    )

    copy = tmp_path / "copy"
    tiny_dreambooth(copy)
    assert monkey_data(["verify", "dreambooth", str(copy)]) == 1  # 2 of 158 images: matches no copy
    assert "matches no known DreamBooth copy" in capsys.readouterr().out


def archive_of(files: dict[str, bytes], path: Path) -> str:
    """A zip laid out like GitHub's: one top folder, plus a file the download must leave out."""
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in {**files, "docs/teaser.jpg": b"x"}.items():
            bundle.writestr(f"dreambooth-4f887af/{name}", data)
    return path.as_uri()


def test_download_extracts_verifies_and_refuses_a_mismatch(tmp_path):
    files = tiny_dreambooth(tmp_path / "source")
    url = archive_of(files, tmp_path / "archive.zip")
    listing = tmp_path / "tiny.sha256"
    listing.write_text("".join(f"{sha256(data)}  {name}\n" for name, data in files.items()))
    dest = tmp_path / "dest"
    assert download.download_dreambooth(dest, url=url, checksums=listing).ok
    assert {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()} == set(files)
    assert [s.subject for s in load_dreambooth(str(dest), images="all")] == ["can", "cat"]

    listing.write_text(listing.read_text().replace(sha256(files["dataset/cat/00.jpg"]), "0" * 64))
    with pytest.raises(DataError, match=r"does not match.*dataset/cat/00\.jpg"):
        download.download_dreambooth(tmp_path / "dest2", url=url, checksums=listing)


def test_download_without_network_says_how_to_use_a_local_copy(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(download.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as caught:
        download.download_dreambooth(tmp_path / "dest")
    message = str(caught.value)
    assert "name resolution" in message and "git clone https://github.com/google/dreambooth" in message
    assert "dataset.root=DIR" in message and "monkey-data verify dreambooth" in message


# ---- any folder of subjects ---------------------------------------------------------------------


def test_folder_with_subjects_csv_loads_the_right_classes(tmp_path):
    for subject, count in (("rex", 2), ("my_mug", 1)):
        (tmp_path / subject).mkdir()
        for index in range(count):
            noise(64, 64, seed=index).save(tmp_path / subject / f"{index:02d}.png")
    noise(64, 64).save(tmp_path / "lamp3.jpg")  # a loose image is a subject of its own
    (tmp_path / "rex" / "._00.png").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork: not an image
    (tmp_path / "subjects.csv").write_text(
        "\ufeffname,class,subject_word,live\nrex,dog,rex the corgi,live\nmy_mug,mug,,object\nlamp3,,,\n"
    )
    sources = load_folder(str(tmp_path))
    assert [(s.subject, s.image_id, s.class_name, s.subject_word, s.live) for s in sources] == [
        ("lamp3", "lamp3", "lamp", "lamp", False),
        ("my_mug", "00", "mug", "my mug", False),
        ("rex", "00", "dog", "rex the corgi", True),
        ("rex", "01", "dog", "rex the corgi", True),
    ]
    assert [s.subject for s in load_folder(str(tmp_path), images="first")] == ["lamp3", "my_mug", "rex"]

    (tmp_path / "subjects.csv").write_text("name,class\nrex,dog\nmug,mug\n")
    with pytest.raises(DataError, match=r"without a row \['lamp3', 'my_mug'\].*without images \['mug'\]"):
        load_folder(str(tmp_path))


def test_folder_without_csv_and_empty_folders(tmp_path, make_config):
    (tmp_path / "teddy_bear2").mkdir()
    noise(64, 64).save(tmp_path / "teddy_bear2" / "a.webp")
    (source,) = load_folder(str(tmp_path))
    assert (source.subject_word, source.class_name, source.live) == ("teddy bear", "teddy bear", False)
    plan = plan_from_config(make_config("dataset=folder", f"dataset.root={tmp_path}", "prompts.template=class"))
    assert plan[0].prompt == "a teddy bear in the jungle" and plan[0].item_id == "folder/teddy_bear2/a/p00/s0"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no image files"):
        load_folder(str(empty))


# ---- Magic --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def magic_exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("magic")
    dataset = magic_standin()
    dataset.save_to_disk(str(root / "saved"))
    dataset.to_parquet(str(root / "mtg.parquet"))
    originals = [np.asarray(image.convert("RGB")) for image in dataset["image"]]
    return root, originals


@pytest.mark.parametrize("export", ["saved", "mtg.parquet"])
def test_magic_standin_in_the_hub_schema_loads_with_the_papers_subject_word(magic_exports, export):
    root, originals = magic_exports
    sources = load_magic(str(root / export))
    assert [(s.subject, s.image_id) for s in sources] == [
        ("llanowar_elves", "00000"),
        ("serra_angel", "00001"),
        ("llanowar_elves", "00002"),
    ]
    assert {s.subject_word for s in sources} == {"character"} and not any(s.live for s in sources)
    assert [dict(s.meta)["artist"] for s in sources] == [artist for _, artist, _ in MAGIC_ROWS]
    for source, original in zip(sources, originals, strict=True):
        assert source.image_path.is_file() and source.sha256() in source.image_path.name
        loaded = np.asarray(source.load_image())  # portrait 80x96 art, centre-cropped to 80x80
        assert np.array_equal(loaded, original[8:88])
    named = load_magic(str(root / export), subject_word_column="name", limit=2)
    assert [s.subject_word for s in named] == ["Llanowar Elves", "Serra Angel"]


def test_magic_from_a_csv_of_image_paths_and_from_the_config(tmp_path, magic_exports, make_config):
    root, _ = magic_exports
    (tmp_path / "art").mkdir()
    noise(64, 64).save(tmp_path / "art" / "a.png")
    (tmp_path / "cards.csv").write_text("image,name,artist\nart/a.png,Serra Angel,Douglas Shuler\n")
    (source,) = load_magic(str(tmp_path / "cards.csv"))
    assert source.image_path == tmp_path / "art" / "a.png" and source.subject == "serra_angel"
    cfg = make_config("dataset=magic", f"dataset.path={root / 'mtg.parquet'}", "dataset.subject_word=illustration")
    plan = plan_from_config(cfg)
    assert plan[0].prompt == "illustration in the jungle" and plan[0].item_id == "magic/llanowar_elves/00000/p00/s0"


def test_magic_runs_from_the_command_line_into_a_flat_run_folder(tmp_path, magic_exports):
    root, _ = magic_exports
    overrides = ["hydra.mode=RUN", "run.stages=[generate]", "dataset=magic", f"dataset.path={root / 'mtg.parquet'}"]
    overrides.append("plan.limit.subjects=1")
    command = [str(Path(sys.executable).parent / "monkey-bench"), *overrides, "plan.limit.prompts=1", *QUICK]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs" / "demo").iterdir()  # the parquet path does not nest folders
    assert "dataset.path=mtg.parquet-" in run_dir.name
    rows = stable_rows(run_dir)
    assert [(row["source_id"], row["prompt"], row["status"]) for row in rows] == [
        ("magic/llanowar_elves/00000", "character in the jungle", "ok"),
        ("magic/llanowar_elves/00002", "character in the jungle", "ok"),
    ]
    assert rows[0]["source_meta"]["artist"] == "Anson Maddocks"


def test_magic_offline_without_a_local_copy_says_what_to_do(make_config):
    with pytest.raises(DataError) as caught:
        load_sources(make_config("dataset=magic").dataset)  # conftest: HF_HUB_OFFLINE=1
    message = str(caught.value)
    assert "jlbaker361/mtg" in message and "dataset.path=DIR" in message
    assert "monkey-data download magic --dest DIR" in message


def test_a_dataset_with_no_usable_image_is_an_error(tmp_path):
    shutil.copy(RESIZED / "dataset" / "prompts_and_classes.txt", tmp_path / "prompts_and_classes.txt")
    with pytest.raises(DataError, match="no subject images"):
        load_dreambooth(str(tmp_path))
    with pytest.raises(DataError, match="holds no saved dataset, parquet file or image"):
        load_magic(str(tmp_path))
