"""Pareto plots in the style of the paper's Figure 2: one metric pair per dataset, every variant a
labelled point with its 95 % interval as whiskers, the frontier of the compared methods drawn through.
Reference rows (text-only, oracle) are grey anchors, never on the frontier; the paper's own numbers,
where the dataset has them, are hollow markers.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from monkey.eval.pareto import frontier_path, pareto_mask
from monkey.eval.tables import dataset_label, paper_points

from monkey.atomic import atomic_savefig


def label_offsets(
    x: np.ndarray, y: np.ndarray, span_x: float, span_y: float, near: float = 0.04
) -> list[tuple[int, int]]:
    """Text offsets (points) that stack the labels of points lying close together (within `near` of the
    axes' spans) instead of overprinting them."""
    offsets = []
    for i in range(len(x)):
        close = sum(abs(x[j] - x[i]) < near * span_x and abs(y[j] - y[i]) < near * span_y for j in range(i))
        offsets.append((5, 5 - 10 * close))
    return offsets


def pareto_plot(
    summary: pd.DataFrame,
    dataset: str,
    x: str,
    y: str,
    out_stem: Path,
    references: list[str],
    labels: dict[str, str],
    paper: pd.DataFrame | None = None,
    level: str = "image",
    paper_metrics: dict[str, str | None] | None = None,
) -> list[Path]:
    """Write <out_stem>.png and .pdf; return their paths (none when the dataset lacks either metric).
    The paper's points are drawn where both axes have a paper column (monkey.eval.tables.paper_points)."""
    rows = summary[(summary["dataset"] == dataset) & (summary["level"] == level)]
    table = {
        # dropna=False: a dataset of one subject has no interval (all NaN), which must not drop the column
        name: rows.pivot_table(index="variant", columns="metric", values=name, dropna=False)
        for name in ("mean", "ci_low", "ci_high")
    }
    if x not in table["mean"] or y not in table["mean"]:
        return []
    means = table["mean"][[x, y]].dropna()
    variants = list(means.index)
    method_of = dict(zip(rows["variant"], rows["method"], strict=False))
    px, py = means[x].to_numpy(), means[y].to_numpy()
    anchor = np.array([method_of[v] in references for v in variants], dtype=bool)
    on_front = np.zeros(len(variants), dtype=bool)
    on_front[~anchor] = pareto_mask(px[~anchor], py[~anchor])

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for i, variant in enumerate(variants):
        color = "0.55" if anchor[i] else ("C3" if on_front[i] else "C0")
        xerr = [[px[i] - table["ci_low"].loc[variant, x]], [table["ci_high"].loc[variant, x] - px[i]]]
        yerr = [[py[i] - table["ci_low"].loc[variant, y]], [table["ci_high"].loc[variant, y] - py[i]]]
        label = "reference (not ranked)" if anchor[i] and not anchor[:i].any() else None
        marker = "s" if anchor[i] else "o"
        ax.errorbar(px[i], py[i], xerr=xerr, yerr=yerr, fmt=marker, color=color, capsize=3, ms=6, label=label)
    if on_front.any():
        fx, fy = frontier_path(px, py, on_front)
        ax.plot(fx, fy, "--", color="C3", lw=1.2, label="Pareto frontier")
    reported = paper_points(paper, dataset, x, y, paper_metrics)  # only on the axes of its own backbones
    if not reported.empty:
        ax.scatter(reported[x], reported[y], facecolors="none", edgecolors="0.4", label="paper (reported)", gid="paper")
        for _, row in reported.iterrows():
            ax.annotate(
                row["method"],
                (row[x], row[y]),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
                color="0.4",
            )
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for variant, offset, xi, yi in zip(variants, label_offsets(px, py, x1 - x0, y1 - y0), px, py, strict=True):
        ax.annotate(variant, (xi, yi), textcoords="offset points", xytext=offset, fontsize=8)
    ax.set_xlabel(labels.get(x, x))
    ax.set_ylabel(labels.get(y, y))
    ax.set_title(f"{dataset_label(dataset)}: {labels.get(y, y)} vs {labels.get(x, x)} (mean, 95% CI)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_stem.with_suffix(".png"), out_stem.with_suffix(".pdf")]
    for path in paths:
        atomic_savefig(fig, path, dpi=150)
    plt.close(fig)
    return paths
