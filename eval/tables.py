"""The paper's Table 1 layout (CSV, Markdown, LaTeX) and the side-by-side with its reported numbers.

The side-by-side always uses image means (as the paper), compares the paper's numbers with the variants
run under `preset=paper`, and shows per method what `fair` changes.

Rows are variants, columns (dataset, metric) means. In Markdown and LaTeX the best value of a column
is bold and the second italic; reference rows (text-only, the real-image oracle) are listed below the
methods and never ranked. The last column names the Pareto frontiers a variant lies on.
"""

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd
from monkey.eval.pareto import pareto_mask

from monkey.errors import DataError

DATASET_LABELS = {"dreambooth": "DreamBooth", "magic": "Magic"}
PAPER_COLUMNS = ["method", "dataset", "clip_t", "dino", "clip_i"]
# our metric -> the paper column it is compared with: the paper's DINO came from the reference code's
# DINO v1 ViT-S/16, so `dino_v1` is compared with it; `dino` (DINOv2, the paper's text) is shown beside
DEFAULT_PAPER_METRICS: dict[str, str | None] = {"clip_t": "clip_t", "dino_v1": "dino", "dino": None, "clip_i": "clip_i"}


def dataset_label(name: str) -> str:
    return DATASET_LABELS.get(name, name)


def ordered_datasets(present: Iterable[str], preferred: list[str]) -> list[str]:
    present = list(dict.fromkeys(present))
    return [d for d in preferred if d in present] + sorted(d for d in present if d not in preferred)


def is_reference(method: str, references: list[str]) -> bool:
    return method in references


def table1_frame(
    summary: pd.DataFrame, metrics: list[str], datasets: list[str], references: list[str], level: str = "image"
) -> pd.DataFrame:
    """Wide means: index variant (methods first, then references), columns (dataset, metric)."""
    rows = summary[(summary["level"] == level) & summary["metric"].isin(metrics)]
    wide = rows.pivot_table(index="variant", columns=["dataset", "metric"], values="mean", aggfunc="first")
    columns = [(d, m) for d in ordered_datasets(rows["dataset"], datasets) for m in metrics]
    wide = wide.reindex(columns=pd.MultiIndex.from_tuples(columns, names=["dataset", "metric"]))
    method_of = dict(zip(rows["variant"], rows["method"], strict=False))
    ranked = sorted(v for v in wide.index if not is_reference(method_of[v], references))
    anchors = sorted(v for v in wide.index if is_reference(method_of[v], references))
    wide = wide.reindex(ranked + anchors)
    wide.attrs["references"] = anchors
    return wide


def shown(value: float) -> float:
    """The value as the tables print it (DIGITS decimals): ranks are decided on what the reader sees."""
    return float("nan") if np.isnan(value) else float(fmt(value))


def rank_marks(wide: pd.DataFrame) -> pd.DataFrame:
    """'best' / 'second' / '' per cell, by column, higher is better, on the shown precision: two cells
    that print alike are tied (both bold), never one bold and one italic. Reference rows are not ranked."""
    marks = pd.DataFrame("", index=wide.index, columns=wide.columns)
    ranked = [v for v in wide.index if v not in wide.attrs.get("references", [])]
    for column in wide.columns:
        if column[1] in wide.attrs.get("unranked", []):  # e.g. subject_area: a size, higher is not better
            continue
        values = wide.loc[ranked, column].dropna().map(shown)
        distinct = sorted(set(values), reverse=True)
        for mark, target in zip(("best", "second"), distinct, strict=False):
            marks.loc[values.index[values == target], column] = mark
    return marks


def table1_stats(summary: pd.DataFrame, wide: pd.DataFrame, level: str = "image") -> dict[str, pd.DataFrame]:
    """ci_low, ci_high and n per Table 1 cell (aligned with `wide`): each mean is printed with them."""
    rows = summary[summary["level"] == level]
    out = {}
    for name in ("ci_low", "ci_high", "n"):
        frame = rows.pivot_table(
            index="variant", columns=["dataset", "metric"], values=name, aggfunc="first", dropna=False
        )
        out[name] = frame.reindex(index=wide.index, columns=wide.columns)
    return out


