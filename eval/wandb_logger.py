"""Log a report to Weights & Biases (`logger=wandb`): the config, summary metrics, a per-image table with
the images, Table 1 and the plots. `logger.mode=offline` writes everything locally with no network;
`wandb sync <dir>/wandb/offline-run-*` uploads it later."""

import logging
from pathlib import Path
from typing import Any

from monkey.eval.score_store import ORACLE
from omegaconf import DictConfig

from monkey.errors import ConfigError
from monkey.hashing import to_plain

log = logging.getLogger(__name__)
MODES = ("online", "offline", "disabled")
TABLE_COLUMNS = ("variant", "method", "dataset", "subject", "item_id", "prompt", "seed")


def summary_metrics(report) -> dict[str, float]:
    """`<dataset>/<variant>/<metric>` (and `..._ci_low/high`, image level) for the run summary."""
    rows = report.summary[report.summary["level"] == "image"]
    metrics: dict[str, float] = {}
    for row in rows.itertuples():
        key = f"{row.dataset}/{row.variant}/{row.metric}"
        metrics[key] = row.mean
        metrics[f"{key}_ci_low"] = row.ci_low
        metrics[f"{key}_ci_high"] = row.ci_high
    return metrics


def image_table(report, max_images: int, wandb: Any):
    scores = report.scores[report.scores["method"] != ORACLE]
    metrics = [c for c in report.summary["metric"].unique() if c in scores]
    columns = ["image", *[c for c in TABLE_COLUMNS if c in scores], *metrics]
    table = wandb.Table(columns=columns)
    for index, row in enumerate(scores.itertuples(index=False)):
        record = row._asdict()
        image = wandb.Image(str(Path(record["run_dir"]) / record["image"])) if index < max_images else None
        table.add_data(image, *[record.get(c) for c in columns[1:]])
    return table


def log_report(report, logger_cfg: DictConfig, config: dict[str, Any]) -> Path:
    """One wandb run per report; returns the folder wandb wrote to."""
    mode = logger_cfg.get("mode", "online")
    if mode not in MODES:
        raise ConfigError(f"logger.mode={mode!r} is not allowed; choose one of {list(MODES)}")
    import wandb

    folder = Path(logger_cfg.get("dir") or report.out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=logger_cfg.get("project"),
        entity=logger_cfg.get("entity"),
        mode=mode,
        dir=str(folder),
        name=report.out_dir.parent.name,
        tags=list(to_plain(logger_cfg.get("tags")) or []),
        config=config,
        job_type="report",
    )
    try:
        run.summary.update(summary_metrics(report))
        logged: dict[str, Any] = {
            "scores": image_table(report, int(logger_cfg.get("max_images", 200)), wandb),
            "table1": wandb.Table(dataframe=report.table1.astype(str)),
        }
        for path in [*report.plots, *report.grids, *(report.sweep.plots if report.sweep else [])]:
            if path.suffix == ".png":
                logged[f"plots/{path.stem}"] = wandb.Image(str(path))
        run.log(logged)
    finally:
        run.finish()
    log.info("wandb: logged the report (%s mode) under %s", mode, folder / "wandb")
    return folder / "wandb"
