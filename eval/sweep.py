"""Sweep reports: the run folders of a multirun as one parameter sweep, a table and a plot per metric.

A sweep's jobs differ in a few config keys (`method.token=0,1,2,3`, `method.layers=[...],[...]`). The
swept parameters are the keys whose values differ across the folders of one method: the keys of the
jobs' Hydra overrides, or, for folders without overrides, the keys of their resolved configs. Keys that
never change what is generated (hydra.job.config.override_dirname.exclude_keys in conf/config.yaml,
`eval`, `logger`) are never parameters. `--sweep KEY` names them instead.

Every variant of a method with a varying parameter is a sweep point; a method run at one setting
(`fixed`) and the reference rows (`eval.report.reference_methods`) are drawn as horizontal lines.
Numeric keys swept by different methods share one plot axis (`method.scale` of the plain adapter
beside MONKEY's `method.ip_scale`).

Files written to the report folder (only when some parameter varies):
    sweep.csv    a row per variant and dataset: the parameter values, then per metric mean, ci_low, ci_high
    sweep.md     the same as Markdown tables, one per dataset
    sweep_<dataset>_<metric>_vs_<key>[+<key>].png / .pdf    (monkey.eval.sweep_plots)
"""

import json
import math
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from monkey.eval.collect import NOT_RUN_CONFIG, hydra_dirs, run_config, run_overrides
from monkey.eval.sweep_plots import sweep_plots
from monkey.eval.tables import dataset_label, ordered_datasets
from omegaconf import OmegaConf

from monkey.atomic import atomic_write_bytes
from monkey.errors import ConfigError

ROLES = ("sweep", "fixed", "reference")  # table order: sweep points, methods run at one setting, references
MISSING = "—"  # a parameter a row's method does not have (references, other methods)


class SweepKeyError(ConfigError):
    """A parameter named with --sweep / eval.report.sweep that does not vary across one method's folders."""


@cache
def not_swept_keys() -> tuple[str, ...]:
    """Keys that never change what is generated: the ones left out of run folder names, plus eval/logger."""
    config = OmegaConf.load(str(resources.files("monkey.conf") / "config.yaml"))
    excluded = OmegaConf.select(config, "hydra.job.config.override_dirname.exclude_keys", default=[]) or []
    return (*excluded, *NOT_RUN_CONFIG, "hydra")


def is_swept_candidate(key: str) -> bool:
    return not any(key == k or key.startswith(f"{k}.") for k in not_swept_keys())