def pareto_membership(
    summary: pd.DataFrame,
    pairs: list[tuple[str, str]],
    references: list[str],
    labels: dict[str, str],
    level: str = "image",
) -> dict[str, list[str]]:
    """variant -> the frontiers it lies on, e.g. ['DreamBooth CLIP-I', 'DreamBooth DINO']."""
    rows = summary[(summary["level"] == level) & ~summary["method"].isin(references)]
    membership: dict[str, list[str]] = {}
    datasets = list(dict.fromkeys(rows["dataset"]))
    for dataset in datasets:
        means = rows[rows["dataset"] == dataset].pivot_table(index="variant", columns="metric", values="mean")
        for x, y in pairs:
            if x not in means or y not in means:
                continue
            mask = pareto_mask(means[x].to_numpy(), means[y].to_numpy())
            name = f"{dataset_label(dataset)} {labels.get(y, y)}" if len(datasets) > 1 else labels.get(y, y)
            for variant in means.index[mask]:
                membership.setdefault(variant, []).append(name)
    return membership


def table1_csv(wide: pd.DataFrame, membership: dict[str, list[str]], settings: dict | None = None) -> pd.DataFrame:
    """Table 1 flat: `<dataset>:<metric>` means, the frontiers, and with `settings` each row's size and pairing."""
    flat = wide.copy()
    flat.columns = [f"{d}:{m}" for d, m in wide.columns]
    flat.insert(0, "reference", [v in wide.attrs.get("references", []) for v in wide.index])
    flat["pareto"] = ["; ".join(membership.get(v, [])) for v in wide.index]
    if settings is not None:
        flat["size"] = [settings[v].size_text if v in settings else "" for v in wide.index]
        flat["pairing"] = [settings[v].pairing if v in settings else "" for v in wide.index]
    return flat.reset_index()


DIGITS = 3  # decimals of every printed score


def fmt(value: float, digits: int = DIGITS) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def cell_text(value: float, mark: str, stats: dict[str, pd.DataFrame] | None, variant: str, column) -> str:
    """`**0.262** [0.250, 0.274] n=40`: the mean, styled by its rank, with its interval and image count."""
    text = {"best": "**{}**", "second": "*{}*", "": "{}"}[mark].format(fmt(value))
    if stats is None or np.isnan(value):
        return text
    n = stats["n"].loc[variant, column]
    count = "" if pd.isna(n) else f" n={int(n)}"
    return text + interval(stats["ci_low"].loc[variant, column], stats["ci_high"].loc[variant, column]) + count


def table1_markdown(
    wide: pd.DataFrame,
    marks: pd.DataFrame,
    membership: dict[str, list[str]],
    labels: dict,
    stats: dict[str, pd.DataFrame] | None = None,
    settings: dict | None = None,
) -> str:
    """Table 1 in Markdown. `stats` (table1_stats) adds each cell's interval and n; `settings`
    (monkey.eval.run_settings.row_settings) adds each row's generated size and pairing."""
    header = ["method"] + [f"{dataset_label(d)} {labels.get(m, m)}" for d, m in wide.columns] + ["Pareto"]
    if settings is not None:
        header += ["size (h x w)", "pairing"]
    rows = []
    for variant in wide.index:
        anchor = variant in wide.attrs.get("references", [])
        cells = [cell_text(wide.loc[variant, c], marks.loc[variant, c], stats, variant, c) for c in wide.columns]
        row = [f"{variant} (reference)" if anchor else variant, *cells, ", ".join(membership.get(variant, []))]
        if settings is not None:
            own = settings.get(variant)
            row += [own.size_text, own.pairing] if own else ["real images", ""]
        rows.append(row)
    note = (
        "\nBest of each column in **bold**, second in *italic*, ranked on the three decimals shown (cells that "
        "print alike are tied and marked alike); reference rows are not ranked."
    )
    if stats is not None:
        note += " Each cell: mean [95 % subject-bootstrap interval] n=images."
    return markdown_table(header, rows) + note + "\n"


def latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


