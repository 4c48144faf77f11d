"""A report over one or many run folders: scores, summary, Table 1, the paper side by side, plots, grids.

Files written to the report folder (runs/<run.name>/report/ by default):
    scores.csv, scores.parquet   every scored image of every run folder, with the runs' config columns
    summary.csv                  per variant x dataset x metric x level: n, mean, std, 95 % bootstrap CI
    table1.csv / .md / .tex      the paper's Table 1 layout (best bold, second italic, Pareto column)
    paper_comparison.csv / .md   the paper's reported numbers, ours and the difference
    pareto_<dataset>_<y>_vs_<x>.png / .pdf
    grid_<dataset>.png           source on top, one row per method, one column per item
    sweep.csv / .md, sweep_<dataset>_<metric>_vs_<param>.png / .pdf
                                 when the folders form a sweep (monkey.eval.sweep)
    runs.csv                     the run folders merged, with their overrides
    gallery.html, gallery/       every image with prompt, seed, scores, mask overlay (monkey.eval.gallery)
    index.html, rows/            every file linked; Table 1 cells link their rows and configs (monkey.eval.index_page)
    report.md                    all of the above on one page
"""

import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from monkey.eval.aggregate import metric_columns, summarize
from monkey.eval.agreement_section import agreement_inputs, agreement_section, report_agreement
from monkey.eval.backbones import BackboneSpec, backbone_specs
from monkey.eval.collect import collect_scores, find_run_dirs, run_config
from monkey.eval.compare import coverage_warnings
from monkey.eval.gallery import write_gallery
from monkey.eval.grid import image_grid
from monkey.eval.index_page import write_index
from monkey.eval.judge import JUDGE_COLUMNS
from monkey.eval.masked_columns import SUBJECT_AREA, masked_flags_markdown
from monkey.eval.multi_subject import write_multi_subject
from monkey.eval.plots import pareto_plot
from monkey.eval.run_settings import RowSettings, row_settings
from monkey.eval.score_store import ORACLE
from monkey.eval.scoring import evaluate_run
from monkey.eval.sweep import Sweep, build_sweep, sweep_section, write_sweep
from monkey.eval.tables import (
    DEFAULT_PAPER_METRICS,
    comparison_markdown,
    ordered_datasets,
    paper_comparison,
    pareto_membership,
    rank_marks,
    read_paper_table,
    table1_csv,
    table1_frame,
    table1_latex,
    table1_markdown,
    table1_stats,
)
from omegaconf import DictConfig, OmegaConf

from monkey.atomic import atomic_to_parquet, atomic_write_bytes, remove_stale_temp_files
from monkey.errors import DataError
from monkey.hashing import to_plain
from monkey.study.agreement_run import Agreement

log = logging.getLogger(__name__)
REPORT_DIR = "report"


@dataclass
class Report:
    out_dir: Path
    run_dirs: list[Path]
    scores: pd.DataFrame
    summary: pd.DataFrame
    table1: pd.DataFrame
    comparison: pd.DataFrame
    plots: list[Path] = field(default_factory=list)
    grids: list[Path] = field(default_factory=list)
    sweep: Sweep | None = None
    agreement: Agreement | None = None  # "which metric agrees with people", when eval.report.agreement names a study


def paper_table_path(setting: str | None) -> Path:
    """The configured paper table, or the one shipped with the package (results/paper/table1.csv)."""
    path = Path(setting) if setting else Path(str(resources.files("monkey.results") / "paper" / "table1.csv"))
    if not path.is_file():
        raise DataError(
            f"eval.report.paper_table={str(path)!r} does not exist (a CSV with method,dataset,clip_t,dino,clip_i)"
        )
    return path


def write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_frame(path: Path, frame: pd.DataFrame) -> None:
    write_text(path, frame.to_csv(index=False, float_format="%.6g"))


def evaluate_folders(run_dirs: list[Path], eval_cfg: DictConfig, fallback_dataset: DictConfig | None) -> None:
    """Score whatever is not scored yet (nothing, after an evaluate stage), each folder with its own dataset."""
    for run_dir in run_dirs:
        config = run_config(run_dir)
        dataset = OmegaConf.create(config["dataset"]) if config and config.get("dataset") else fallback_dataset
        evaluate_run(run_dir, eval_cfg, dataset)


