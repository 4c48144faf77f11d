"""The ranking's files, all through the atomic path: ranking.csv (every (layer, token, step), best
first), scores.csv (every item's IoU), ranking.md (the top rows and what produced them),
ranking.png / .pdf (mean IoU per layer x token, one panel per step, the best cell boxed) and
ranking.json (the settings, the model and the best choice)."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from monkey.atomic import atomic_write_bytes
from monkey.figures.grid import save_figure


def markdown_table(table: pd.DataFrame) -> str:
    columns = list(table.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table.itertuples(index=False):
        cells = [f"{value:.4f}" if isinstance(value, float) else str(value) for value in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(table: pd.DataFrame, about: dict[str, Any], top: int) -> str:
    best = table.iloc[0]
    lines = [
        "# Layer, token and step by IoU with the subject masks",
        "",
        f"Best: `{best['layer']}`, token {best['token']}, step {best['step']}: mean IoU {best['mean_iou']:.4f} "
        f"over {best['items']} images.",
        "",
        f"Model `{about['model']}` ({about['ip_adapter']}, {about['image_tokens']} image tokens), "
        f"{about['items']} images of {len(about['subjects'])} subjects at {about['size'][0]}x{about['size'][1]} px, "
        f"pass 1 of {about['initial_steps']} steps at IP scale {about['initial_scale']}, "
        f"maps thresholded at {about['threshold']} ({about['threshold_rule']}); masks: {about['masks']}.",
        "",
        f"Command: `{about['command']}`",
        "",
        markdown_table(table.head(top)),
        "",
    ]
    return "\n".join(lines)


def scores_order(table: pd.DataFrame) -> list[str]:
    """Layers in the model's order (`layer_index` when the table has it, else as first seen)."""
    if "layer_index" in table:
        return list(table.sort_values("layer_index", kind="stable")["layer"])
    return list(table["layer"])


def heatmap_figure(table: pd.DataFrame) -> Figure:
    """Mean IoU per layer (rows, the model's order) x token (columns), one panel per step."""
    layers = list(dict.fromkeys(scores_order(table)))
    tokens = sorted(table["token"].unique())
    steps = sorted(table["step"].unique())
    best = table.iloc[0]
    vmax = max(float(table["mean_iou"].max()), 1e-6)
    width = 4.5 + 0.3 * len(tokens) * len(steps)
    fig = Figure(figsize=(width, 1.5 + 0.2 * len(layers)), layout="constrained")
    axes = fig.subplots(1, len(steps), squeeze=False, sharey=True)[0]
    image = None
    for ax, step in zip(axes, steps, strict=True):
        grid = np.full((len(layers), len(tokens)), np.nan)
        part = table[table["step"] == step]
        for row in part.itertuples(index=False):
            grid[layers.index(row.layer), tokens.index(row.token)] = row.mean_iou
        image = ax.imshow(grid, vmin=0.0, vmax=vmax, cmap="viridis", aspect="auto")
        ax.set_title(f"step {step}", fontsize=8)
        ax.set_xticks(range(len(tokens)), [str(t) for t in tokens], fontsize=6)
        ax.set_xlabel("image token", fontsize=7)
        if step == best["step"]:
            ax.add_patch(
                Rectangle(
                    (tokens.index(best["token"]) - 0.5, layers.index(best["layer"]) - 0.5),
                    1,
                    1,
                    fill=False,
                    edgecolor="red",
                    linewidth=1.5,
                )
            )
    axes[0].set_yticks(range(len(layers)), layers, fontsize=5)
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="mean IoU", shrink=0.8)
    fig.suptitle("IoU of each image token's thresholded map with the subject mask", fontsize=9)
    return fig


def write_ranking(out: Path, table: pd.DataFrame, scores: pd.DataFrame, about: dict[str, Any], top: int) -> list[Path]:
    out = Path(out)
    paths = [out / "ranking.csv", out / "scores.csv", out / "ranking.md", out / "ranking.json"]
    atomic_write_bytes(paths[0], table.to_csv(index=False).encode())
    atomic_write_bytes(paths[1], scores.to_csv(index=False).encode())
    atomic_write_bytes(paths[2], markdown(table, about, top).encode())
    best = table.iloc[0]
    summary = {
        **about,
        "best": {
            "layer": best["layer"],
            "token": int(best["token"]),
            "step": int(best["step"]),
            "mean_iou": float(best["mean_iou"]),
        },
    }
    atomic_write_bytes(paths[3], json.dumps(summary, indent=2).encode())
    paths += save_figure(heatmap_figure(table), out / "ranking")
    return paths
