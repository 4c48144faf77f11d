"""Each metric against a swept parameter: the mean with its interval per series, the fixed methods and
reference rows as horizontal lines with their interval as a faint band.

Numeric parameters (scales, thresholds, token indices) sit on a numeric axis, the mean a line and the
interval a band. Categorical ones (step lists, layers, combine rules) are ordered categories, each point
with error bars; several series at one category are nudged apart. Series: one per method and setting of
the other varying keys (a 2-D sweep draws a line per value of the other parameter).

Artists carry gids (`mean:<series>`, `band:<series>`, `interval:<series>`, `line:<variant>`) so a test
can read back what was drawn.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from monkey.eval.tables import dataset_label

if TYPE_CHECKING:
    from monkey.eval.sweep import Parameter, Sweep

DODGE = 0.08  # category-axis offset between series, in category widths
REFERENCE_GREYS = ("0.3", "0.6")
REFERENCE_STYLES = ("--", "-.")
UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def file_part(text: str) -> str:
    """A file-name-safe piece: keys keep their dots (`method.token`), anything else becomes `_`."""
    return UNSAFE.sub("_", text)


def series_of(sweep: Sweep, rows: pd.DataFrame, parameter: Parameter) -> dict[str, pd.DataFrame]:
    """label -> the sweep rows of one series (same method, same values of every other varying key)."""
    keys = [
        (row.method, tuple((k, v) for k, v in sweep.context.get(row.variant, {}).items() if k != parameter.key))
        for row in rows.itertuples()
    ]
    groups = list(dict.fromkeys(keys))
    methods = {method for method, _ in groups}
    series = {}
    for group in groups:
        method, others = group
        parts = [f"{k}={v}" for k, v in others]
        label = method if not parts else (", ".join(parts) if len(methods) == 1 else f"{method} ({', '.join(parts)})")
        series[label] = rows[[k == group for k in keys]]
    return series


def draw_series(ax, label: str, rows: pd.DataFrame, metric: str, parameter: Parameter, x: np.ndarray, color) -> None:
    mean = rows[metric].to_numpy(float)
    low, high = rows[f"{metric}_ci_low"].to_numpy(float), rows[f"{metric}_ci_high"].to_numpy(float)
    order = np.argsort(x, kind="stable")
    x, mean, low, high = x[order], mean[order], low[order], high[order]
    if parameter.numeric and len(x) > 1:
        ax.plot(x, mean, "o-", color=color, label=label, gid=f"mean:{label}")
        ax.fill_between(x, low, high, color=color, alpha=0.2, lw=0, gid=f"band:{label}")
        return
    bars = ax.errorbar(x, mean, yerr=[mean - low, high - mean], fmt="o", color=color, capsize=3, label=label)
    bars.lines[0].set_gid(f"mean:{label}")
    bars.lines[2][0].set_gid(f"interval:{label}")


def draw_lines(ax, rows: pd.DataFrame, metric: str) -> None:
    """Fixed methods and references: a horizontal line at the mean over a faint band of its interval."""
    counts = {"reference": 0, "fixed": 0}
    for row in rows.to_dict("records"):
        if np.isnan(row[metric]):
            continue
        reference = row["role"] == "reference"
        k = counts[row["role"]]
        counts[row["role"]] += 1
        color = REFERENCE_GREYS[k % len(REFERENCE_GREYS)] if reference else f"C{(8 + k) % 10}"
        style = REFERENCE_STYLES[k % len(REFERENCE_STYLES)] if reference else ":"
        label = f"{row['variant']} (reference)" if reference else row["variant"]
        ax.axhline(row[metric], ls=style, color=color, lw=1.2, label=label, gid=f"line:{label}")
        ax.axhspan(row[f"{metric}_ci_low"], row[f"{metric}_ci_high"], color=color, alpha=0.08, lw=0)


def metric_figure(sweep: Sweep, dataset: str, metric: str, parameter: Parameter) -> Figure | None:
    """The figure of `metric` against `parameter` on `dataset`; None when no sweep point has the metric."""
    rows = sweep.table[sweep.table["dataset"] == dataset]
    points = rows[(rows["role"] == "sweep") & rows[parameter.key].notna() & rows[metric].notna()]
    if points.empty:
        return None
    width = max(6.4, 2.5 + 0.6 * len(parameter.labels)) if not parameter.numeric else 6.4
    fig, ax = plt.subplots(figsize=(width, 4.8))
    series = series_of(sweep, points, parameter)
    for index, (label, group) in enumerate(series.items()):
        if parameter.numeric:
            x = group[parameter.key].to_numpy(float)
        else:
            nudge = (index - (len(series) - 1) / 2) * DODGE
            x = np.array([parameter.labels.index(v) + nudge for v in group[parameter.key]], dtype=float)
        draw_series(ax, label, group, metric, parameter, x, f"C{index % 8}")
    draw_lines(ax, rows[rows["role"] != "sweep"], metric)
    if parameter.numeric:
        ticks = sorted(set(points[parameter.key].astype(float)))
        if len(ticks) <= 12:
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    else:
        rotate = max(len(label) for label in parameter.labels) > 8
        ax.set_xticks(range(len(parameter.labels)), parameter.labels, rotation=30 if rotate else 0)
        if rotate:
            plt.setp(ax.get_xticklabels(), ha="right")
        ax.set_xlim(-0.5, len(parameter.labels) - 0.5)
    name = sweep.metric_labels.get(metric, metric)
    ax.set_xlabel(parameter.key)
    ax.set_ylabel(name)
    ax.set_title(f"{dataset_label(dataset)}: {name} vs {parameter.key} (mean, {sweep.confidence:.0%} CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def sweep_plots(sweep: Sweep, out_dir: Path) -> list[Path]:
    """sweep_<dataset>_<metric>_vs_<param>.png and .pdf for every dataset, metric and parameter."""
    paths: list[Path] = []
    for dataset in sweep.datasets:
        for metric in sweep.metrics:
            for parameter in (p for p in sweep.parameters if p.key in sweep.plotted):
                fig = metric_figure(sweep, dataset, metric, parameter)
                if fig is None:
                    continue
                stem = f"sweep_{file_part(dataset)}_{file_part(metric)}_vs_{file_part(parameter.key)}"
                for suffix in (".png", ".pdf"):
                    fig.savefig(out_dir / f"{stem}{suffix}", dpi=150, bbox_inches="tight")  # legend outside
                    paths.append(out_dir / f"{stem}{suffix}")
                plt.close(fig)
    return paths
