"""The stages a job can run, by name. Each reads what the previous wrote to the run folder, so any
stage can be rerun alone (`run.stages=[evaluate,report]` over an existing folder)."""

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from monkey.config_check import check_job_config
from monkey.errors import ConfigError
from monkey.threads import apply_threads

# name -> "module:function"; imported on use so a stage's heavy dependencies load only when needed
STAGES: dict[str, str] = {
    "generate": "monkey.runner:generate_stage",
    "evaluate": "monkey.eval.stages:evaluate_stage",
    "report": "monkey.eval.stages:report_stage",
}


def stage_function(name: str) -> Callable[[DictConfig, Path], Any]:
    if name not in STAGES:
        raise ConfigError(f"run.stages names unknown stage {name!r}; allowed: {list(STAGES)}")
    module, function = STAGES[name].split(":")
    return getattr(importlib.import_module(module), function)


def run_stages(cfg: DictConfig, run_dir: Path) -> None:
    check_job_config(cfg)  # every generic key, before any model or dataset is loaded
    apply_threads(cfg.runtime.get("threads", "auto"))  # before any tensor work; speed only, not hashed
    functions = [stage_function(name) for name in cfg.run.stages]  # validate all before starting
    for function in functions:
        function(cfg, run_dir)
