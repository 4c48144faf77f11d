"""Prompt sets (lists of prompt entries) and the template that puts a subject into a prompt.

An entry is usually a location suffix ("in the jungle"); the template decides how the subject comes
before it: "{subject_word} {location}" (the paper: "bear plushie in the jungle") or
"a {class_name} {location}" ("a stuffed animal in the jungle"). DreamBooth also has prompts whose
words go before the subject ("a red {0} {1}"); their entries carry the mark `{subject}`
("red {subject}"), and the words before the mark go right before the template's subject field:
"red bear plushie", "a red stuffed animal".

A set may hold a second list for live subjects (DreamBooth's live prompts: hats, outfits); a
subject with `live=True` then gets that list, every other subject the first.
"""

import string
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from monkey.datasets.base import Source, require_set
from monkey.errors import ConfigError, DataError
from monkey.hashing import to_plain
from monkey.paths import data_dir
from monkey.text_files import read_text

TEMPLATE_FIELDS = ("subject_word", "class_name", "location")
SUBJECT_FIELDS = ("subject_word", "class_name")
SUBJECT_MARK = "{subject}"
# Names usable as `prompts.template` on the command line, where braces need quoting.
TEMPLATES = {
    "paper": "{subject_word} {location}",
    "class": "a {class_name} {location}",
    "a_subject": "a {subject_word} {location}",
}


@dataclass(frozen=True)
class PromptSet:
    name: str
    locations: tuple[str, ...]
    template: str  # e.g. "{subject_word} {location}" -> "bear plushie in the jungle"
    live_locations: tuple[str, ...] | None = None  # the list for live subjects; None: `locations` for all

    def locations_for(self, source: Source) -> tuple[str, ...]:
        if source.live and self.live_locations is not None:
            return self.live_locations
        return self.locations

    def format(self, source: Source, location: str) -> str:
        before, mark, after = location.partition(SUBJECT_MARK)
        if not mark:
            before, after = "", location
        template = with_modifier(self.template, before.strip())
        text = template.format(subject_word=source.subject_word, class_name=source.class_name, location=after.strip())
        return " ".join(text.split())


def escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def with_modifier(template: str, modifier: str) -> str:
    """`template` with `modifier` inserted before its first subject field (or before everything)."""
    if not modifier:
        return template
    parts: list[str] = []
    inserted = False
    for literal, field, spec, conversion in string.Formatter().parse(template):
        parts.append(escape(literal))
        if field is None:
            continue
        if field in SUBJECT_FIELDS and not inserted:
            parts.append(escape(modifier) + " ")
            inserted = True
        parts.append("{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}")
    text = "".join(parts)
    return text if inserted else f"{escape(modifier)} {text}"


def read_prompt_file(path: Path) -> tuple[str, ...]:
    """One prompt entry per line; blank lines and lines starting with '#' are skipped."""
    if not path.is_file():
        raise DataError(f"prompt file not found: {path} (bundled lists: {bundled_lists()})")
    lines = [line.strip() for line in read_text(path).splitlines()]
    prompts = tuple(line for line in lines if line and not line.startswith("#"))
    if not prompts:
        raise DataError(f"prompt file {path} holds no prompt")
    for number, entry in enumerate(prompts, start=1):
        rest = entry.replace(SUBJECT_MARK, "", 1)
        if "{" in rest or "}" in rest:
            raise DataError(
                f"prompt file {path}, entry {number} {entry!r}: the only placeholder allowed is one {SUBJECT_MARK}"
            )
    return prompts


def bundled_lists() -> list[str]:
    return sorted(path.stem for path in (data_dir() / "prompts").glob("*.txt"))


def resolve_list(value: str) -> Path:
    """A bundled list name (data/prompts/<name>.txt) or a path to a user's file."""
    if value in bundled_lists():
        return data_dir() / "prompts" / f"{value}.txt"
    return Path(value).expanduser()


def check_template(template: str) -> None:
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    unknown = fields - set(TEMPLATE_FIELDS)
    if unknown or "location" not in fields:
        raise ConfigError(
            f"prompts.template={template!r} must use {{location}} and only the fields "
            f"{list(TEMPLATE_FIELDS)}; unknown: {sorted(unknown)}. Named templates: {TEMPLATES}"
        )


def load_prompt_set(name: str, template: str, file: str | None = None, live_file: str | None = None) -> PromptSet:
    """Load a prompt set. `file`: a bundled list name or a path (None: the bundled list `name`);
    `live_file` likewise, for live subjects (None: live subjects get `file` too). `template` is a
    format string or one of the names in TEMPLATES."""
    template = TEMPLATES.get(template, template)
    check_template(template)
    locations = read_prompt_file(resolve_list(file or name))
    live = read_prompt_file(resolve_list(live_file)) if live_file else None
    return PromptSet(name=name, locations=locations, template=template, live_locations=live)


def prompt_set_from_config(prompts_cfg: DictConfig) -> PromptSet:
    """The `prompts` config group's set; a missing `prompts.file` (prompts=file) is named."""
    require_set(prompts_cfg, "prompts")
    return load_prompt_set(**to_plain(prompts_cfg))
