"""The attention grid: rows are (layer, step) pairs, or layers with their steps averaged; columns are
the words of the prompt, then the IP-Adapter's image tokens. Each map is upsampled to the image's size
and drawn with a colormap over the generated image. The first row starts with two extra panels, the
generated image and the subject image; in the other rows those two cells stay empty.

Colour scale (`norm`): `panel` min-max normalises each map on its own (the paper's figures, and how
MONKEY normalises its mask map), so each panel shows where its token attends most; `shared` draws
every word panel on one 0..max scale and every image-token panel on another, so panels compare.
"""

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image

from monkey.atomic import atomic_savefig
from monkey.errors import ConfigError
from monkey.figures.attention import AttentionMaps
from monkey.figures.words import Word

ROW_MODES = ("pairs", "layers")
NORMS = ("panel", "shared")
INTERPOLATIONS = ("bilinear", "nearest")
MEAN = "mean"  # the step of a row whose steps are averaged
EXTRA_KINDS = ("image", "subject")
LAYER_SUFFIX = ".transformer_blocks.0.attn2"


@dataclass
class Panel:
    row: int
    column: int
    kind: str  # "image" | "subject" (the extra panels) | "word" | "token"
    label: str  # column title: the word, "image token k", "generated", "subject"
    layer: str | None = None
    step: int | str | None = None  # a step, or MEAN over the maps' steps
    map: torch.Tensor | None = None  # [h, w] on the layer's grid (probabilities)
    word: Word | None = None
    token: int | None = None


def check_choice(key: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {list(allowed)}")


def grid_rows(maps: AttentionMaps, rows: str) -> list[tuple[str, int | str]]:
    check_choice("rows", rows, ROW_MODES)
    if rows == "pairs":
        return [(layer, step) for layer in maps.layers for step in maps.steps]
    return [(layer, MEAN) for layer in maps.layers]


def averaged(maps: AttentionMaps, layer: str, step: int | str, one: Callable[[str, int], torch.Tensor]) -> torch.Tensor:
    """`one(layer, step)` at a step, or its mean over every recorded step."""
    if step == MEAN:
        return torch.stack([one(layer, s) for s in maps.steps]).mean(dim=0)
    return one(layer, step)


def build_panels(maps: AttentionMaps, words: Sequence[Word], tokens: Sequence[int], rows: str = "pairs") -> list[Panel]:
    """Two extra panels, then one panel per (row, word) and per (row, image token)."""
    panels = [Panel(0, 0, "image", "generated"), Panel(0, 1, "subject", "subject")]
    for row, (layer, step) in enumerate(grid_rows(maps, rows)):
        column = len(EXTRA_KINDS)
        for word in words:
            grid = averaged(maps, layer, step, lambda la, s, w=word: maps.word_map(la, s, w))
            panels.append(Panel(row, column, "word", word.label, layer, step, grid, word=word))
            column += 1
        for token in tokens:
            grid = averaged(maps, layer, step, lambda la, s, t=token: maps.token_map(la, s, t))
            panels.append(Panel(row, column, "token", f"image token {token}", layer, step, grid, token=token))
            column += 1
    return panels


def upsample(grid: torch.Tensor, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """[h, w] -> [H, W] float array."""
    check_choice("interpolation", interpolation, INTERPOLATIONS)
    extra = {"align_corners": False} if interpolation == "bilinear" else {}
    return F.interpolate(grid[None, None].float(), size=size, mode=interpolation, **extra)[0, 0].numpy()


def colour_limits(panels: Sequence[Panel], norm: str) -> dict[int, tuple[float, float]]:
    """(vmin, vmax) per panel index."""
    check_choice("norm", norm, NORMS)
    limits: dict[int, tuple[float, float]] = {}
    kinds = {kind: [i for i, p in enumerate(panels) if p.kind == kind] for kind in ("word", "token")}
    for indices in kinds.values():
        top = max((float(panels[i].map.max()) for i in indices), default=1.0)
        for i in indices:
            low, high = (float(panels[i].map.min()), float(panels[i].map.max())) if norm == "panel" else (0.0, top)
            limits[i] = (low, high if high > low else low + 1e-12)
    return limits


def row_label(layer: str, step: int | str, steps: Sequence[int]) -> str:
    when = f"steps {', '.join(map(str, steps))} (mean)" if step == MEAN else f"step {step}"
    return f"{layer.removesuffix(LAYER_SUFFIX)}\n{when}"


def draw_grid(
    maps: AttentionMaps,
    subject: Image.Image,
    panels: Sequence[Panel],
    norm: str = "panel",
    cmap: str = "jet",
    alpha: float = 0.5,
    interpolation: str = "bilinear",
    title: str | None = None,
    panel_inches: float = 1.5,
) -> Figure:
    """The grid as a matplotlib figure: one axes per panel, empty cells switched off."""
    n_rows = 1 + max(p.row for p in panels)
    n_columns = 1 + max(p.column for p in panels)
    # a bare Figure, not pyplot: no global backend switch (notebooks keep their inline plots), nothing to close
    fig = Figure(figsize=(panel_inches * n_columns, panel_inches * n_rows + 0.6))
    axes = fig.subplots(n_rows, n_columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    image = np.asarray(maps.image.convert("RGB"))
    size = image.shape[:2]
    limits = colour_limits(panels, norm)
    for index, panel in enumerate(panels):
        ax = axes[panel.row, panel.column]
        ax.set_axis_on()
        ax.set_xticks([])
        ax.set_yticks([])
        if panel.kind == "subject":
            ax.imshow(subject.convert("RGB"))
        else:
            ax.imshow(image)
        if panel.map is not None:
            low, high = limits[index]
            ax.imshow(upsample(panel.map, size, interpolation), cmap=cmap, alpha=alpha, vmin=low, vmax=high)
        if panel.row == 0:
            ax.set_title(panel.label, fontsize=8)
        if panel.column == len(EXTRA_KINDS):
            ax.set_ylabel(row_label(panel.layer, panel.step, maps.steps), fontsize=6)
    fig.suptitle(title or f'"{maps.prompt}" (seed {maps.seed})', fontsize=9)
    fig.tight_layout()
    return fig


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figure(fig: Figure, stem: Path, dpi: int = 150) -> list[Path]:
    """<stem>.png and <stem>.pdf."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.pdf"]
    for path in paths:
        atomic_savefig(fig, path, dpi=dpi)
    return paths
