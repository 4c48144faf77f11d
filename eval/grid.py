"""An image grid in the style of the paper's Table 2: the source on top, one row per method, one
column per (subject, prompt) item, over items that every shown method generated."""

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from monkey.eval.score_store import ORACLE
from monkey.eval.tables import dataset_label
from PIL import Image

from monkey.atomic import atomic_savefig
from monkey.images import AS_STORED, load_rgb


def pick_items(items: pd.DataFrame, columns: int) -> list[str]:
    """Item ids for the columns: distinct subjects first, prompts rotated so columns show varied prompts."""
    by_subject = {
        subject: list(group.sort_values(["prompt_index", "seed_index"])["item_id"])
        for subject, group in items.groupby("subject", sort=True)
    }
    picks: list[str] = []
    depth = max((len(v) for v in by_subject.values()), default=0)
    for round_ in range(depth):
        for k, ids in enumerate(by_subject.values()):
            if round_ < len(ids) and len(picks) < columns:
                picks.append(ids[(k + round_) % len(ids)])
    return picks


def thumbnail(path: str | Path, size: int) -> Image.Image:
    image = load_rgb(path, AS_STORED)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return image


def image_grid(
    scores: pd.DataFrame, dataset: str, out_path: Path, columns: int = 6, max_methods: int = 8, cell: int = 160
) -> Path | None:
    """Write the grid of `dataset` to `out_path` (PNG); None when no item is shared by the methods."""
    rows = scores[(scores["dataset"] == dataset) & (scores["method"] != ORACLE)]
    variants = sorted(rows["variant"].unique())[:max_methods]
    if not variants:
        return None
    rows = rows[rows["variant"].isin(variants)]
    shared = set.intersection(*(set(group["item_id"]) for _, group in rows.groupby("variant")))
    items = rows[rows["item_id"].isin(shared)].drop_duplicates("item_id")
    picks = pick_items(items, columns)
    if not picks:
        return None
    lookup = {(r.variant, r.item_id): Path(r.run_dir) / r.image for r in rows.itertuples()}
    first = items.set_index("item_id")
    inch = cell / 100
    fig, axes = plt.subplots(
        1 + len(variants),
        len(picks),
        figsize=(inch * len(picks) + 1.2, inch * (1 + len(variants)) + 0.6),
        squeeze=False,
    )
    for column, item_id in enumerate(picks):
        item = first.loc[item_id]
        title = f"{item['subject']}\n" + "\n".join(textwrap.wrap(str(item["location"]), 22))
        axes[0][column].set_title(title, fontsize=7)
        cells = [item["source_path"], *[lookup[(v, item_id)] for v in variants]]
        for row, path in enumerate(cells):
            ax = axes[row][column]
            ax.imshow(thumbnail(path, cell))
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel("source" if row == 0 else "\n".join(textwrap.wrap(variants[row - 1], 18)), fontsize=7)
    fig.suptitle(f"{dataset_label(dataset)}: source (top) and each method", fontsize=9)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, out_path, dpi=100)
    plt.close(fig)
    return out_path
