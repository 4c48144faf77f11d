"""Which images a study can ask about: the items every chosen method finished, one image per method.

A *candidate* is a work item (subject image x prompt x seed) that each method's run folder holds as a
finished image generated from the same prompt text. Questions are drawn from candidates, per dataset,
spread over subjects so that N questions show as many different subjects as there are.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from monkey.errors import DataError
from monkey.eval.collect import variant_labels
from monkey.store import RunStore


@dataclass(frozen=True)
class MethodRun:
    """One compared method: its label in the study (the report's variant label) and its rows' method."""

    label: str
    method: str
    run_dir: Path


@dataclass(frozen=True)
class Candidate:
    dataset: str
    item_id: str
    subject: str
    prompt: str  # the exact text every method's image was generated from
    seed: int
    source_path: Path
    images: dict[str, Path]  # method label -> generated image


def method_runs(run_dirs: list[Path], labels: list[str] | None) -> list[MethodRun]:
    """The run folders to compare, by variant label (the method, plus what in the folder name tells two
    folders of one method apart, as in the report's tables); `labels` picks and orders them (default: all)."""
    folders = []
    for run_dir in run_dirs:
        methods = sorted({row["method"] for row in RunStore(run_dir).rows()})
        if not methods:
            raise DataError(
                f"{run_dir}: no image (manifest/ has no rows); finish that run, or name the run folders to compare"
            )
        if len(methods) != 1:
            raise DataError(f"{run_dir}: a study compares one method per run folder, found {methods}")
        folders.append({"run_dir": str(run_dir), "method": methods[0]})
    if not folders:
        raise DataError("no run folder (a folder holding manifest/) given")
    frame = pd.DataFrame(folders)
    by_label = {
        label: MethodRun(label, method, Path(run_dir))
        for label, method, run_dir in zip(variant_labels(frame), frame["method"], frame["run_dir"], strict=True)
    }
    chosen = labels or sorted(by_label)
    unknown = [label for label in chosen if label not in by_label]
    if unknown:
        raise DataError(f"--methods {unknown}: no such method among the run folders; allowed: {sorted(by_label)}")
    if len(set(chosen)) != len(chosen) or len(chosen) < 2:
        raise DataError(f"--methods {chosen}: name at least two different methods")
    return [by_label[label] for label in chosen]


def finished_images(run: MethodRun) -> dict[str, dict]:
    """item_id -> manifest row of every finished image; a folder without any is an error, not a gap."""
    finished = RunStore(run.run_dir).finished(run.method)
    if not finished:
        raise DataError(f"{run.run_dir}: no finished image of {run.method!r} (images/ missing or every row failed)")
    return finished


def candidates(runs: list[MethodRun]) -> list[Candidate]:
    """Items that every run finished; an item whose methods saw different prompt texts is an error."""
    finished = {run.label: finished_images(run) for run in runs}
    shared = set.intersection(*(set(rows) for rows in finished.values()))
    if not shared:
        raise DataError(f"the run folders {[str(r.run_dir) for r in runs]} share no finished item (same plan?)")
    found = []
    for item_id in sorted(shared):
        rows = {label: finished[label][item_id] for label in finished}
        prompts = {row["prompt"] for row in rows.values()}
        if len(prompts) != 1:
            raise DataError(
                f"item {item_id}: the methods' images were generated from different prompts {sorted(prompts)} "
                "(preset=paper?); a question shows one prompt, so compare runs made with preset=fair"
            )
        first = next(iter(rows.values()))
        found.append(
            Candidate(
                dataset=first["dataset"],
                item_id=item_id,
                subject=first["subject"],
                prompt=prompts.pop(),
                seed=int(first["seed"]),
                source_path=Path(first["source_path"]),
                images={run.label: run.run_dir / rows[run.label]["image"] for run in runs},
            )
        )
    return found


def spread_over_subjects(pool: list[Candidate], rng: np.random.Generator) -> list[Candidate]:
    """A seeded random order that visits every subject once before any subject a second time."""
    by_subject: dict[str, list[Candidate]] = {}
    for index in rng.permutation(len(pool)):
        by_subject.setdefault(pool[index].subject, []).append(pool[index])
    subjects = [by_subject[s] for s in rng.permutation(sorted(by_subject))]
    order = []
    while any(subjects):
        order += [queue.pop(0) for queue in subjects if queue]
    return order


def choose_questions(
    pool: list[Candidate], per_dataset: int, checks: int, rng: np.random.Generator
) -> tuple[dict[str, list[Candidate]], list[Candidate]]:
    """`per_dataset` questions per dataset, and `checks` attention-check items (other items when there
    are enough, so a participant does not meet a check's images twice)."""
    datasets = sorted({c.dataset for c in pool})
    chosen: dict[str, list[Candidate]] = {}
    rest: list[Candidate] = []
    for dataset in datasets:
        order = spread_over_subjects([c for c in pool if c.dataset == dataset], rng)
        if len(order) < per_dataset:
            raise DataError(
                f"--questions {per_dataset}: dataset {dataset!r} has only {len(order)} items every method finished"
            )
        chosen[dataset] = order[:per_dataset]
        rest += order[per_dataset:]
    reserve = rest if len(rest) >= checks else rest + [c for d in datasets for c in chosen[d]]
    picks = [reserve[i] for i in rng.permutation(len(reserve))[:checks]] if checks else []
    if len(picks) < checks:
        raise DataError(f"--attention-checks {checks}: only {len(reserve)} items to make them from")
    return chosen, picks
