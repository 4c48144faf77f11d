"""A refused run leaves no trace in the run root.

Hydra makes the run folder, `.hydra/<shard>/` and the shard's log before the app starts, so a run the
app then refuses (a bad key, a conflicting folder: exit 2) would leave a folder holding no result, and
a later `monkey-report` or a colleague would take it for a run. After a refusal the shard's own
`.hydra/<shard>/` and log are removed, and then every folder they leave empty, but only when the run
folder holds nothing else: results, or another shard's files, keep it (and its log) as it is.
"""

import contextlib
import logging
import shutil
from pathlib import Path

HYDRA_DIR = ".hydra"
SWEEP_RECORD = "multirun.yaml"  # Hydra's record of a sweep, in the experiment folder


def close_log_files(run_dir: Path) -> None:
    """Hydra's file handler holds the shard log open: close the handlers writing inside `run_dir`."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == run_dir:
            root.removeHandler(handler)
            handler.close()


def holds_only_startup_files(run_dir: Path) -> bool:
    """Whether `run_dir` holds nothing but Hydra's `.hydra/` and shard logs."""
    return all(entry.name == HYDRA_DIR or (entry.is_file() and entry.suffix == ".log") for entry in run_dir.iterdir())


def discard_refused_run(run_dir: Path, shard: str, experiment: Path | None = None) -> bool:
    """Remove what Hydra wrote for shard `shard` (e.g. `shard-0-of-1`) of a refused run; True when the
    run folder itself is gone. Never touches a folder that holds anything else. The folder above it goes
    too when left empty (or holding only Hydra's sweep record), unless `experiment` names another folder
    (a `hydra.run.dir` of the user's own, outside runs/<run.name>)."""
    if not run_dir.is_dir() or not holds_only_startup_files(run_dir):
        return False
    close_log_files(run_dir)
    shutil.rmtree(run_dir / HYDRA_DIR / shard, ignore_errors=True)
    (run_dir / f"{shard}.log").unlink(missing_ok=True)
    for folder in (run_dir / HYDRA_DIR, run_dir):
        with contextlib.suppress(OSError):  # not empty: another shard's files stay
            folder.rmdir()
    if run_dir.exists():
        return False
    if experiment is not None and run_dir.parent.resolve() != experiment.resolve():
        return True
    experiment = run_dir.parent
    with contextlib.suppress(OSError):
        if [entry.name for entry in experiment.iterdir()] == [SWEEP_RECORD]:
            (experiment / SWEEP_RECORD).unlink()
        experiment.rmdir()
    return True
