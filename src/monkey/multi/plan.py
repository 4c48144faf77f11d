"""Work items holding N subjects: which subjects share an image, its prompt, seed and paths.

Pairing rule (seeded, each subject used equally often): one source per subject (its first image), the
subjects shuffled by `random.Random(f"{base_seed}/{attempt}")`, and item k takes the N subjects at places
k, k+1, ..., k+N-1 of that cycle. Every subject thus appears in exactly N items, once in each slot
(slot 0 is the first subject word of the prompt and the left half of the `halves` baseline), so no
subject is favoured by position. Subjects sharing a subject word (DreamBooth's dogs are all "dog")
could not be told apart by the prompt or the evaluation's segmenter, so the shuffle is redrawn
(attempt 1, 2, ...) until no item holds one word twice.

The cycle is drawn over every subject of the dataset; `plan.limit.subjects` then keeps the items whose
first subject it keeps (an item belongs to its first subject, the row's `subject`), so a limited plan
holds exactly the full plan's items of those subjects, as `plan.pairing=cycle` does for one subject.
"""

import random
from dataclasses import dataclass
from typing import Any

from monkey.datasets.base import Source
from monkey.errors import ConfigError
from monkey.names import path_name
from monkey.plan import WorkItem, derive_seed, limit_sources
from monkey.prompts import PromptSet

SUBJECTS_FIELD = "{subjects}"
MAX_ATTEMPTS = 1000  # shuffles tried before a pool whose words cannot be separated is refused


@dataclass(frozen=True)
class MultiWorkItem(WorkItem):
    """A work item with several subjects; `source` is the first (the row's `subject`), `sources` all, in
    prompt order. Single-subject code reading `source` sees subject 0; N-subject methods read `sources`."""

    sources: tuple[Source, ...] = ()

    @property
    def source_key(self) -> str:
        return "+".join(source.source_id for source in self.sources)

    @property
    def item_id(self) -> str:
        return f"{self.source_key}/p{self.prompt_index:02d}/s{self.seed_index}"

    def image_relpath(self, method: str) -> str:
        subjects = "+".join(source.subject for source in self.sources)
        images = "+".join(source.image_id for source in self.sources)
        folders = "/".join(
            path_name(value, key)
            for value, key in ((method, "method.name"), (self.source.dataset, "dataset.name"), (subjects, "subjects"))
        )
        stem = path_name(images, "image ids")
        return f"images/{folders}/{stem}_p{self.prompt_index:02d}_s{self.seed_index}.png"

    def describe(self) -> dict[str, Any]:
        """The first subject's fields (what single-subject readers expect), plus every subject's."""
        return {
            **super().describe(),
            "item_id": self.item_id,
            "subjects": [source.subject for source in self.sources],
            "subject_words": [source.subject_word for source in self.sources],
            "source_ids": [source.source_id for source in self.sources],
            "source_paths": [str(source.image_path) for source in self.sources],
        }


def subjects_of(item: WorkItem) -> tuple[Source, ...]:
    """The subjects an item holds, in prompt order: `sources` of a MultiWorkItem, else its one source."""
    return item.sources if isinstance(item, MultiWorkItem) else (item.source,)


def subject_pool(sources: list[Source]) -> list[Source]:
    """One source per subject, its first image, in dataset order."""
    first: dict[tuple[str, str], Source] = {}
    for source in sources:
        first.setdefault((source.dataset, source.subject), source)
    return list(first.values())


def group_subjects(pool: list[Source], per_item: int, base_seed: int) -> list[tuple[Source, ...]]:
    """The pairing rule of the module docstring: len(pool) groups of `per_item` subjects."""
    if per_item < 2:
        raise ConfigError(f"plan.multi.subjects={per_item} must be >= 2 for a multi-subject plan (1: the usual plan)")
    if len(pool) < per_item:
        raise ConfigError(
            f"plan.multi.subjects={per_item} needs at least {per_item} subjects; the dataset has {len(pool)}"
        )
    for attempt in range(MAX_ATTEMPTS):
        order = list(pool)
        random.Random(f"{base_seed}/{attempt}").shuffle(order)  # str seeds: no overlap between base seeds
        groups = [tuple(order[(k + j) % len(order)] for j in range(per_item)) for k in range(len(order))]
        if all(len({s.subject_word for s in group}) == per_item for group in groups):
            return groups
    words = sorted({s.subject_word for s in pool})
    raise ConfigError(
        f"plan.multi.subjects={per_item}: no shuffle of the {len(pool)} subjects in {MAX_ATTEMPTS} tries keeps "
        f"distinct subject words in every item (words: {words}); choose subjects with distinct words "
        "(plan.limit.subjects=[...])"
    )


def multi_prompt(template: str, group: tuple[Source, ...], location: str) -> str:
    """`template` with {subjects} = "a <word 0> and a <word 1>" and {location}."""
    subjects = " and ".join(f"a {source.subject_word}" for source in group)
    return " ".join(template.replace(SUBJECTS_FIELD, subjects).replace("{location}", location).split())


def check_template(template: str) -> None:
    if SUBJECTS_FIELD not in template or "{location}" not in template:
        raise ConfigError(
            f"plan.multi.template={template!r} must hold {SUBJECTS_FIELD} and {{location}} "
            "(e.g. '{subjects} {location}')"
        )


def build_multi_plan(
    sources: list[Source],
    prompts: PromptSet,
    per_item: int,
    template: str,
    seeds: int = 1,
    base_seed: int = 0,
    limit_subjects: int | list[str] | None = None,
    limit_prompts: int | None = None,
) -> list[MultiWorkItem]:
    """Every group of the pairing rule with every prompt entry (the object list: one list for all
    subjects of a group) and `seeds` seeds, derived from the group's ids as `derive_seed` does."""
    check_template(template)
    if seeds < 1:
        raise ConfigError(f"plan.seeds={seeds} must be >= 1")
    if limit_prompts is not None and limit_prompts < 1:
        raise ConfigError(f"plan.limit.prompts={limit_prompts} must be >= 1 or null")
    groups = group_subjects(subject_pool(sources), per_item, base_seed)
    kept = {source.subject for source in limit_sources(sources, limit_subjects)}
    groups = [group for group in groups if group[0].subject in kept]
    locations = list(enumerate(prompts.locations))[:limit_prompts]
    items: list[MultiWorkItem] = []
    for group in groups:
        key = "+".join(source.source_id for source in group)
        for prompt_index, location in locations:
            text = multi_prompt(template, group, location)
            for seed_index in range(seeds):
                seed = derive_seed(base_seed, key, prompt_index, seed_index)
                items.append(MultiWorkItem(group[0], prompt_index, location, text, seed_index, seed, group))
    return items


def check_method(plan: list[WorkItem], method_target: str, label: str) -> None:
    """Refuse a single-subject method on a plan of several subjects per item: it would read only the
    first subject and say nothing. Multi-subject methods set the class attribute `multi_subject`."""
    if not any(isinstance(item, MultiWorkItem) for item in plan):
        return
    from hydra.utils import get_class

    try:
        method_class = get_class(method_target)
    except (ImportError, ValueError):
        return  # build_method names the bad target
    if not getattr(method_class, "multi_subject", False):
        raise ConfigError(
            f"method '{label}' takes one subject per image, but plan.multi.subjects asks for several; use "
            "method=monkey_multi, ip_adapter_multi or ip_adapter_halves (docs/multi_subject.md), or "
            "plan.multi.subjects=1"
        )
