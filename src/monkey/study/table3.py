"""Table 3 (times each method's image was chosen best) in CSV, Markdown and LaTeX, beside the paper's.

Counts depend on how many people answered how many questions, so every cell also gives the share of
answers; the paper's row (30 people x 20 questions per dataset) is compared by share. The paper's
shares are over its six methods, so they compare directly only when a study shows the same methods.
"""

from importlib import resources
from pathlib import Path

import pandas as pd

from monkey.errors import DataError
from monkey.study.stats import AGGREGATED

DATASET_LABELS = {"dreambooth": "DreamBooth", "magic": "Magic", AGGREGATED: "Aggregated"}


def paper_table3_path() -> Path:
    return Path(str(resources.files("monkey.results") / "paper" / "table3.csv"))


def read_paper_table3(path: Path) -> pd.DataFrame:
    """The paper's counts, index dataset (+ aggregated = their sum), columns paper method names."""
    frame = pd.read_csv(path)
    if list(frame.columns) != ["dataset", "method", "count"]:
        raise DataError(f"{path}: columns must be dataset,method,count (found {list(frame.columns)})")
    wide = frame.pivot_table(index="dataset", columns="method", values="count", aggfunc="sum", sort=False)
    wide.loc[AGGREGATED] = wide.sum()
    return wide.astype(int)


def table3_long(ours: pd.DataFrame, paper: pd.DataFrame, paper_names: dict[str, str]) -> pd.DataFrame:
    """One row per (dataset, method): our count and share, the paper's count and share (if it has one)."""
    rows = []
    for dataset, counts in ours.iterrows():
        total = counts.sum()
        paper_row = paper.loc[dataset] if dataset in paper.index else None
        for method, count in counts.items():
            name = paper_names.get(method, "")
            has_paper = paper_row is not None and name in paper_row.index
            rows.append(
                {
                    "dataset": dataset,
                    "method": method,
                    "count": int(count),
                    "share": count / total if total else float("nan"),
                    "paper_method": name,
                    "paper_count": int(paper_row[name]) if has_paper else None,
                    "paper_share": paper_row[name] / paper_row.sum() if has_paper else None,
                }
            )
    return pd.DataFrame(rows)


def cell(count, share) -> str:
    return "" if pd.isna(count) else f"{int(count)} ({100 * share:.0f}%)"


def table3_rows(long: pd.DataFrame) -> tuple[list[str], list[tuple[str, list[str]]]]:
    methods = list(dict.fromkeys(long["method"]))
    rows = []
    for dataset, group in long.groupby("dataset", sort=False):
        label = DATASET_LABELS.get(dataset, dataset)
        rows.append((label, [cell(r["count"], r["share"]) for _, r in group.iterrows()]))
        if group["paper_count"].notna().any():
            rows.append((f"{label} (paper)", [cell(r["paper_count"], r["paper_share"]) for _, r in group.iterrows()]))
    return methods, rows


def table3_markdown(long: pd.DataFrame) -> str:
    methods, rows = table3_rows(long)
    lines = ["| data | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    return text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")


def table3_latex(long: pd.DataFrame) -> str:
    methods, rows = table3_rows(long)
    lines = [
        r"\begin{tabular}{l" + "r" * len(methods) + "}",
        r"\toprule",
        "data & " + " & ".join(latex_escape(m) for m in methods) + r" \\",
        r"\midrule",
        *[latex_escape(label) + " & " + " & ".join(latex_escape(c) for c in cells) + r" \\" for label, cells in rows],
        r"\bottomrule",
        r"\end{tabular}",
    ]
    return "\n".join(lines) + "\n"
