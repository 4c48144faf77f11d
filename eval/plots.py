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
from matplotlib.figure import Figure
from monkey.eval.label_placement import MARKER_RADIUS, PointLabel, line_samples, place_labels, point_boxes
from monkey.eval.pareto import frontier_path, pareto_mask
from monkey.eval.tables import dataset_label, paper_points

from monkey.atomic import atomic_savefig


def pareto_figure(
    summary: pd.DataFrame,
    dataset: str,
    x: str,
    y: str,
    references: list[str],
    labels: dict[str, str],
    paper: pd.DataFrame | None = None,
    level: str = "image",
    paper_metrics: dict[str, str | None] | None = None,
) -> Figure | None:
    """The figure (None when the dataset lacks either metric); labels placed apart (monkey.eval.label_placement)."""
    rows = summary[(summary["dataset"] == dataset) & (summary["level"] == level)]
    table = {
        # dropna=False: a dataset of one subject has no interval (all NaN), which must not drop the column
        name: rows.pivot_table(index="variant", columns="metric", values=name, dropna=False)
        for name in ("mean", "ci_low", "ci_high")
    }
    if x not in table["mean"] or y not in table["mean"]:
        return None
    means = table["mean"][[x, y]].dropna()
    variants = list(means.index)
    method_of = dict(zip(rows["variant"], rows["method"], strict=False))
    px, py = means[x].to_numpy(), means[y].to_numpy()
    anchor = np.array([method_of[v] in references for v in variants], dtype=bool)
    on_front = np.zeros(len(variants), dtype=bool)
    on_front[~anchor] = pareto_mask(px[~anchor], py[~anchor])

    fig, ax = plt.subplots(figsize=(8.4, 4.8))  # wider: the legend sits beside the axes
    for i, variant in enumerate(variants):
        color = "0.55" if anchor[i] else ("C3" if on_front[i] else "C0")
        xerr = [[px[i] - table["ci_low"].loc[variant, x]], [table["ci_high"].loc[variant, x] - px[i]]]
        yerr = [[py[i] - table["ci_low"].loc[variant, y]], [table["ci_high"].loc[variant, y] - py[i]]]
        kind = "reference (not ranked)" if anchor[i] else ("on the frontier" if on_front[i] else "not on the frontier")
        label = kind if kind not in ax.get_legend_handles_labels()[1] else None  # each colour explained once
        marker = "s" if anchor[i] else "o"
        ax.errorbar(px[i], py[i], xerr=xerr, yerr=yerr, fmt=marker, color=color, capsize=3, ms=6, label=label)
    fx, fy = frontier_path(px, py, on_front) if on_front.any() else (np.array([]), np.array([]))
    if on_front.any():
        ax.plot(fx, fy, "--", color="C3", lw=1.2, label="Pareto frontier")
    point_labels = [
        PointLabel(xi, yi, variant, {"fontsize": 8}) for variant, xi, yi in zip(variants, px, py, strict=True)
    ]
    reported = paper_points(paper, dataset, x, y, paper_metrics)  # only on the axes of its own backbones
    if not reported.empty:
        ax.scatter(reported[x], reported[y], facecolors="none", edgecolors="0.4", label="paper (reported)", gid="paper")
        point_labels += [
            PointLabel(row[x], row[y], row["method"], {"fontsize": 7, "color": "0.4"}) for _, row in reported.iterrows()
        ]
    ax.set_xlabel(labels.get(x, x))
    ax.set_ylabel(labels.get(y, y))
    ax.set_title(f"{dataset_label(dataset)}: {labels.get(y, y)} vs {labels.get(x, x)} (mean, 95% CI)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # beside the axes: it never hides a point or a label
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()  # before the labels: they are placed in the final geometry
    markers = point_boxes(
        ax, np.array([p.x for p in point_labels]), np.array([p.y for p in point_labels]), MARKER_RADIUS
    )
    place_labels(ax, point_labels, markers + point_boxes(ax, *line_samples(fx, fy), 1.0))
    return fig


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
    fig = pareto_figure(summary, dataset, x, y, references, labels, paper, level, paper_metrics)
    if fig is None:
        return []
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_stem.with_suffix(".png"), out_stem.with_suffix(".pdf")]
    for path in paths:
        atomic_savefig(fig, path, dpi=150)
    plt.close(fig)
    return paths
