"""`monkey-bench`: the Hydra app. Configs live in conf/ (shipped as the package monkey.conf).

monkey-bench                                  # the demo experiment (tiny models, bundled data)
monkey-bench experiment=paper_dreambooth      # the paper's DreamBooth grid with the real models
monkey-bench -m method=ip_adapter_0.5,ip_adapter_1.0
"""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from monkey.errors import MonkeyError
from monkey.hashing import stable_hash
from monkey.shards import shard_label
from monkey.stages import run_stages

log = logging.getLogger("monkey")


# Overrides that never change an image stay out of a run folder's name: the method (already its
# first part), and the scoring and logging groups (their results live inside the folder, by name).
NOT_IN_FOLDER_NAME = ("method=", "eval=", "eval.", "logger=", "logger.")


def run_key(method_name: str, override_dirname: str) -> str:
    """A run folder's name: the method label plus any other command-line overrides, so the same
    command always lands in (and resumes) the same folder, in single runs and multiruns alike."""
    extra = [
        flat_path(part) for part in override_dirname.split(",") if part and not part.startswith(NOT_IN_FOLDER_NAME)
    ]
    return ",".join([method_name, *extra])


def flat_path(override: str) -> str:
    """`dataset.path=/data/mtg.parquet` -> `dataset.path=mtg.parquet-<hash8>`: a path value keeps the
    run folder one level deep (no nested folders) and still tells two paths apart."""
    key, sep, value = override.partition("=")
    if not sep or "/" not in value:
        return override
    return f"{key}={Path(value.rstrip('/')).name}-{stable_hash(value, 8)}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("monkey.run_key"):
        OmegaConf.register_new_resolver("monkey.run_key", run_key)
    if not OmegaConf.has_resolver("monkey.shard_label"):
        OmegaConf.register_new_resolver("monkey.shard_label", shard_label)


register_resolvers()


def quiet_libraries() -> None:
    """Our own progress bar and log lines say what happens; silence the libraries' per-load chatter."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@hydra.main(version_base="1.3", config_path="pkg://monkey.conf", config_name="config")
def app(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    quiet_libraries()
    try:
        run_stages(cfg, run_dir)
    except MonkeyError as err:
        log.error("%s", err)
        sys.exit(2)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
