"""Shared test helpers (imported by tests; not a test module)."""

from pathlib import Path
from typing import Any

from monkey.store import RunStore

# Fields of a manifest row that legitimately differ between two runs of the same plan.
VOLATILE = ("created", "timings", "writer")
# `info` fields that say where MONKEY's shared work came from: a second run finds the first's cache.
SHARING_INFO = ("pass1", "pass2_prefix", "pass2_prefix_steps")
QUICK = ("generation.height=64", "generation.width=64", "method.num_inference_steps=2")
# For multiruns over methods that name their steps differently (MONKEY: initial_steps/final_steps).
QUICK_SIZE = ("generation.height=64", "generation.width=64")


def stable_row(row: dict[str, Any]) -> dict[str, Any]:
    stable = {k: v for k, v in row.items() if k not in VOLATILE}
    if isinstance(stable.get("info"), dict):
        stable["info"] = {k: v for k, v in stable["info"].items() if k not in SHARING_INFO}
    return stable


def stable_rows(run_dir: Path) -> list[dict[str, Any]]:
    return [stable_row(row) for row in RunStore(run_dir).rows()]


def manifest_line_count(run_dir: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in (run_dir / "manifest").glob("*.jsonl"))


def image_bytes(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted((run_dir / "images").rglob("*.png"))}
