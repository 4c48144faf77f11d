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

from monkey.atomic import atomic_savefig

if TYPE_CHECKING:
    from monkey.eval.sweep import Parameter, Sweep

DODGE = 0.08  # category-axis offset between series, in category widths
REFERENCE_GREYS = ("0.3", "0.6")
REFERENCE_STYLES = ("--", "-.")
UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def file_part(text: str) -> str:
    """A file-name-safe piece: keys keep their dots (`method.token`), anything else becomes `_`."""
    return UNSAFE.sub("_", text)


def axis_key(sweep: Sweep, variant: str, axis: list[Parameter]) -> str | None:
    """The axis key a variant's method varies (a shared axis holds one key per method)."""
    varied = sweep.context.get(variant, {})
    return next((p.key for p in axis if p.key in varied), None)


def series_of(sweep: Sweep, rows: pd.DataFrame, axis: list[Parameter]) -> dict[str, pd.DataFrame]:
    """label -> the sweep rows of one series (same method, same values of every other varying key)."""
    on_axis = {p.key for p in axis}
    keys = [
        (row.method, tuple((k, v) for k, v in sweep.context.get(row.variant, {}).items() if k not in on_axis))
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


def draw_series(ax, label: str, rows: pd.DataFrame, metric: str, numeric: bool, x: np.ndarray, color) -> None:
    mean = rows[metric].to_numpy(float)
    low, high = rows[f"{metric}_ci_low"].to_numpy(float), rows[f"{metric}_ci_high"].to_numpy(float)
    order = np.argsort(x, kind="stable")
    x, mean, low, high = x[order], mean[order], low[order], high[order]
    if numeric and len(x) > 1:
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


def axis_label(sweep: Sweep, axis: list[Parameter]) -> str:
    """`method.token`, or for a shared axis `method.scale (ip_adapter) / method.ip_scale (monkey)`."""
    if len(axis) == 1:
        return axis[0].key
    method_of = dict(zip(sweep.table["variant"], sweep.table["method"], strict=False))
    parts = []
    for parameter in axis:
        methods = sorted({method_of[v] for v, varied in sweep.context.items() if parameter.key in varied})
        parts.append(f"{parameter.key} ({', '.join(methods)})")
    return " / ".join(parts)


def axis_values(sweep: Sweep, rows: pd.DataFrame, axis: list[Parameter]) -> pd.Series:
    """Each row's value on the axis (NaN/None where its method does not vary an axis key)."""
    keys = [axis_key(sweep, variant, axis) for variant in rows["variant"]]
    return pd.Series([rows.at[i, k] if k else None for i, k in zip(rows.index, keys, strict=True)], index=rows.index)


def metric_figure(sweep: Sweep, dataset: str, metric: str, axis: list[Parameter]) -> Figure | None:
    """The figure of `metric` against the axis' key(s) on `dataset`; None when no sweep point has the metric."""
    rows = sweep.table[sweep.table["dataset"] == dataset]
    x_value = axis_values(sweep, rows, axis)
    points = rows[(rows["role"] == "sweep") & x_value.notna() & rows[metric].notna()]
    if points.empty:
        return None
    numeric, labels = axis[0].numeric, axis[0].labels  # a shared axis is numeric; a categorical one has one key
    width = 6.4 if numeric else max(6.4, 2.5 + 0.6 * len(labels))
    fig, ax = plt.subplots(figsize=(width, 4.8))
    series = series_of(sweep, points, axis)
    for index, (label, group) in enumerate(series.items()):
        values = x_value[group.index]
        if numeric:
            x = values.to_numpy(float)
        else:
            nudge = (index - (len(series) - 1) / 2) * DODGE
            x = np.array([labels.index(v) + nudge for v in values], dtype=float)
        draw_series(ax, label, group, metric, numeric, x, f"C{index % 8}")
    draw_lines(ax, rows[rows["role"] != "sweep"], metric)
    if numeric:
        ticks = sorted(set(x_value[points.index].astype(float)))
        if len(ticks) <= 12:
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    else:
        rotate = max(len(label) for label in labels) > 8
        ax.set_xticks(range(len(labels)), labels, rotation=30 if rotate else 0)
        if rotate:
            plt.setp(ax.get_xticklabels(), ha="right")
        ax.set_xlim(-0.5, len(labels) - 0.5)
    name, along = sweep.metric_labels.get(metric, metric), axis_label(sweep, axis)
    ax.set_xlabel(along)
    ax.set_ylabel(name)
    ax.set_title(f"{dataset_label(dataset)}: {name} vs {along} (mean, {sweep.confidence:.0%} CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def sweep_plots(sweep: Sweep, out_dir: Path) -> list[Path]:
    """sweep_<dataset>_<metric>_vs_<key>[+<key>].png and .pdf for every dataset, metric and axis."""
    paths: list[Path] = []
    for dataset in sweep.datasets:
        for metric in sweep.metrics:
            for axis in sweep.axes:
                fig = metric_figure(sweep, dataset, metric, axis)
                if fig is None:
                    continue
                along = "+".join(file_part(p.key) for p in axis)
                stem = f"sweep_{file_part(dataset)}_{file_part(metric)}_vs_{along}"
                for suffix in (".png", ".pdf"):
                    atomic_savefig(fig, out_dir / f"{stem}{suffix}", dpi=150, bbox_inches="tight")  # legend outside
                    paths.append(out_dir / f"{stem}{suffix}")
                plt.close(fig)
    return paths
