"""Test setup: offline hub, a private cache for tiny checkpoints, and config composition helpers."""

import importlib.util
import os
import sys
import tempfile

# Before any Hugging Face import: the suite must never reach a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("MONKEY_CACHE", tempfile.mkdtemp(prefix="monkey-test-cache-"))

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from monkey.models.profiles import load_pipeline, profile_from_config, resolve_runtime

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module, its sibling imports (benchtools, sd15_arch, ...) found as
    `python benchmarks/<name>.py` finds them: the folder is on the path while the script loads."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def compose_config(*overrides: str) -> DictConfig:
    """The job config `monkey-bench <overrides>` would get (without the hydra node)."""
    with initialize_config_module(config_module="monkey.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def make_config() -> Callable[..., DictConfig]:
    return compose_config


@pytest.fixture(scope="session")
def tiny_runtime():
    profile = profile_from_config(compose_config().model)
    return resolve_runtime(profile, "cpu", "float32")


@pytest.fixture(scope="session")
def tiny_pipe(tiny_runtime):
    return load_pipeline(tiny_runtime.model, tiny_runtime.device, tiny_runtime.dtype)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path
