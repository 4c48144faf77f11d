"""Prompt sets (location suffixes) and the template that puts a subject into a prompt."""

import string
from dataclasses import dataclass
from pathlib import Path

from monkey.datasets.base import Source
from monkey.errors import ConfigError, DataError
from monkey.paths import data_dir

TEMPLATE_FIELDS = ("subject_word", "class_name", "location")


@dataclass(frozen=True)
class PromptSet:
    name: str
    locations: tuple[str, ...]
    template: str  # e.g. "{subject_word} {location}" -> "bear plushie in the jungle"

    def format(self, source: Source, location: str) -> str:
        text = self.template.format(subject_word=source.subject_word, class_name=source.class_name, location=location)
        return " ".join(text.split())


def read_prompt_file(path: Path) -> tuple[str, ...]:
    """One prompt per line; blank lines and lines starting with '#' are skipped."""
    if not path.is_file():
        raise DataError(f"prompt file not found: {path}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    prompts = tuple(line for line in lines if line and not line.startswith("#"))
    if not prompts:
        raise DataError(f"prompt file {path} holds no prompt")
    return prompts


def check_template(template: str) -> None:
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    unknown = fields - set(TEMPLATE_FIELDS)
    if unknown or "location" not in fields:
        raise ConfigError(
            f"prompts.template={template!r} must use {{location}} and only the fields "
            f"{list(TEMPLATE_FIELDS)}; unknown: {sorted(unknown)}"
        )


def load_prompt_set(name: str, template: str, file: str | None = None) -> PromptSet:
    """Load a prompt list; `file` None means the bundled data/prompts/<name>.txt."""
    check_template(template)
    path = Path(file).expanduser() if file else data_dir() / "prompts" / f"{name}.txt"
    return PromptSet(name=name, locations=read_prompt_file(path), template=template)