def build_report(
    paths: list[str | Path],
    out_dir: str | Path,
    eval_cfg: DictConfig,
    logger_cfg: DictConfig | None = None,
    dataset_cfg: DictConfig | None = None,
    evaluate: bool = True,
    config: dict[str, Any] | None = None,
    sweep: list[str] | None = None,
) -> Report:
    """Merge the run folders in `paths` (run or experiment folders) into one report in `out_dir`.
    `sweep` names the swept keys (default: eval.report.sweep, else those that vary; see monkey.eval.sweep)."""
    out_dir = Path(out_dir)
    remove_stale_temp_files(out_dir)  # a killed writer's leftovers; never a live writer's
    run_dirs = find_run_dirs(paths)
    if not run_dirs:
        raise DataError(f"no run folder (a folder holding manifest/) in {[str(p) for p in paths]}")
    if evaluate:
        evaluate_folders(run_dirs, eval_cfg, dataset_cfg)
    scores = collect_scores(run_dirs, eval_cfg.name)
    if scores.empty:
        raise DataError(f"no scores/{eval_cfg.name} in {[str(p) for p in run_dirs]}: run the evaluate stage first")
    for warning in coverage_warnings(scores):  # Table 1 ranks them side by side: say so (monkey.eval.compare)
        log.warning("%s", warning)
    settings = to_plain(eval_cfg.report)
    specs = backbone_specs(to_plain(eval_cfg.backbones))
    metrics = metric_columns(scores, {s.key: [s.image_metric, s.text_metric] for s in specs})
    boot = settings["bootstrap"]
    summary = summarize(scores, metrics, boot["samples"], boot["seed"], boot["confidence"])
    labels = settings["metric_labels"]
    references = list(settings["reference_methods"])
    level = settings["level"]
    table_metrics = [m for m in settings["metrics"] if m in metrics]
    table_metrics += [m for m in JUDGE_COLUMNS if m in metrics and m not in table_metrics]  # a judge rated them
    table_metrics += [m for m in settings.get("masked_metrics") or [] if m in metrics and m not in table_metrics]
    pairs = [tuple(pair) for pair in settings["pareto"] if set(pair) <= set(metrics)]
    swept = build_sweep(scores, summary, settings, sweep or settings.get("sweep"))  # a bad --sweep stops here
    people = agreement_inputs(settings.get("agreement"), eval_cfg.name, run_dirs, boot)  # a bad key stops here too

    out_dir.mkdir(parents=True, exist_ok=True)
    write_frame(out_dir / "scores.csv", scores)
    as_text = {c: str for c in scores.columns if scores[c].dtype == object}
    atomic_to_parquet(scores.astype(as_text), out_dir / "scores.parquet")
    write_frame(out_dir / "summary.csv", summary)
    write_frame(out_dir / "runs.csv", runs_table(scores))

    wide = table1_frame(summary, table_metrics, settings["datasets"], references, level)
    wide.attrs["unranked"] = [SUBJECT_AREA]  # a size, not a score: never bold
    marks = rank_marks(wide)
    membership = pareto_membership(summary, pairs, references, labels, level)
    made_with = row_settings(scores)  # variant -> generated size and pairing
    table = table1_csv(wide, membership, made_with)
    write_frame(out_dir / "table1.csv", table)
    table_md = table1_markdown(wide, marks, membership, labels, table1_stats(summary, wide, level), made_with)
    table_md += masked_flags_markdown(scores)  # the images each masked column leaves out, and why
    write_text(out_dir / "table1.md", table_md)
    write_text(out_dir / "table1.tex", table1_latex(wide, marks, membership, labels, made_with))

    paper = read_paper_table(paper_table_path(settings.get("paper_table")))
    paper_metrics = {m: c for m, c in (settings.get("paper_metrics") or DEFAULT_PAPER_METRICS).items() if m in metrics}
    comparison = paper_comparison(summary, paper, settings["paper_names"], paper_metrics)  # always image means
    comparison = with_row_settings(comparison, made_with)
    write_frame(out_dir / "paper_comparison.csv", comparison)
    comparison_md = comparison_markdown(comparison, backbone_labels(specs, labels)) + items_paragraph(
        comparison, made_with
    )
    write_text(out_dir / "paper_comparison.md", comparison_md)

    datasets = ordered_datasets(scores["dataset"], settings["datasets"])
    plots, grids = [], []
    for dataset in datasets:
        for x, y in pairs:
            stem = out_dir / f"pareto_{dataset}_{y}_vs_{x}"
            plots += pareto_plot(summary, dataset, x, y, stem, references, labels, paper, level, paper_metrics)
        grid = settings["grid"]
        path = image_grid(
            scores, dataset, out_dir / f"grid_{dataset}.png", grid["columns"], grid["max_methods"], grid["cell"]
        )
        if path:
            grids.append(path)
    write_sweep(swept, out_dir)
    write_gallery(run_dirs, out_dir, eval_cfg.name)  # gallery.html: every image, filterable (monkey.eval.gallery)
    agreement = report_agreement(people, out_dir)  # agreement.{csv,md} (monkey.eval.agreement_section)
    multi = write_multi_subject(run_dirs, scores, out_dir, eval_cfg)  # images of several subjects, if any
    report = Report(out_dir, run_dirs, scores, summary, table, comparison, plots, grids, swept, agreement)
    write_text(out_dir / "report.md", report_markdown(report, table_md, comparison_md, eval_cfg, level, multi))
    write_index(out_dir, scores, table, table_metrics, labels)  # last: it links the files written above
    generated = int((scores["method"] != ORACLE).sum())
    log.info(
        "report: %d images (+ %d oracle rows) of %d run folders -> %s",
        generated,
        len(scores) - generated,
        len(run_dirs),
        out_dir,
    )
    if logger_cfg is not None and logger_cfg.get("name") == "wandb":
        from monkey.eval.wandb_logger import log_report

        log_report(report, logger_cfg, config or {"eval": to_plain(eval_cfg)})
    return report


