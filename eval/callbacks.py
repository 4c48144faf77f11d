"""Hydra callback: after the last job of a multirun, one report over all of its run folders.

Configured under `hydra.callbacks.report` in conf/config.yaml. It runs in the launching process after
every launcher (basic, submitit) has returned, and only when `report` is among `run.stages`.
"""

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from monkey.errors import MonkeyError

log = logging.getLogger("monkey")


class ReportCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if "report" not in (config.get("run") or {}).get("stages", []):
            return
        from monkey.eval.stages import peer_defers, report_experiment

        folder = Path(config.hydra.sweep.dir)
        if peer_defers(folder):
            return
        job_config = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        try:
            report_experiment(job_config, folder)
        except MonkeyError as err:
            log.error("%s", err)
            sys.exit(2)