def table1_latex(
    wide: pd.DataFrame,
    marks: pd.DataFrame,
    membership: dict[str, list[str]],
    labels: dict,
    settings: dict | None = None,
) -> str:
    """A booktabs tabular in the paper's layout: one column group per dataset; `settings` adds each row's
    generated size (intervals and n are in table1.md and summary.csv)."""
    datasets = list(dict.fromkeys(d for d, _ in wide.columns))
    per = len(wide.columns) // max(1, len(datasets))
    style = {"best": r"\textbf{%s}", "second": r"\textit{%s}", "": "%s"}
    extra = settings is not None
    lines = [r"\begin{tabular}{l" + "c" * len(wide.columns) + ("ll}" if extra else "l}"), r"\toprule"]
    groups = [rf"\multicolumn{{{per}}}{{c}}{{{latex_escape(dataset_label(d))}}}" for d in datasets]
    lines.append(" & " + " & ".join(groups) + (r" & & \\" if extra else r" & \\"))
    rules = [rf"\cmidrule(lr){{{2 + i * per}-{1 + (i + 1) * per}}}" for i in range(len(datasets))]
    lines.append("".join(rules))
    names = " & ".join(latex_escape(labels.get(m, m)) for _, m in wide.columns)
    lines.append("Method & " + names + (r" & Pareto & Size \\" if extra else r" & Pareto \\"))
    lines.append(r"\midrule")
    references = wide.attrs.get("references", [])
    for index, variant in enumerate(wide.index):
        if variant in references and (index == 0 or wide.index[index - 1] not in references):
            lines.append(r"\midrule")
        cells = [style[marks.loc[variant, c]] % fmt(wide.loc[variant, c]) for c in wide.columns]
        pareto = latex_escape(", ".join(membership.get(variant, [])))
        size = [latex_escape(settings[variant].size_text if variant in settings else "real images")] if extra else []
        lines.append(" & ".join([latex_escape(variant), *cells, pareto, *size]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def paper_points(
    paper: pd.DataFrame | None, dataset: str, x: str, y: str, paper_metrics: dict[str, str | None] | None = None
) -> pd.DataFrame:
    """The paper's reported (method, x, y) for a plot of our metrics x and y, or none.

    A paper number goes only on the axis of the backbone it was measured with: `paper_metrics` maps our
    metric to the paper column it is comparable to (default DEFAULT_PAPER_METRICS: `dino_v1` -> the
    paper's `dino`, which came from DINO v1; our `dino`, DINOv2, -> nothing). An axis with no such column
    gets no paper points at all, rather than numbers from another backbone.
    """
    empty = pd.DataFrame(columns=["method", x, y])
    if paper is None or paper.empty:
        return empty
    mapping = DEFAULT_PAPER_METRICS if paper_metrics is None else paper_metrics
    columns = mapping.get(x), mapping.get(y)
    if None in columns or not set(columns) <= set(paper.columns):
        return empty
    reported = paper[paper["dataset"] == dataset]
    return pd.DataFrame({"method": reported["method"], x: reported[columns[0]], y: reported[columns[1]]}).reset_index(
        drop=True
    )


def read_paper_table(path) -> pd.DataFrame:
    paper = pd.read_csv(path)
    missing = set(PAPER_COLUMNS) - set(paper.columns)
    if missing:
        raise DataError(f"paper table {path} lacks the columns {sorted(missing)}; expected {PAPER_COLUMNS}")
    return paper


def without_preset(variant: str) -> str:
    """A variant label with its `preset=...` part removed: pairs a method's fair and paper folders."""
    text = re.sub(r"preset=[^,)]*(, )?", "", variant)
    return text.replace(", )", ")").replace(" ()", "")


COMPARISON_COLUMNS = [
    "dataset",
    "paper_method",
    "variant",
    "preset",
    "metric",
    "paper_column",
    "paper",
    "ours",
    "ci_low",
    "ci_high",
    "n",
    "subjects",
    "diff",
    "fair_variant",
    "fair",
    "fair_ci_low",
    "fair_ci_high",
    "fair_minus_ours",
]


def paper_comparison(
    summary: pd.DataFrame, paper: pd.DataFrame, names: dict[str, str], metrics: dict[str, str | None]
) -> pd.DataFrame:
    """Long table: per paper row and our metric, the paper's number, ours (image-level mean and its
    subject-resampled interval), ours - paper, and, where the method also ran under `fair`, the fair
    variant's mean and fair - ours.

    Always over images (the paper's Table 1), whatever level Table 1 uses. `metrics` maps our metric to
    the paper column it is compared with (None: shown beside, not compared, e.g. DINOv2 when the
    paper's DINO is DINO v1). Per paper method the compared variants are those run under `paper`; a
    variant with no `paper` twin is compared itself (its `preset` column says so). Every paper method of
    a dataset we scored is listed; `variant` is empty where we did not run it.
    """
    ours = summary[(summary["level"] == "image") & summary["metric"].isin(list(metrics))].copy()
    ours["paper_method"] = ours["method"].map(names)
    if "preset" not in ours:
        ours["preset"] = "fair"
    rows = []

    def cell(hit: pd.DataFrame, column: str) -> float:
        return float(hit[column].iloc[0]) if len(hit) else float("nan")

    for dataset in sorted(set(paper["dataset"]) & set(ours["dataset"])):
        for _, reported in paper[paper["dataset"] == dataset].iterrows():
            matches = ours[(ours["dataset"] == dataset) & (ours["paper_method"] == reported["method"])]
            preset_of = dict(zip(matches["variant"], matches["preset"], strict=False))
            papers = sorted(v for v, p in preset_of.items() if p == "paper")
            fairs = sorted(v for v, p in preset_of.items() if p != "paper")
            twin = {v: next((f for f in fairs if without_preset(f) == without_preset(v)), "") for v in papers}
            compared = papers + [f for f in fairs if f not in twin.values()]
            for variant in compared or [""]:
                fair_variant = twin.get(variant, "")
                for metric, column in metrics.items():
                    hit = matches[(matches["variant"] == variant) & (matches["metric"] == metric)]
                    fair = matches[(matches["variant"] == fair_variant) & (matches["metric"] == metric)]
                    has_paper = column is not None and column in reported
                    rows.append(
                        {
                            "dataset": dataset,
                            "paper_method": reported["method"],
                            "variant": variant,
                            "preset": preset_of.get(variant, ""),
                            "metric": metric,
                            "paper_column": column or "",
                            "paper": float(reported[column]) if has_paper else float("nan"),
                            "ours": cell(hit, "mean"),
                            "ci_low": cell(hit, "ci_low"),
                            "ci_high": cell(hit, "ci_high"),
                            "n": int(hit["n"].iloc[0]) if len(hit) else 0,
                            "subjects": int(hit["subjects"].iloc[0]) if len(hit) and "subjects" in hit else 0,
                            "fair_variant": fair_variant,
                            "fair": cell(fair, "mean"),
                            "fair_ci_low": cell(fair, "ci_low"),
                            "fair_ci_high": cell(fair, "ci_high"),
                        }
                    )
    frame = pd.DataFrame(rows, columns=[c for c in COMPARISON_COLUMNS if c not in ("diff", "fair_minus_ours")])
    frame.insert(COMPARISON_COLUMNS.index("diff"), "diff", frame["ours"] - frame["paper"])
    frame["fair_minus_ours"] = frame["fair"] - frame["ours"]
    return frame[COMPARISON_COLUMNS]


def interval(low: float, high: float) -> str:
    return "" if np.isnan(low) or np.isnan(high) else f" [{fmt(low)}, {fmt(high)}]"


def signed(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:+.3f}"


def comparison_markdown(comparison: pd.DataFrame, labels: dict[str, str]) -> str:
    """One table per dataset, a row per (paper method, our variant, metric); `labels` names each metric
    with its backbone. The paper's column a metric is compared with is named in the `paper` cell."""
    if comparison.empty:
        return "No dataset of this report appears in the paper's table.\n"
    parts = []
    header = ["paper method", "ours (preset)", "metric", "paper", "ours [95% CI]", "ours - paper"]
    header += ["fair [95% CI]", "fair - ours"]
    for dataset, group in comparison.groupby("dataset", sort=False):
        rows = []
        for _, hit in group.iterrows():
            ours = f"{hit['variant']} ({hit['preset']})" if hit["variant"] else "not run"
            paper = fmt(hit["paper"]) + (f" ({hit['paper_column']})" if hit["paper_column"] else "")
            if not hit["paper_column"]:
                paper = "not compared"
            fair = fmt(hit["fair"]) + interval(hit["fair_ci_low"], hit["fair_ci_high"]) if hit["fair_variant"] else ""
            rows.append(
                [
                    hit["paper_method"],
                    ours,
                    labels.get(hit["metric"], hit["metric"]),
                    paper,
                    fmt(hit["ours"]) + interval(hit["ci_low"], hit["ci_high"]),
                    signed(hit["diff"]),
                    fair,
                    signed(hit["fair_minus_ours"]) if hit["fair_variant"] else "",
                ]
            )
        parts.append(f"### {dataset_label(dataset)}\n\n" + markdown_table(header, rows))
    return "\n".join(parts)
