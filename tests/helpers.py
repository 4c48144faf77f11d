"""Shared test helpers (imported by tests; not a test module)."""

from pathlib import Path
from typing import Any

from monkey.store import RunStore

# Fields of a manifest row that legitimately differ between two runs of the same plan.
VOLATILE = ("created", "timings", "writer")
QUICK = ("generation.height=64", "generation.width=64", "method.num_inference_steps=2")
# For multiruns over methods that name their steps differently (MONKEY: initial_steps/final_steps).
QUICK_SIZE = ("generation.height=64", "generation.width=64")


def stable_rows(run_dir: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in RunStore(run_dir).rows()]


def manifest_line_count(run_dir: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in (run_dir / "manifest").glob("*.jsonl"))


def image_bytes(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted((run_dir / "images").rglob("*.png"))}
