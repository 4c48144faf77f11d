"""report/index.html: one page to navigate a report, and Table 1 traced back to what produced it.

Why: a report folder holds a dozen files (tables, plots, the gallery, the sweep) and nothing tied a
number in Table 1 to the images and configs behind it, although `scores.csv` carries both. The page
links every file of the report by kind, and renders Table 1 with each cell linking to
    rows/<hash>.csv                             the scored images behind the cell (one file per variant x dataset)
    <run folder>/configs/<method>-<hash>.json   every generation config those images were made with
Links are relative, so the page works wherever the report and run folders are opened together.
"""

import html
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from monkey.eval.score_store import ORACLE
from monkey.eval.tables import fmt

from monkey.atomic import atomic_write_bytes
from monkey.hashing import stable_hash
from monkey.names import path_name
from monkey.store import CONFIG_DIR

INDEX = "index.html"
ROWS_DIR = "rows"
# (section title, file patterns in the report folder), in page order
SECTIONS = (
    ("Report", ("report.md",)),
    ("Table 1", ("table1.md", "table1.csv", "table1.tex")),
    ("Against the paper", ("paper_comparison.md", "paper_comparison.csv")),
    ("Gallery", ("gallery.html",)),
    ("Sweep", ("sweep.md", "sweep.csv")),
    ("Agreement with people", ("agreement.md", "agreement.csv", "dreambench_alpha.csv")),
    ("Data", ("summary.csv", "scores.csv", "scores.parquet", "runs.csv")),
)
PICTURES = (("Pareto plots", "pareto_*"), ("Sweep plots", "sweep_*"), ("Image grids", "grid_*"))
ROW_COLUMNS = ("run_dir", "variant", "method", "dataset", "subject", "item_id", "seed", "prompt", "image")


@dataclass(frozen=True)
class CellSource:
    """What produced one (variant, dataset) block of Table 1: its rows file and config files."""

    rows_file: str  # relative to the report folder
    configs: tuple[tuple[str, str], ...]  # (config hash, relative link) for configs found on disk
    missing: tuple[str, ...]  # config hashes whose file the run folder does not hold


def relative_link(path: Path, out_dir: Path) -> str:
    return quote(os.path.relpath(path.resolve(), out_dir.resolve()))


def config_path(run_dir: str, method: str, config_hash: str) -> Path:
    """<run folder>/configs/<method>-<hash>.json, as monkey.store writes it (names checked the same way)."""
    name = f"{path_name(method, 'method')}-{path_name(str(config_hash), 'config_hash')}.json"
    return Path(run_dir) / CONFIG_DIR / name


def rows_file_name(variant: str, dataset: str) -> str:
    return f"{ROWS_DIR}/{stable_hash([variant, dataset], 16)}.csv"


def cell_rows(scores: pd.DataFrame, variant: str, dataset: str) -> pd.DataFrame:
    return scores[(scores["variant"] == variant) & (scores["dataset"] == dataset)]


def cell_source(rows: pd.DataFrame, variant: str, dataset: str, out_dir: Path) -> CellSource:
    """The config hashes of `rows` (a generated variant's; the oracle has none: real photos)."""
    configs, missing = [], []
    if "config_hash" in rows and not (rows["method"] == ORACLE).all():
        for (run_dir, method, config_hash), _ in rows.groupby(["run_dir", "method", "config_hash"], sort=True):
            path = config_path(run_dir, method, config_hash)
            if path.is_file():
                configs.append((str(config_hash), relative_link(path, out_dir)))
            else:
                missing.append(str(config_hash))
    return CellSource(rows_file_name(variant, dataset), tuple(configs), tuple(missing))


def write_cell_rows(scores: pd.DataFrame, metrics: list[str], out_dir: Path) -> dict[tuple[str, str], CellSource]:
    """rows/<hash>.csv per (variant, dataset): the rows of scores.csv behind its Table 1 cells, with a
    `config` column linking each row's config file. Rows files of an earlier report are removed first."""
    for stale in (out_dir / ROWS_DIR).glob("*.csv"):
        stale.unlink()
    sources = {}
    for (variant, dataset), rows in scores.groupby(["variant", "dataset"], sort=True):
        source = cell_source(rows, variant, dataset, out_dir)
        columns = [c for c in (*ROW_COLUMNS, "config_hash", *metrics) if c in rows]
        table = rows[columns].copy()
        if "config_hash" in rows and not (rows["method"] == ORACLE).all():
            table["config"] = [
                os.path.relpath(config_path(r, m, h).resolve(), (out_dir / ROWS_DIR).resolve())
                for r, m, h in zip(rows["run_dir"], rows["method"], rows["config_hash"], strict=True)
            ]
        atomic_write_bytes(out_dir / source.rows_file, table.to_csv(index=False, float_format="%.6g").encode())
        sources[(variant, dataset)] = source
    return sources