def config_leaves(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"method": {"token": 1}}` -> `{"method.token": 1}`, lists kept as lists (collect.flatten makes them text)."""
    leaves: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            leaves.update(config_leaves(value, f"{path}."))
        else:
            leaves[path] = value
    return leaves


def job_number(run_dir: Path) -> int | None:
    """The job's index in its multirun (`hydra.job.num`): the order the sweep's overrides listed the values."""
    paths = hydra_dirs(run_dir)
    hydra_file = paths[0].parent / "hydra.yaml" if paths else None
    if not hydra_file or not hydra_file.is_file():
        return None
    number = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.job.num", default=None)
    return int(number) if isinstance(number, int) else None


@dataclass
class Folder:
    """One run folder's candidate parameters: key -> native value, and the keys its overrides set."""

    run_dir: str
    job: int | None
    values: dict[str, Any]
    overridden: list[str]


def read_folder(run_dir: str | Path) -> Folder:
    leaves = {k: v for k, v in config_leaves(run_config(Path(run_dir)) or {}).items() if is_swept_candidate(k)}
    values, overridden = dict(leaves), []
    for override in OverridesParser.create().parse_overrides(run_overrides(Path(run_dir))):
        key = override.key_or_group
        if not is_swept_candidate(key):
            continue
        overridden.append(key)
        if key not in leaves:  # a group (`model=tiny`) or a deleted key: the override says it best
            values[key] = None if override.is_delete() else override.value()
    return Folder(str(run_dir), job_number(Path(run_dir)), values, overridden)


def canonical(value: Any) -> str:
    """A comparable text for a value, so `1` and `1.0` count as one value."""

    def plain(v: Any) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, int | float):
            return float(v)
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return str(v)

    return json.dumps(plain(value), sort_keys=True)


def varying_keys(folders: list[Folder], keys: list[str]) -> list[str]:
    """The keys with more than one value; a folder without config or overrides (nothing known) is left out."""
    known = [f for f in folders if f.values]
    return [k for k in keys if len({canonical(f.values.get(k, MISSING)) for f in known}) > 1]


def detect_parameters(folders_by_method: dict[str, list[Folder]]) -> dict[str, list[str]]:
    """method -> its varying keys: those of its overrides; config keys only where no override varies."""
    found: dict[str, list[str]] = {}
    for method, folders in folders_by_method.items():
        if len(folders) < 2:
            continue
        overridden = list(dict.fromkeys(k for f in folders for k in f.overridden))
        keys = varying_keys(folders, overridden) or varying_keys(
            folders, list(dict.fromkeys(k for f in folders for k in f.values))
        )
        if keys:
            found[method] = keys
    return found


def short_layer(name: str) -> str:
    """`up_blocks.1.attentions.1.transformer_blocks.0.attn2` -> `up_blocks.1.attentions.1`."""
    for suffix in (".attn2", ".attn1", ".transformer_blocks.0"):
        name = name.removesuffix(suffix)
    return name


def format_value(value: Any) -> str:
    """A readable label: `0.5`, `[2, 3]`, `up_blocks.1.attentions.1`, two layers joined by ` + `."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return short_layer(value)
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, str) for v in value):
            return " + ".join(short_layer(v) for v in value)
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class Parameter:
    """A swept key, its axis kind and its values in axis order (numbers ascending, else the sweep's order)."""

    key: str
    numeric: bool
    labels: list[str]  # display labels in axis order
    values: dict[str, Any] = field(default_factory=dict)  # run_dir -> the table's value (number or label)


def make_parameter(key: str, folders: list[Folder]) -> Parameter:
    present = [f for f in folders if key in f.values]
    numeric = bool(present) and all(is_number(f.values[key]) for f in present)
    if numeric:
        values = {f.run_dir: float(f.values[key]) for f in present}
        labels = [format_value(v) for v in sorted(set(values.values()))]
    else:
        launched = sorted(present, key=lambda f: (f.job is None, f.job or 0, f.run_dir))
        values = {f.run_dir: format_value(f.values[key]) for f in present}
        labels = list(dict.fromkeys(values[f.run_dir] for f in launched))
    return Parameter(key, numeric, labels, values)


def position(parameter: Parameter, value: Any) -> float:
    """Where a value sits on the axis: itself for numbers, its category index otherwise (missing: last)."""
    if parameter.numeric:
        return float(value) if is_number(value) else math.inf
    return float(parameter.labels.index(value)) if value in parameter.labels else math.inf


def normalise_key(key: str) -> str:
    return key.removeprefix("cfg.")


def choose_parameters(
    folders_by_method: dict[str, list[Folder]], detected: dict[str, list[str]], named: list[str] | None
) -> list[str]:
    """The detected keys, or the named ones after checking each varies within some method's folders."""
    varying = list(dict.fromkeys(k for keys in detected.values() for k in keys))
    if not named:
        return varying
    all_folders = [f for folders in folders_by_method.values() for f in folders]
    chosen = []
    for key in map(normalise_key, named):
        if any(key in varying_keys(folders, [key]) for folders in folders_by_method.values() if len(folders) > 1):
            chosen.append(key)
            continue
        holders = [f for f in all_folders if key in f.values]
        if not holders:
            why = "no run folder's config or overrides has this key"
        else:
            by_method = {
                m: sorted({format_value(f.values[key]) for f in fs if key in f.values})
                for m, fs in folders_by_method.items()
            }
            why = "it does not vary across the folders of any one method (values: " + "; ".join(
                f"{m}: {', '.join(v)}" for m, v in by_method.items() if v
            )
            why += ")"
        raise SweepKeyError(
            f"--sweep {key}: {why}. Keys that vary: {', '.join(varying) if varying else 'none'} "
            "(a sweep varies a key across one method's folders, e.g. method=monkey method.token=0,1,2,3)"
        )
    return list(dict.fromkeys(chosen))


@dataclass
class Sweep:
    """The sweep's parameters, the table (one row per variant x dataset) and what the plots need."""

    parameters: list[Parameter]  # the table's parameter columns: the plotted keys, then any other varying key
    axes: list[list[Parameter]]  # what each metric is drawn against: one key, or numeric keys of disjoint methods
    table: pd.DataFrame
    metrics: list[str]
    metric_labels: dict[str, str]
    datasets: list[str]
    confidence: float
    context: dict[str, dict[str, str]] = field(default_factory=dict)  # sweep variant -> every key its method varies
    plots: list[Path] = field(default_factory=list)


def sweep_table(
    summary: pd.DataFrame,
    variants: pd.DataFrame,
    parameters: list[Parameter],
    sweep_methods: set[str],
    references: list[str],
    metrics: list[str],
    level: str,
    datasets: list[str],
) -> pd.DataFrame:
    """Rows: variant x dataset (sweep points ordered along the parameters, then fixed methods, then
    references); columns: dataset, variant, method, role, the parameters, n, then per metric mean/CI."""
    rows = summary[(summary["level"] == level) & summary["metric"].isin(metrics)]
    run_of = dict(zip(variants["variant"], variants["run_dir"], strict=True))
    records = []
    for (variant, dataset), group in rows.groupby(["variant", "dataset"], sort=False):
        method = group["method"].iloc[0]
        role = "reference" if method in references else ("sweep" if method in sweep_methods else "fixed")
        record: dict[str, Any] = {"dataset": dataset, "variant": variant, "method": method, "role": role}
        for parameter in parameters:
            value = parameter.values.get(run_of.get(variant, ""), None) if role == "sweep" else None
            record[parameter.key] = value
        record["n"] = int(group["n"].max())
        by_metric = group.set_index("metric")
        for metric in metrics:
            stats = by_metric.loc[metric] if metric in by_metric.index else None
            for column, name in ((metric, "mean"), (f"{metric}_ci_low", "ci_low"), (f"{metric}_ci_high", "ci_high")):
                record[column] = float(stats[name]) if stats is not None else float("nan")
        records.append(record)
    table = pd.DataFrame(records)
    if table.empty:
        return table
    order = {d: i for i, d in enumerate(ordered_datasets(table["dataset"], datasets))}
    sort_key = pd.DataFrame(
        {
            "dataset": table["dataset"].map(order),
            "role": table["role"].map(ROLES.index),
            "method": table["method"],
            **{f"p{i}": [position(p, v) for v in table[p.key]] for i, p in enumerate(parameters)},
            "variant": table["variant"],
        }
    )
    return table.loc[sort_key.sort_values(list(sort_key.columns), kind="stable").index].reset_index(drop=True)


def shared_axes(parameters: list[Parameter], method_keys: dict[str, list[str]]) -> list[list[Parameter]]:
    """Numeric keys that no one method varies together share one axis (the plain IP-Adapter's
    `method.scale` beside MONKEY's `method.ip_scale`: both curves on one plot); any other key is alone."""
    axes: list[list[Parameter]] = []
    methods_of = {p.key: {m for m, keys in method_keys.items() if p.key in keys} for p in parameters}
    for parameter in parameters:
        shared = next(
            (
                axis
                for axis in axes
                if parameter.numeric
                and all(other.numeric and not methods_of[other.key] & methods_of[parameter.key] for other in axis)
            ),
            None,
        )
        if shared is None:
            axes.append([parameter])
        else:
            shared.append(parameter)
    return axes


def interval_cell(mean: float, low: float, high: float) -> str:
    """`mean [low, high]`; a dataset with one subject has a mean but no interval: `mean [n/a]`."""
    if math.isnan(mean):
        return "n/a"
    if math.isnan(low) or math.isnan(high):
        return f"{mean:.3f} [n/a]"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def sweep_markdown(sweep: Sweep) -> str:
    """One table per dataset: method, parameters, a `mean [low, high]` cell per metric, n."""
    keys = [p.key for p in sweep.parameters]
    heading = ["method", *[f"`{k}`" for k in keys], *[sweep.metric_labels.get(m, m) for m in sweep.metrics], "n"]
    lines = []
    for dataset in sweep.datasets:
        rows = sweep.table[sweep.table["dataset"] == dataset]
        if rows.empty:
            continue
        lines += [f"### {dataset_label(dataset)}", "", "| " + " | ".join(heading) + " |", "|---" * len(heading) + "|"]
        for row in rows.to_dict("records"):
            name = row["method"] if row["role"] == "sweep" else row["variant"]
            name += " (reference)" if row["role"] == "reference" else ""
            params = [MISSING if row[k] is None or row[k] != row[k] else format_value(row[k]) for k in keys]
            cells = [interval_cell(row[m], row[f"{m}_ci_low"], row[f"{m}_ci_high"]) for m in sweep.metrics]
            lines.append("| " + " | ".join([name, *params, *cells, str(row["n"])]) + " |")
        lines.append("")
    lines.append(
        f"Mean [{sweep.confidence:.0%} bootstrap interval]. Fixed methods (one setting) and reference rows "
        "are the horizontal lines of the plots, never sweep points."
    )
    return "\n".join(lines) + "\n"


def variant_folders(scores: pd.DataFrame, references: list[str]) -> pd.DataFrame:
    """One row per compared variant: variant, method, run_dir (references are never sweep points)."""
    rows = scores[~scores["method"].isin(references)]
    return rows[["variant", "method", "run_dir"]].drop_duplicates("variant").reset_index(drop=True)


def build_sweep(
    scores: pd.DataFrame, summary: pd.DataFrame, settings: dict[str, Any], named: list[str] | str | None = None
) -> Sweep | None:
    """The sweep over the merged folders, or None when nothing varies and no key was named."""
    named = [named] if isinstance(named, str) else named  # eval.report.sweep=method.token names one key
    references = list(settings["reference_methods"])
    variants = variant_folders(scores, references)
    folders = {run_dir: read_folder(run_dir) for run_dir in variants["run_dir"].unique()}
    folders_by_method = {
        method: [folders[r] for r in group["run_dir"].unique()] for method, group in variants.groupby("method")
    }
    detected = detect_parameters(folders_by_method)
    keys = choose_parameters(folders_by_method, detected, named)
    if not keys:
        return None
    sweep_methods = {m for m, fs in folders_by_method.items() if len(fs) > 1 and varying_keys(fs, keys)}
    method_keys = {  # every key that tells the variants of a sweep method apart, the named ones first
        m: varying_keys(folders_by_method[m], list(dict.fromkeys([*keys, *detected.get(m, [])]))) for m in sweep_methods
    }
    columns = list(dict.fromkeys([*keys, *(k for m in sorted(sweep_methods) for k in method_keys[m])]))
    swept_folders = [f for m in sorted(sweep_methods) for f in folders_by_method[m]]
    parameters = [make_parameter(key, swept_folders) for key in columns]
    context = {}  # sweep variant -> its values of its method's keys: the plots draw a series per context
    for method in sweep_methods:
        for variant, run_dir in variants.loc[variants["method"] == method, ["variant", "run_dir"]].itertuples(False):
            context[variant] = {k: format_value(folders[run_dir].values.get(k)) for k in method_keys[method]}
    metrics = [m for m in settings["metrics"] if m in set(summary["metric"])]
    datasets = ordered_datasets(summary["dataset"], settings["datasets"])
    table = sweep_table(
        summary, variants, parameters, sweep_methods, references, metrics, settings["level"], settings["datasets"]
    )
    confidence = settings["bootstrap"]["confidence"]
    axes = shared_axes([p for p in parameters if p.key in keys], method_keys)
    return Sweep(parameters, axes, table, metrics, settings["metric_labels"], datasets, confidence, context)


def write_sweep(sweep: Sweep | None, out_dir: Path) -> None:
    """sweep.csv, sweep.md and the per-metric plots (their paths go to `sweep.plots`) in `out_dir`. The
    sweep files of an earlier report there go first, so none is left from another sweep (or from none)."""
    for stale in [
        *out_dir.glob("sweep_*.png"),
        *out_dir.glob("sweep_*.pdf"),
        out_dir / "sweep.csv",
        out_dir / "sweep.md",
    ]:
        stale.unlink(missing_ok=True)
    if sweep is None:
        return
    atomic_write_bytes(out_dir / "sweep.csv", sweep.table.to_csv(index=False, float_format="%.6g").encode())
    atomic_write_bytes(out_dir / "sweep.md", sweep_markdown(sweep).encode("utf-8"))
    sweep.plots = sweep_plots(sweep, out_dir)


def sweep_section(sweep: Sweep | None, pareto_pngs: list[Path]) -> list[str]:
    """The report.md section: what was swept, the table, the plots."""
    if sweep is None:
        return []
    described = ", ".join(
        f"`{p.key}` ({'numeric' if p.numeric else 'categories'}: {', '.join(p.labels)}"
        + ("" if any(p in axis for axis in sweep.axes) else "; not plotted")
        + ")"
        for p in sweep.parameters
    )
    lines = ["## Sweep", "", f"Swept: {described}.", "", sweep_markdown(sweep)]
    lines += [f"![{p.stem}]({p.name})" for p in sweep.plots if p.suffix == ".png"]
    if pareto_pngs:
        lines += ["", "The Pareto plots above place every variant of the sweep as its own point."]
    return [*lines, ""]
