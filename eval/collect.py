"""Merge the scores of many run folders (a sweep's jobs, shards, old runs) into one DataFrame.

`collect_scores(run_dirs, eval_name)` is the entry point for anything built on top of the report
(sweep reports, notebooks): one row per scored image, with
    run, run_dir, variant           the folder, and the label used in tables and plots
    cfg.<key>                       the folder's resolved Hydra config, flattened (`cfg.method.scale`)
    overrides                       the job's command-line overrides
    <metric>, <metric>_all, ...     the scores (see monkey.eval.scoring)
"""

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from monkey.eval.score_store import ORACLE, ScoreSet
from omegaconf import OmegaConf

from monkey.errors import RunFolderError
from monkey.store import MANIFEST_DIR

log = logging.getLogger(__name__)


def is_run_dir(path: Path) -> bool:
    return (path / MANIFEST_DIR).is_dir()


def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    """Run folders named directly, or found one level below an experiment folder (runs/<run.name>/)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise RunFolderError(f"{path} is not a folder (expected a run folder or an experiment folder)")
        if is_run_dir(path):
            found.append(path)
        else:
            found.extend(child for child in sorted(path.iterdir()) if child.is_dir() and is_run_dir(child))
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def hydra_dirs(run_dir: Path) -> list[Path]:
    """The folder's saved Hydra configs, shard 0 first (every shard of a folder shares one config)."""
    return sorted((run_dir / ".hydra").glob("*/config.yaml"), key=lambda p: (p.parent.name != "shard-0-of-1", str(p)))


def run_config(run_dir: Path) -> dict[str, Any] | None:
    """The job's config as saved by Hydra, resolved where it can be (None when the folder has none)."""
    paths = hydra_dirs(run_dir)
    if not paths:
        return None
    config = OmegaConf.load(paths[0])
    try:
        return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    except Exception:  # interpolations into the hydra node (absent here) stay as written
        return OmegaConf.to_container(config, resolve=False)  # type: ignore[return-value]


def run_overrides(run_dir: Path) -> list[str]:
    paths = hydra_dirs(run_dir)
    overrides = paths[0].parent / "overrides.yaml" if paths else None
    return list(OmegaConf.load(overrides)) if overrides and overrides.is_file() else []


# Groups that say how a folder was scored or logged, not what it holds: the score records name their
# backbones themselves (`backbones`, `eval_hash`).
NOT_RUN_CONFIG = ("eval", "logger")


def flatten(config: dict[str, Any], prefix: str = "cfg.") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if prefix == "cfg." and key in NOT_RUN_CONFIG:
            continue
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if not isinstance(value, list | dict) else str(value)
    return flat


def folder_extras(run_dir: Path) -> list[str]:
    """The overrides in a run folder's name (`<method>,<key=value>,...`), without the method label."""
    return run_dir.name.split(",")[1:]


def variant_labels(frame: pd.DataFrame) -> pd.Series:
    """A readable, unique label per (run folder, method): the method, plus whatever in the folder name
    tells two folders of one method apart (overrides shared by every folder are left out)."""
    pairs = frame[["run_dir", "method"]].drop_duplicates()
    extras = {run_dir: folder_extras(Path(run_dir)) for run_dir in pairs["run_dir"]}
    common = set.intersection(*(set(e) for e in extras.values())) if extras else set()
    labels: dict[tuple[str, str], str] = {}
    for run_dir, method in pairs.itertuples(index=False):
        extra = [e for e in extras[run_dir] if e not in common]
        labels[(run_dir, method)] = method if method == ORACLE or not extra else f"{method} ({', '.join(extra)})"
    clashes = {label for label in labels.values() if list(labels.values()).count(label) > 1}
    for (run_dir, method), label in labels.items():
        if label in clashes and method != ORACLE:  # same label from two experiments: name the experiment
            labels[(run_dir, method)] = f"{Path(run_dir).parent.name}/{label}"
    return pd.Series(
        [labels[(r, m)] for r, m in zip(frame["run_dir"], frame["method"], strict=True)], index=frame.index
    )


def collect_scores(run_dirs: list[str | Path], eval_name: str, with_config: bool = True) -> pd.DataFrame:
    """All score records of `eval_name` in `run_dirs`, one row per image, oracle rows deduplicated."""
    frames = []
    for run_dir in map(Path, run_dirs):
        frame = ScoreSet(run_dir, eval_name).frame()
        if frame.empty:
            log.warning("no scores/%s in %s (run the evaluate stage first)", eval_name, run_dir)
            continue
        frame.insert(0, "run", run_dir.name)
        frame.insert(1, "run_dir", str(run_dir))
        if with_config:
            config = run_config(run_dir)
            if config:
                frame = frame.assign(**flatten(config))
            frame["overrides"] = " ".join(run_overrides(run_dir))
        frames.append(frame)
    if not frames:
        return pd.DataFrame()
    scores = pd.concat(frames, ignore_index=True)
    oracle = scores["method"] == ORACLE  # the same real photo scored in every folder: keep one per item
    deduplicated = scores[oracle].drop_duplicates(subset=["item_id", "plan_prompt"])
    scores = pd.concat([scores[~oracle], deduplicated], ignore_index=True).copy()  # one block: no fragmented insert
    scores.insert(2, "variant", variant_labels(scores))
    return scores
