"""The `evaluate` and `report` stages (`fn(cfg, run_dir)`, registered in monkey.stages).

evaluate  scores this job's run folder (its shard's items when num_shards > 1) into scores/<eval.name>/.
report    merges every run folder of the experiment (runs/<run.name>/) into runs/<run.name>/report/.
          In a multirun it runs once, after the last job (monkey.eval.callbacks.ReportCallback), so each
          job's report stage only defers to it.
"""

import logging
from pathlib import Path

from monkey.eval.scoring import EvaluateSummary, evaluate_run
from omegaconf import DictConfig

from monkey.hashing import to_plain
from monkey.names import folder_name
from monkey.shards import resolve_shard

log = logging.getLogger(__name__)


def evaluate_stage(cfg: DictConfig, run_dir: Path) -> EvaluateSummary:
    _, num_shards = resolve_shard(cfg)
    item_ids = None
    if num_shards > 1:  # shards evaluated in parallel score disjoint items: the ones they generated
        from monkey.runner import plan_from_config, shard_work

        _, _, batches = shard_work(cfg, plan_from_config(cfg))
        item_ids = {item.item_id for batch in batches for item in batch}
    summary = evaluate_run(run_dir, cfg.eval, cfg.dataset, item_ids)
    log.info(
        "evaluate: %d images, %d scored, %d oracle rows, forwards %s",
        summary.rows,
        summary.scored,
        summary.oracle_scored,
        summary.forwards,
    )
    return summary


def in_multirun_job() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def experiment_dir(cfg: DictConfig) -> Path:
    return Path(cfg.run.root) / folder_name(cfg.run.name, "run.name")  # as Hydra names it (monkey.folder_slug)


def report_experiment(cfg: DictConfig, folder: Path):
    from monkey.eval.report import REPORT_DIR, build_report

    return build_report(
        [folder], folder / REPORT_DIR, cfg.eval, cfg.get("logger"), cfg.get("dataset"), config=to_plain(cfg)
    )


def launched_peer() -> int | None:
    """WORLD_SIZE when this process is one of several started by accelerate/torchrun, else None."""
    from monkey.shards import launch_rank

    launched = launch_rank()
    return launched[1] if launched is not None and launched[1] > 1 else None


def peer_defers(folder: Path) -> bool:
    """Peers of a multi-process launch finish at different times and share no barrier: none of them can
    tell when the others are done, so none writes the report; the user runs it once afterwards."""
    world = launched_peer()
    if world is None:
        return False
    log.warning("report: one of %d launched processes; when all have finished run: monkey-report %s", world, folder)
    return True


def report_stage(cfg: DictConfig, run_dir: Path):
    if in_multirun_job():
        log.info("report: deferred to the end of the multirun (one report over every job's folder)")
        return None
    if peer_defers(experiment_dir(cfg)):
        return None
    return report_experiment(cfg, experiment_dir(cfg))