# The items behind the paper's numbers: each script loops `for k,row in enumerate(data)` and prompts
# `real_test_prompt_list[k % len(real_test_prompt_list)]`: jamesBaker361/monkey main_seg.py:189,197 (3dbb7ce),
# jamesBaker361/RectifID evaluation.py:66,70 (cf1fdc5), jamesBaker361/TF-TI2I evaluation.py:129,136 (009073f),
# jamesBaker361/freegraftor evaluation.py:105,110 (a72cb77)
PAPER_ITEMS = (
    "The paper's numbers: MONKEY's reference code and the RectifID, TF-TI2I and FreeGraftor forks made one image "
    "per source image, dataset row k with location k mod 20 (`plan.pairing=cycle`; the MasaCtrl fork's "
    "script is not on record), each method at its `paper` preset's size."
)


def with_row_settings(comparison: pd.DataFrame, made_with: dict[str, RowSettings]) -> pd.DataFrame:
    """The comparison with each of our variants' generated size and pairing beside its numbers."""
    out = comparison.copy()
    out["size"] = [made_with[v].size_text if v in made_with else "" for v in out["variant"]]
    out["pairing"] = [made_with[v].pairing if v in made_with else "" for v in out["variant"]]
    return out


def items_paragraph(comparison: pd.DataFrame, made_with: dict[str, RowSettings]) -> str:
    """Under the comparison: which items the paper's numbers and each of ours averaged over."""
    ours = [v for v in dict.fromkeys(comparison["variant"]) if v and v in made_with]
    lines = ["", PAPER_ITEMS, "", "Ours:", ""]
    lines += [f"- {v}: {made_with[v].pairing}, {made_with[v].size_text} px" for v in ours]
    return "\n".join(lines) + "\n"


def runs_table(scores: pd.DataFrame) -> pd.DataFrame:
    columns = ["run", "run_dir", "variant", "method"] + (["overrides"] if "overrides" in scores else [])
    grouped = scores[scores["method"] != ORACLE].groupby(columns, dropna=False, sort=True)
    return grouped.size().rename("images").reset_index()


def backbone_text(spec: BackboneSpec) -> str:
    """What a backbone is, in words a reader can check: architecture, weights, input."""
    tiny = " (tiny random)" if spec.tiny is not None else ""
    if spec.kind == "timm":
        return (
            f"timm `{spec.model_name}`{tiny}, input {spec.crop} px (short side resized to {spec.resize}, bicubic, "
            f"centre crop {spec.crop}, ImageNet mean/std), CLS token"
        )
    weights = f"weights `{spec.pretrained}`" if spec.pretrained else "no pretrained tag"
    gelu = ", QuickGELU" if spec.force_quick_gelu else ""
    return f"open_clip `{spec.model_name}`{tiny}, {weights}{gelu}, its own image transform and tokenizer"


def backbone_labels(specs: list[BackboneSpec], labels: dict[str, str]) -> dict[str, str]:
    """metric -> its label with the backbone behind it, e.g. `DINO v1 [vit_small_patch16_224.dino]`."""
    out = dict(labels)
    for spec in specs:
        size = f", {spec.crop} px" if spec.kind == "timm" else ""
        for metric in (spec.image_metric, spec.text_metric):
            if metric:
                out[metric] = f"{labels.get(metric, metric)} [{spec.model_name}{size}]"
    return out


def metrics_paragraph(specs: list[BackboneSpec], level: str) -> list[str]:
    """The report header's account of every number: backbones, CLIP-T's text, what the intervals resample."""
    lines = [
        f"- `{spec.image_metric}`"
        + (f", `{spec.text_metric}`" if spec.text_metric else "")
        + ": "
        + backbone_text(spec)
        for spec in specs
    ]
    clip = next((spec for spec in specs if spec.text_metric), None)
    if clip is not None:
        lines.append(
            f"- `{clip.text_metric}` compares each image with the exact prompt stored in its manifest row (the "
            f"text it was generated from); `{clip.text_metric}_paper` with the row's `paper_clip_t_prompt` "
            "(preset=paper rows: the text the paper scored)."
        )
    lines.append(
        f"- Means over {'images' if level == 'image' else 'subjects (each subject averaged first)'} in Table 1; "
        "over images in the paper comparison. 95 % intervals are bootstrap percentiles that resample "
        "**subjects** (a cluster bootstrap: a subject's images share its source photo), at both levels."
    )
    return lines


