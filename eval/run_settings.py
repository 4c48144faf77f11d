"""What each Table 1 row was made with, beyond its method: the generated size and the plan's pairing.

A number beside the paper's means little without them: the paper's baselines ran at 256 or 512 px and
its reference code paired each dataset row with one prompt (`plan.pairing=cycle`), while `fair` may run
each model at its own size over every subject x prompt (`cross`). Sizes come from the manifest rows
(what was generated, not what was asked for); the pairing and its prompt count from the folder's saved
Hydra config.
"""

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from monkey.eval.collect import run_config
from monkey.eval.score_store import ORACLE
from omegaconf import OmegaConf

from monkey.errors import MonkeyError
from monkey.prompts import prompt_set_from_config
from monkey.store import STATUS_OK, RunStore


@dataclass(frozen=True)
class RowSettings:
    sizes: tuple[tuple[int, int], ...]  # distinct (height, width) of the variant's generated images
    pairing: str  # e.g. "cycle (row k x prompt k mod 20)"

    @property
    def size_text(self) -> str:
        return ", ".join(f"{h}x{w}" for h, w in self.sizes) or "n/a"


def generated_sizes(run_dir: Path, method: str) -> set[tuple[int, int]]:
    rows = RunStore(run_dir).rows(method)
    return {(int(r["height"]), int(r["width"])) for r in rows if r.get("status") == STATUS_OK and "height" in r}


def prompt_count(config: dict) -> int | None:
    """How many prompts the plan drew from (after plan.limit.prompts); None when the list cannot be read."""
    try:
        prompts = prompt_set_from_config(OmegaConf.create(config["prompts"]))
    except (MonkeyError, OSError, KeyError, TypeError):
        return None
    limit = (config.get("plan") or {}).get("limit", {}).get("prompts")
    count = len(prompts.locations)
    return min(count, int(limit)) if limit else count


def pairing_text(config: dict | None) -> str:
    if not config or "plan" not in config:
        return "unknown (no saved config)"
    pairing = config["plan"].get("pairing", "cross")
    n = prompt_count(config)
    shown = "n unknown (prompt list not readable)" if n is None else str(n)
    if pairing == "cycle":
        return f"cycle (row k x prompt k mod {shown})"
    return f"{pairing} (every subject x {shown} prompt{'' if n == 1 else 's'})"


def row_settings(scores: pd.DataFrame) -> dict[str, RowSettings]:
    """variant -> its generated sizes and pairing, over every run folder behind it (oracle rows left out)."""
    generated = scores[scores["method"] != ORACLE][["variant", "run_dir", "method"]].drop_duplicates()
    sizes: dict[str, set[tuple[int, int]]] = {}
    pairings: dict[str, set[str]] = {}
    for variant, run_dir, method in generated.itertuples(index=False):
        sizes.setdefault(variant, set()).update(generated_sizes(Path(run_dir), method))
        pairings.setdefault(variant, set()).add(pairing_text(run_config(Path(run_dir))))
    return {v: RowSettings(tuple(sorted(sizes[v])), "; ".join(sorted(pairings[v]))) for v in sizes}
