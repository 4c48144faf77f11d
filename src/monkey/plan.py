"""The work plan: every (source, prompt, seed) a run must generate, in a fixed order, and its shards.

Seeds are derived from the item, never from the method, so every method draws the same initial
noise for the same work item.
"""

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from monkey.datasets.base import Source
from monkey.errors import ConfigError
from monkey.names import path_name
from monkey.prompts import PromptSet

log = logging.getLogger(__name__)
PAIRINGS = ("cross", "cycle")
T = TypeVar("T")


@dataclass(frozen=True)
class WorkItem:
    source: Source
    prompt_index: int  # index into the prompt set
    location: str
    prompt: str  # the prompt text of the plan (a method's preset may derive another from it)
    seed_index: int
    seed: int

    @property
    def item_id(self) -> str:
        return f"{self.source.source_id}/p{self.prompt_index:02d}/s{self.seed_index}"

    def image_relpath(self, method: str) -> str:
        s = self.source
        folders = "/".join(
            path_name(value, key)
            for value, key in ((method, "method.name"), (s.dataset, "dataset.name"), (s.subject, "subject"))
        )
        stem = path_name(s.image_id, "image id")
        return f"images/{folders}/{stem}_p{self.prompt_index:02d}_s{self.seed_index}.png"

    def describe(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            **self.source.describe(),
            "prompt_index": self.prompt_index,
            "location": self.location,
            "plan_prompt": self.prompt,
            "seed_index": self.seed_index,
            "seed": self.seed,
        }


def derive_seed(base_seed: int, source_id: str, prompt_index: int, seed_index: int) -> int:
    """A 31-bit seed from the item's identity: stable across runs, machines and methods."""
    key = f"{base_seed}|{source_id}|{prompt_index}|{seed_index}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") & 0x7FFFFFFF


def limit_sources(sources: list[Source], subjects: int | list[str] | None) -> list[Source]:
    """Keep the first N subjects (all their images), or the named subjects."""
    if subjects is None:
        return sources
    names = list(dict.fromkeys(source.subject for source in sources))
    if isinstance(subjects, int):
        if subjects < 1:
            raise ConfigError(f"plan.limit.subjects={subjects} must be >= 1 or null")
        keep = set(names[:subjects])
    else:
        unknown = sorted(set(subjects) - set(names))
        if unknown:
            raise ConfigError(f"plan.limit.subjects names unknown subjects {unknown}; known: {names}")
        keep = set(subjects)
    dropped = [name for name in names if name not in keep]
    if dropped:  # a limit must never silently shrink a user's dataset
        shown = ", ".join(dropped[:10]) + (f", ... ({len(dropped) - 10} more)" if len(dropped) > 10 else "")
        log.info("plan.limit.subjects=%s keeps %d of %d subjects; left out: %s", subjects, len(keep), len(names), shown)
    return [source for source in sources if source.subject in keep]


def build_plan(
    sources: list[Source],
    prompts: PromptSet,
    pairing: str = "cross",
    seeds: int = 1,
    base_seed: int = 0,
    limit_subjects: int | list[str] | None = None,
    limit_prompts: int | None = None,
) -> list[WorkItem]:
    """`cross`: every source with every prompt. `cycle`: source row k with prompt k mod n, one item per
    source image, as the MONKEY reference code (jamesBaker361/monkey main_seg.py:189 and :197). k is the
    row's place in the whole dataset, so a subject limit keeps exactly the full plan's items of those
    subjects; n is the number of prompts after plan.limit.prompts."""
    if pairing not in PAIRINGS:
        raise ConfigError(f"plan.pairing={pairing!r} is not allowed; choose one of {list(PAIRINGS)}")
    if seeds < 1:
        raise ConfigError(f"plan.seeds={seeds} must be >= 1")
    if limit_prompts is not None and limit_prompts < 1:
        raise ConfigError(f"plan.limit.prompts={limit_prompts} must be >= 1 or null")
    rows = limit_sources(sources, limit_subjects)
    if limit_prompts is not None:
        longest = max((len(prompts.locations_for(source)) for source in rows), default=0)
        if longest > limit_prompts:
            log.info("plan.limit.prompts=%d keeps the first %d of %d prompts", limit_prompts, limit_prompts, longest)
    row_of = {source.source_id: row for row, source in enumerate(sources)}  # k of `cycle`: the dataset row
    items: list[WorkItem] = []
    for source in rows:
        row = row_of[source.source_id]
        locations = list(enumerate(prompts.locations_for(source)))[:limit_prompts]  # live subjects: their list
        chosen = locations if pairing == "cross" else [locations[row % len(locations)]]
        for prompt_index, location in chosen:
            text = prompts.format(source, location)
            for seed_index in range(seeds):
                seed = derive_seed(base_seed, source.source_id, prompt_index, seed_index)
                items.append(WorkItem(source, prompt_index, location, text, seed_index, seed))
    return items


def shard_items(items: Sequence[T], shard: int, num_shards: int) -> list[T]:
    """Contiguous, balanced blocks: shard k gets items [k*N//n, (k+1)*N//n).

    Contiguous keeps a subject's items together, so per-subject work (image embeddings) is done
    once per shard.
    """
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ConfigError(f"shard={shard} must lie in [0, num_shards={num_shards})")
    count = len(items)
    return list(items[shard * count // num_shards : (shard + 1) * count // num_shards])


def plan_batches(items: Sequence[WorkItem], batch_size: int) -> list[list[WorkItem]]:
    """The plan cut into consecutive batches, fixed by the plan alone.

    Which items share a batch changes float rounding (hence pixels), so every shard, every resumed
    run and a one-process run must group each item with the same neighbours.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size} must be at least 1 (generation.batch_size, method.batch_size)")
    return [list(items[start : start + batch_size]) for start in range(0, len(items), batch_size)]


def shard_batches(items: Sequence[WorkItem], batch_size: int, shard: int, num_shards: int) -> list[list[WorkItem]]:
    """This shard's batches: contiguous balanced blocks of whole batches, so no shard splits a batch."""
    return shard_items(plan_batches(items, batch_size), shard, num_shards)