# MONKEY's knobs where the paper's text and its reference code differ (docs/monkey.md)
MONKEY_FLAGS = ("paper_bug_final_all_steps", "attention_scale", "threshold_rule", "combine", "initial_scale")


def effective(row: pd.Series, key: str) -> Any:
    """A method knob as the job ran it: the `paper:` block's `set` value under preset=paper, else the knob."""
    under_paper = row.get("cfg.preset") == "paper" and pd.notna(row.get(f"cfg.method.paper.set.{key}"))
    return row.get(f"cfg.method.paper.set.{key}") if under_paper else row.get(f"cfg.method.{key}")


def monkey_variants(scores: pd.DataFrame) -> list[str]:
    """Which MONKEY each variant ran: the image scored (masked on mask_steps, or the reference code's
    all-steps image) and the knobs where the paper's text and code differ."""
    if "cfg.method.paper_bug_final_all_steps" not in scores:
        return []
    rows = scores.drop_duplicates("variant")
    rows = rows[rows["cfg.method.paper_bug_final_all_steps"].notna()]
    if rows.empty:
        return []
    lines = ["## MONKEY variants", "", "| variant | preset | image scored | " + " | ".join(MONKEY_FLAGS[1:]) + " |"]
    lines.append("|---" * (3 + len(MONKEY_FLAGS) - 1) + "|")
    for _, row in rows.iterrows():
        all_steps = bool(effective(row, "paper_bug_final_all_steps"))
        image = "adapter and mask on every step (reference code)" if all_steps else "masked on `mask_steps` (text)"
        knobs = [str(effective(row, key)) for key in MONKEY_FLAGS[1:]]
        lines.append(f"| {row['variant']} | {row.get('cfg.preset', 'fair')} | {image} | " + " | ".join(knobs) + " |")
    return [*lines, ""]


def mixed_devices(scores: pd.DataFrame) -> list[str]:
    """One line per (run folder, method) whose images were made on more than one device: float rounding
    differs between devices, so such a folder's images are not one run's (the row's `device`)."""
    if "device" not in scores:
        return []
    made = scores[(scores["method"] != ORACLE) & scores["device"].notna()]
    lines = []
    for (run, method), group in made.groupby(["run", "method"], sort=True):
        counts = group["device"].astype(str).value_counts().sort_index()
        if len(counts) > 1:
            lines.append(f"- `{run}` / `{method}`: " + ", ".join(f"{n} images on {d}" for d, n in counts.items()))
    return lines


def mixed_devices_section(scores: pd.DataFrame) -> list[str]:
    lines = mixed_devices(scores)
    for line in lines:
        log.warning("report: a folder mixes devices %s", line.removeprefix("- "))
    if not lines:
        return []
    intro = "These folders hold images made on more than one device (`runtime.device`):"
    return ["## Devices", "", intro, "", *lines, ""]


def report_markdown(
    report: Report, table_md: str, comparison_md: str, eval_cfg: DictConfig, level: str, extra: list[str] = ()
) -> str:
    specs = backbone_specs(to_plain(eval_cfg.backbones))
    lines = [
        "# Report",
        "",
        f"{len(report.scores)} scored images from {len(report.run_dirs)} run folders; score set `{eval_cfg.name}`. "
        "Plain cosines (not x100).",
        "",
        *metrics_paragraph(specs, level),
        "",
        "## Table 1",
        "",
        table_md,
        "## Against the paper's reported numbers",
        "",
        "Image means, as the paper; the paper's rows beside our `preset=paper` runs, and what `fair` changes. "
        "The paper's DINO came from DINO v1 ViT-S/16 (its reference code), so it is compared with `dino_v1`; "
        "DINOv2 (`dino`, the paper's text) is shown beside it.",
        "",
        comparison_md,
        *monkey_variants(report.scores),
        *mixed_devices_section(report.scores),
        *extra,  # sections of other modules (monkey.eval.multi_subject)
        "## Pareto plots",
        "",
        *[f"![{p.stem}]({p.name})" for p in report.plots if p.suffix == ".png"],
        "",
        *sweep_section(report.sweep, report.plots),
        *agreement_section(report.agreement),
        "## Images",
        "",
        *[f"![{p.stem}]({p.name})" for p in report.grids],
        "",
        "Files: `scores.csv` (per image), `summary.csv` (n, subjects, mean, std, 95% subject-bootstrap CI per "
        "level), `table1.{csv,md,tex}`, `paper_comparison.{csv,md}`, `runs.csv`.",
        "",
    ]
    return "\n".join(lines)
