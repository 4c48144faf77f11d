"""One progress line for a whole multirun: jobs done/total, images done/total, and the time left.

Why: each job's own bar counts only its images, so a sweep of many jobs gave no idea how long the
rest would take. Configured as `hydra.callbacks.progress` (conf/config.yaml). At the start of a
multirun it lists the sweep's jobs as Hydra's basic sweeper does (`hydra.sweeper.params` and the
command line's sweeps, their product) and composes each job to count the images it plans (its
shard's share of the plan); it logs at the start and after each job, e.g.

    multirun: 2/6 jobs, 64/192 images, 3m10s elapsed, about 6m20s left (2.97 s per image)

The rate counts only images generated in this multirun (manifest rows written since it started), so
a resumed sweep whose first jobs were already done does not make the rest look instant. The estimate
assumes the remaining images take as long as the ones so far (methods differ: it is a guide). Jobs run
by another process (submitit, SLURM) log nothing here: their callbacks run on the nodes.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("monkey")


def duration(seconds: float) -> str:
    """12s, 3m10s, 2h05m."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def seconds_left(elapsed: float, generated: int, remaining: int) -> float | None:
    """Time per image generated so far times the images still to make; None before the first image."""
    if generated <= 0:
        return None
    return elapsed / generated * max(0, remaining)


@dataclass
class Tally:
    """Where a multirun stands. `planned[i]` is job i's image count (None: not known)."""

    planned: list[int | None]
    started: float = field(default_factory=time.time)
    jobs_done: int = 0
    images_done: int = 0  # planned images of the finished jobs
    generated: int = 0  # images made in this multirun (the rate's denominator)

    def line(self, now: float | None = None) -> str:
        elapsed = (now if now is not None else time.time()) - self.started
        known = [n for n in self.planned if n is not None]
        total = sum(known) if len(known) == len(self.planned) else None
        images = f"{self.images_done}/{total} images" if total is not None else f"{self.images_done} images"
        left = seconds_left(elapsed, self.generated, total - self.images_done) if total is not None else None
        eta = (
            f"about {duration(left)} left ({elapsed / self.generated:.3g} s per image)"
            if left is not None
            else "time left: not known yet"
        )
        return f"multirun: {self.jobs_done}/{len(self.planned)} jobs, {images}, {duration(elapsed)} elapsed, {eta}"


def sweep_jobs(sweeper_params: dict[str, Any] | None, task_overrides: list[str]) -> list[list[str]]:
    """Each job's overrides, in launch order, as Hydra's basic sweeper makes them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    arguments = [f"{key}={value}" for key, value in (sweeper_params or {}).items()] + list(task_overrides)
    overrides = OverridesParser.create().parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def planned_images(job_config: DictConfig) -> int:
    """The images one job plans: its shard's share of the plan."""
    from monkey.runner import plan_from_config, shard_work

    _, _, batches = shard_work(job_config, plan_from_config(job_config))
    return sum(len(batch) for batch in batches)


def generated_since(run_dir: Path, since: float) -> int:
    """Images a run folder's manifests gained since `since` (generated now, not resumed)."""
    from monkey.store import STATUS_OK, RunStore

    if not (run_dir / "manifest").is_dir():
        return 0
    return sum(
        1 for row in RunStore(run_dir).rows() if row.get("status") == STATUS_OK and row.get("created", 0) >= since
    )


class MultirunProgress(Callback):
    """Logs the multirun's progress line at its start and after each job (basic launcher: jobs in this process)."""

    def __init__(self, count: Callable[[list[str]], int | None] | None = None) -> None:
        self.count = count  # job overrides -> its images; default: compose the job and count its plan
        self.tally: Tally | None = None

    def compose_count(self, config: DictConfig) -> Callable[[list[str]], int | None]:
        from hydra.core.global_hydra import GlobalHydra

        loader = GlobalHydra.instance().config_loader()

        def count(job: list[str]) -> int | None:
            plan_log = logging.getLogger("monkey.plan")
            level = plan_log.level
            plan_log.setLevel(logging.WARNING)  # the job logs its plan's limits itself, once
            try:
                return planned_images(loader.load_sweep_config(config, job))
            except Exception as err:  # the job itself will report it; the line then says images are not known
                log.info("multirun progress: cannot count the images of job %s (%s)", job, err)
                return None
            finally:
                plan_log.setLevel(level)

        return count

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "generate" not in (config.get("run") or {}).get("stages", []):
            return
        params = config.hydra.sweeper.get("params")
        params = OmegaConf.to_container(params, resolve=False) if params else {}
        jobs = sweep_jobs(params, list(config.hydra.overrides.task))
        count = self.count or self.compose_count(config)
        self.tally = Tally([count(job) for job in jobs])
        log.info("%s", self.tally.line())

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self.tally is None:
            return
        index = int(config.hydra.job.num)
        self.tally.jobs_done += 1
        planned = self.tally.planned[index] if index < len(self.tally.planned) else None
        self.tally.images_done += planned or 0
        self.tally.generated += generated_since(Path(config.hydra.runtime.output_dir), self.tally.started)
        log.info("%s", self.tally.line())
