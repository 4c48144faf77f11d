"""`monkey-bench`: the Hydra app. Configs live in conf/ (shipped as the package monkey.conf).

monkey-bench                                  # the demo experiment (tiny models, bundled data)
monkey-bench experiment=paper_dreambooth      # the paper's DreamBooth grid with the real models
monkey-bench -m method=ip_adapter_0.5,ip_adapter_1.0
"""

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from monkey.atomic import UNWRITABLE
from monkey.errors import MonkeyError
from monkey.hashing import stable_hash
from monkey.hydra_errors import HYDRA_INPUT_ERRORS, composition_message, one_line, unique_overrides
from monkey.names import folder_slug
from monkey.refused_run import discard_refused_run
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
    # Hydra makes this folder before the app runs: a bad method.name must not take it outside the run
    # root; the app then refuses the name itself (monkey.config_check) with one error line
    return folder_slug(",".join([str(method_name), *extra]))


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


def run_job(cfg: DictConfig, run_dir: Path) -> int:
    """Run the job's stages; 0 when done, 2 after one logged line for input the user can fix (a bad
    key or file, a folder that cannot take the results). Anything else is a bug: its traceback stays."""
    try:
        run_stages(cfg, run_dir)
    except MonkeyError as err:
        log.error("%s", err)
        return 2
    except OSError as err:
        if err.errno not in UNWRITABLE:
            raise
        where = Path(err.filename) if err.filename else run_dir
        log.error("cannot write %s: %s (%s)", where, UNWRITABLE[err.errno], err.strerror)
        return 2
    return 0


# True while the task function runs: an error before it is Hydra's setup of the run folder (input the
# user can fix: the folder, the log file); an error from inside it keeps its traceback (a bug)
_in_task = False


@hydra.main(version_base="1.3", config_path="pkg://monkey.conf", config_name="config")
def app(cfg: DictConfig) -> None:
    global _in_task
    _in_task = True
    try:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        quiet_libraries()
        code = run_job(cfg, run_dir)
    finally:
        _in_task = False
    if code:  # a refused job leaves no folder (results in it keep it): monkey.refused_run
        experiment = Path(str(cfg.run.root)) / folder_slug(cfg.run.name)
        discard_refused_run(run_dir, shard_label(cfg.shard, cfg.num_shards), experiment)
        sys.exit(code)


def setup_error(err: BaseException) -> str | None:
    """One line for a failure of Hydra's own setup before the task (the run folder, the shard log, an
    interpolation in the folder's name); None when it is not one (a bug: the traceback stays)."""
    if isinstance(err, ValueError) and isinstance(err.__cause__, OSError):  # logging: "Unable to configure handler"
        err = err.__cause__
    if isinstance(err, OSError) and err.errno in UNWRITABLE:
        where = Path(err.filename) if err.filename else Path.cwd()
        return (
            f"cannot write {where}: {UNWRITABLE[err.errno]} ({err.strerror}); run.root must be a folder this "
            "user can create files in"
        )
    if isinstance(err, OmegaConfBaseException):
        return f"the config cannot be resolved: {one_line(str(err))}"
    return None


def main(argv: list[str] | None = None) -> int:
    """`monkey-bench` with `argv` (default: the command line): Hydra's app, with every bad input,
    Hydra's own included, ending in one error line and exit code 2 (docs/configuration.md)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    saved_argv, saved_full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [saved_argv[0] if saved_argv else "monkey-bench", *unique_overrides(argv)]
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors instead of printing several lines
    try:
        app()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except HYDRA_INPUT_ERRORS as err:
        return refuse(composition_message(err))
    except (OSError, ValueError, OmegaConfBaseException) as err:
        message = None if _in_task else setup_error(err)
        if message is None:
            raise
        return refuse(message)
    finally:
        sys.argv = saved_argv
        if saved_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_full_error
    return 0


def refuse(message: str) -> int:
    if not logging.getLogger().handlers:  # before Hydra configured logging: as the other CLIs print
        logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    log.error("%s", message)
    return 2


if __name__ == "__main__":
    sys.exit(main())
