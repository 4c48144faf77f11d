"""Prompt sets and templates give DreamBooth's own prompts, checked against a separate parse of its file."""

import re

import pytest

from monkey.datasets.dreambooth import load_dreambooth
from monkey.errors import ConfigError, DataError
from monkey.paths import bundled_dreambooth_root
from monkey.plan import build_plan
from monkey.prompts import load_prompt_set
from monkey.runner import plan_from_config


def dreambooth_prompt_lines(kind: str) -> list[str]:
    """The 25 raw `'a ... {0} {1} ...'` strings of one block of prompts_and_classes.txt."""
    text = (bundled_dreambooth_root() / "dataset" / "prompts_and_classes.txt").read_text()
    block = text.split("Object Prompts")[1].split("Live Subject Prompts")
    lines = re.findall(r"'(a .*?)'\.format\(unique_token, class_token\)", block[0 if kind == "object" else 1])
    assert len(lines) == 25
    return lines


def paper_style(line: str, word: str) -> str:
    """'a {0} {1} in the jungle' -> 'bear plushie in the jungle' (no article, as the paper's prompts)."""
    return line.removeprefix("a ").replace("{0} {1}", word)


def class_style(line: str, class_name: str) -> str:
    """'a red {0} {1}' -> 'a red stuffed animal': DreamBooth's prompt with the class as the subject."""
    return line.replace("{0} {1}", class_name)


@pytest.fixture(scope="module")
def subjects():
    by_name = {source.subject: source for source in load_dreambooth()}
    return by_name["bear_plushie"], by_name["dog6"]


@pytest.mark.parametrize("kind", ["object", "live"])
@pytest.mark.parametrize(
    ("template", "style"), [("paper", "word"), ("{subject_word} {location}", "word"), ("class", "class")]
)
def test_each_dreambooth_list_and_template_gives_dreambooths_prompts(subjects, kind, template, style):
    prompts = load_prompt_set(f"dreambooth_{kind}", template)
    for source in subjects:
        made = [prompts.format(source, entry) for entry in prompts.locations_for(source)]
        if style == "word":
            expected = [paper_style(line, source.subject_word) for line in dreambooth_prompt_lines(kind)]
        else:
            expected = [class_style(line, source.class_name) for line in dreambooth_prompt_lines(kind)]
        assert made == expected


def test_dreambooth_set_gives_live_subjects_the_live_list(subjects):
    bear, dog = subjects
    prompts = load_prompt_set("dreambooth", "class", file="dreambooth_object", live_file="dreambooth_live")
    plan = build_plan([bear, dog], prompts)
    by_subject = {s.subject: [i.prompt for i in plan if i.source.subject == s.subject] for s in (bear, dog)}
    assert by_subject["bear_plushie"] == [
        class_style(line, "stuffed animal") for line in dreambooth_prompt_lines("object")
    ]
    assert by_subject["dog6"] == [class_style(line, "dog") for line in dreambooth_prompt_lines("live")]
    assert "a dog wearing a santa hat" in by_subject["dog6"]


def test_the_20_locations_are_the_first_20_object_prompts(subjects):
    locations = load_prompt_set("locations", "paper")
    expected = [paper_style(line, "bear plushie") for line in dreambooth_prompt_lines("object")[:20]]
    assert [locations.format(subjects[0], entry) for entry in locations.locations] == expected


def test_a_users_file_with_a_live_list_and_a_custom_template(tmp_path, subjects):
    bear, dog = subjects
    (tmp_path / "mine.txt").write_text("# my prompts\n\non the moon\nvintage photo of {subject}\n")
    (tmp_path / "live.txt").write_text("running on the moon\n")
    prompts = load_prompt_set(
        "file", "a {subject_word} {class_name} {location}", str(tmp_path / "mine.txt"), str(tmp_path / "live.txt")
    )
    assert [prompts.format(bear, e) for e in prompts.locations_for(bear)] == [
        "a bear plushie stuffed animal on the moon",
        "a vintage photo of bear plushie stuffed animal",
    ]
    assert [prompts.format(dog, e) for e in prompts.locations_for(dog)] == ["a dog dog running on the moon"]


def test_prompt_configs_compose_into_plans(make_config):
    plan = plan_from_config(
        make_config(
            "prompts=dreambooth",
            "plan.limit.subjects=[backpack,cat]",
            "plan.limit.prompts=null",
            "prompts.template=class",
        )
    )
    assert [item.prompt for item in plan if item.source.subject == "cat"][10] == "a cat wearing a red hat"
    assert [item.prompt for item in plan if item.source.subject == "backpack"][20] == "a red backpack"
    assert len(plan) == 50


def test_bad_prompt_files_and_templates_are_named(tmp_path):
    (tmp_path / "bad.txt").write_text("in the {place}\n")
    with pytest.raises(DataError, match=r"bad\.txt.*\{place\}"):
        load_prompt_set("file", "paper", str(tmp_path / "bad.txt"))
    with pytest.raises(DataError, match="bundled lists"):
        load_prompt_set("file", "paper", str(tmp_path / "missing.txt"))
    with pytest.raises(ConfigError, match="Named templates"):
        load_prompt_set("locations", "{subject} {location}")