def cell_html(value: object, source: CellSource | None) -> str:
    text = fmt(float(value)) if isinstance(value, int | float) else html.escape(str(value))
    if source is None:
        return f"<td>{text}</td>"
    configs = " ".join(f'<a class="config" href="{link}">{html.escape(h[:8])}</a>' for h, link in source.configs)
    missing = " ".join(
        f'<span class="missing" title="no config file">{html.escape(h[:8])}</span>' for h in source.missing
    )
    return f'<td><a class="rows" href="{quote(source.rows_file)}">{text}</a><br><small>{configs}{missing}</small></td>'


def table1_html(table: pd.DataFrame, sources: dict[tuple[str, str], CellSource], labels: dict[str, str]) -> str:
    """Table 1 (the frame written to table1.csv); `<dataset>:<metric>` cells link to their sources."""
    head = "".join(f"<th>{html.escape(cell_title(c, labels))}</th>" for c in table.columns)
    body = []
    for row in table.to_dict("records"):
        cells = []
        for column, value in row.items():
            dataset, _, metric = str(column).partition(":")
            source = sources.get((row["variant"], dataset)) if metric and pd.notna(value) else None
            cells.append(cell_html(value, source))
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="table1"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def cell_title(column: str, labels: dict[str, str]) -> str:
    dataset, _, metric = column.partition(":")
    return f"{dataset} {labels.get(metric, metric)}" if metric else column


def files_html(out_dir: Path) -> str:
    parts = []
    for title, names in SECTIONS:
        present = [n for n in names if (out_dir / n).is_file()]
        if present:
            links = " · ".join(f'<a href="{quote(n)}">{html.escape(n)}</a>' for n in present)
            parts.append(f"<li><b>{html.escape(title)}</b>: {links}</li>")
    lists = f"<ul>{''.join(parts)}</ul>"
    for title, pattern in PICTURES:
        pngs = sorted(out_dir.glob(f"{pattern}.png"))
        if not pngs:
            continue
        figures = []
        for png in pngs:
            pdf = png.with_suffix(".pdf")
            extra = f' · <a href="{quote(pdf.name)}">pdf</a>' if pdf.is_file() else ""
            figures.append(
                f'<figure><a href="{quote(png.name)}"><img src="{quote(png.name)}" alt="{html.escape(png.stem)}" '
                f'loading="lazy"></a><figcaption>{html.escape(png.stem)}{extra}</figcaption></figure>'
            )
        lists += f"<h2>{html.escape(title)}</h2><div class='pictures'>{''.join(figures)}</div>"
    return lists


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1rem 2rem;color:#222}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}td:first-child{text-align:left}"
    ".pictures{display:flex;flex-wrap:wrap;gap:1rem}.pictures img{width:360px}.missing{color:#a00}"
)


def write_index(
    out_dir: Path, scores: pd.DataFrame, table: pd.DataFrame, metrics: list[str], labels: dict[str, str]
) -> Path:
    """Write out_dir/index.html (and rows/) for a report whose other files are already written."""
    out_dir = Path(out_dir)
    sources = write_cell_rows(scores, metrics, out_dir)
    page = (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>Report</title><style>{STYLE}</style>'
        f"</head><body><h1>Report</h1>{files_html(out_dir)}<h2>Table 1</h2>"
        "<p>Each number links to the scored images behind it (<code>rows/*.csv</code>); below it, the "
        "generation configs (<code>configs/&lt;method&gt;-&lt;hash&gt;.json</code>) those images were made with. "
        "Reference rows: the oracle scores real photos and has no config.</p>"
        f"{table1_html(table, sources, labels)}</body></html>\n"
    )
    path = out_dir / INDEX
    atomic_write_bytes(path, page.encode("utf-8"))
    return path
