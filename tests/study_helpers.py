"""Helpers for the user-study and gallery tests: a small two-dataset experiment folder (fake images written
as the runner writes them), a built study, and response files that pick a named method per question."""

import csv
import dataclasses
import json
from collections import defaultdict
from pathlib import Path

from eval_helpers import fake_generate, make_dataset, plan_items

from monkey.plan import WorkItem

METHODS = ("monkey", "ip_adapter_1.0", "masactrl")


def two_dataset_items(root: Path, prompts: int = 3) -> list[WorkItem]:
    """DreamBooth-layout items and the same photos as a second dataset "magic": 2 subjects x `prompts` each."""
    items = plan_items(make_dataset(root / "data"), prompts=prompts)
    magic = [dataclasses.replace(i, source=dataclasses.replace(i.source, dataset="magic")) for i in items]
    return items + magic


def make_experiment(root: Path, methods=METHODS, prompts: int = 3) -> Path:
    experiment = root / "exp"
    items = two_dataset_items(root, prompts)
    for method in methods:
        fake_generate(experiment / method, items, method, overlay=method == "monkey")
    return experiment


def read_assignments(study: Path) -> list[dict]:
    with open(study / "assignments.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def screens(study: Path) -> dict[tuple[str, str], dict]:
    """(participant, question) -> {'kind', 'dataset', 'options': [option per position]}."""
    found: dict[tuple[str, str], dict] = defaultdict(lambda: {"options": {}})
    for row in read_assignments(study):
        entry = found[(row["participant"], row["question"])]
        entry.update(kind=row["kind"], dataset=row["dataset"], screen=int(row["screen"]))
        entry["options"][int(row["position"])] = row["option"]
    return {key: {**v, "options": [v["options"][i] for i in sorted(v["options"])]} for key, v in found.items()}


def response(study: Path, participant: str, pick, skip: int = 0) -> dict:
    """The export of a participant who, per screen, clicks the position `pick(dataset, options)` returns
    (attention checks: the subject's copy); the last `skip` screens are left unanswered."""
    definition = json.loads((study / "study.json").read_text())
    mine = sorted(((k[1], v) for k, v in screens(study).items() if k[0] == participant), key=lambda kv: kv[1]["screen"])
    answers = []
    for question, screen in mine[: len(mine) - skip]:
        position = (
            screen["options"].index("source-duplicate")
            if screen["kind"] == "attention"
            else pick(screen["dataset"], screen["options"])
        )
        answers.append({"question": question, "choice": position, "screen": screen["screen"], "ms": 1000})
    return {
        "format": "monkey-study-response",
        "version": 1,
        "study_id": definition["study_id"],
        "participant": participant,
        "answers": answers,
    }


def write_json(path: Path, obj: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path
