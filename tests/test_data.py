"""The bundled data: 30 subjects with DreamBooth's classes, the paper's 20 locations, the licence."""

import csv
import io
import re

from monkey.datasets.dreambooth import load_dreambooth
from monkey.paths import bundled_dreambooth_root, data_dir
from monkey.prompts import load_prompt_set


def classes_from_table() -> dict[str, str]:
    """Independent parse of prompts_and_classes.txt: the CSV block between 'Classes' and 'Prompts'."""
    text = (bundled_dreambooth_root() / "dataset" / "prompts_and_classes.txt").read_text()
    block = text.split("Classes", 1)[1].split("Prompts", 1)[0]
    return {row["subject_name"]: row["class"] for row in csv.DictReader(io.StringIO(block.strip()))}


def test_bundled_subset_has_every_subject_with_its_class():
    sources = load_dreambooth()
    table = classes_from_table()
    assert len(sources) == 30 == len(table)
    assert {s.subject: s.class_name for s in sources} == table
    assert all(s.image_path.name == "00.jpg" and s.image_path.is_file() for s in sources)


def test_subject_words_and_live_subjects():
    by_subject = {s.subject: s for s in load_dreambooth()}
    assert by_subject["bear_plushie"].subject_word == "bear plushie"
    assert by_subject["dog6"].subject_word == "dog"
    assert by_subject["cat2"].subject_word == "cat"
    assert by_subject["grey_sloth_plushie"].subject_word == "grey sloth plushie"
    live = sorted(s for s, src in by_subject.items() if src.live)
    assert live == ["cat", "cat2", "dog", "dog2", "dog3", "dog5", "dog6", "dog7", "dog8"]


def test_images_are_512_rgb():
    for source in load_dreambooth()[:5]:
        image = source.load_image()
        assert image.mode == "RGB" and image.size == (512, 512)


def test_locations_are_dreambooths_first_20_object_prompts():
    text = (bundled_dreambooth_root() / "dataset" / "prompts_and_classes.txt").read_text()
    object_block = text.split("Object Prompts", 1)[1].split("Live Subject Prompts", 1)[0]
    expected = re.findall(r"'a \{0\} \{1\} (.+?)'\.format", object_block)[:20]
    locations = load_prompt_set("locations", "{subject_word} {location}").locations
    assert list(locations) == expected
    assert locations[0] == "in the jungle" and locations[-1] == "on top of a white rug"


def test_licence_references_and_resize_note_ship_with_the_images():
    root = bundled_dreambooth_root()
    assert "Attribution 4.0" in (root / "LICENSE.md").read_text()
    assert "backpack" in (root / "dataset" / "references_and_licenses.txt").read_text()
    assert "resized" in (root / "README.md").read_text().lower()
    assert (data_dir() / "prompts" / "locations.txt").is_file()
