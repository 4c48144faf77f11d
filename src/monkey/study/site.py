"""Write a study: a self-contained static site (one page per participant), assignments.csv, study.json.

    <out>/study.json        the study's definition: seed, methods and their run folders, questions
    <out>/assignments.csv   one row per (participant, screen, position): which method's image sits where
    <out>/site/             what participants get: opens from the file system, no server, no network
        index.html          links to every participant's page (for the researcher)
        <participant>.html  the questionnaire; answers stay in the browser and export as a JSON file
        study.css, study.js
        img/<sha256>.<ext>  every image once, named by content so a file name never reveals a method

Pages embed only image paths and prompts: method names and the position->method map live in
assignments.csv, which stays with the researcher. The study id (a hash of the definition) is in every
page and every export, so a response from another study is refused at tally time.
"""

import csv
import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from monkey.atomic import atomic_write_bytes, atomic_write_json
from monkey.errors import DataError
from monkey.hashing import bytes_sha256, stable_hash
from monkey.study.assignment import SOURCE, Screen, assign, question_ids
from monkey.study.questions import Candidate, MethodRun, candidates, choose_questions

FORMAT = "monkey-study"
RESPONSE_FORMAT = "monkey-study-response"
VERSION = 1
SITE_DIR = "site"
ASSETS = ("study.css", "study.js")
ASSIGNMENT_COLUMNS = [
    "study_id",
    "participant",
    "screen",
    "question",
    "kind",
    "dataset",
    "item_id",
    "subject",
    "seed",
    "prompt",
    "position",
    "option",
    "method",
    "image",
    "original",
]


@dataclass(frozen=True)
class StudySpec:
    """What `monkey-study build` was asked for (the CLI's arguments, typed)."""

    questions_per_dataset: int
    participants: int
    attention_checks: int
    seed: int
    title: str = "Which image is best?"


def asset(name: str) -> bytes:
    return resources.files("monkey.study").joinpath("assets", name).read_bytes()


def candidate_record(candidate: Candidate) -> dict:
    return {
        "dataset": candidate.dataset,
        "item_id": candidate.item_id,
        "subject": candidate.subject,
        "prompt": candidate.prompt,
        "seed": candidate.seed,
        "source": str(candidate.source_path),
        "images": {label: str(path) for label, path in candidate.images.items()},
    }


class SiteImages:
    """Copies each image once into site/img/, named by its content hash; returns site-relative paths."""

    def __init__(self, site: Path):
        self.site = site
        self.names: dict[Path, str] = {}

    def __call__(self, path: Path) -> str:
        if path not in self.names:
            if not path.is_file():
                raise DataError(f"{path}: image listed in a manifest is missing")
            data = path.read_bytes()
            name = f"img/{bytes_sha256(data)[:20]}{path.suffix.lower()}"
            atomic_write_bytes(self.site / name, data)
            self.names[path] = name
        return self.names[path]


def page_html(title: str, data: dict) -> bytes:
    """The participant page: the template with the screens embedded as JSON (no fetch from file://)."""
    payload = json.dumps(data, sort_keys=True).replace("</", "<\\/")
    template = asset("participant.html").decode()
    return template.replace("{{TITLE}}", title).replace("{{DATA}}", payload).encode()


def index_html(study_id: str, people: list[str]) -> bytes:
    links = "\n".join(f'<li><a href="{p}.html">{p}</a></li>' for p in people)
    return (
        f"<!doctype html><meta charset='utf-8'><title>Study {study_id}</title>"
        f"<link rel='stylesheet' href='study.css'><main><h1>Study {study_id}</h1>"
        f"<p>Send each participant their own page (the whole site/ folder travels with it).</p><ul>{links}</ul></main>"
    ).encode()


def assignment_rows(study_id: str, screens: list[Screen], image_of) -> list[dict]:
    rows = []
    for screen in screens:
        c = screen.candidate
        for position, option in enumerate(screen.options):
            original = c.source_path if option == SOURCE else c.images[option]
            rows.append(
                {
                    "study_id": study_id,
                    "participant": screen.participant,
                    "screen": screen.screen,
                    "question": screen.question,
                    "kind": screen.kind,
                    "dataset": c.dataset,
                    "item_id": c.item_id,
                    "subject": c.subject,
                    "seed": c.seed,
                    "prompt": c.prompt,
                    "position": position,
                    "option": option,
                    "method": "" if option == SOURCE else option,
                    "image": image_of(original),
                    "original": str(original),
                }
            )
    return rows


def csv_bytes(rows: list[dict], columns: list[str]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def build_study(runs: list[MethodRun], spec: StudySpec, out: Path) -> dict:
    """Draw the questions, assign them, write the site; returns the study definition (study.json)."""
    if spec.questions_per_dataset < 1 or spec.participants < 1 or spec.attention_checks < 0:
        raise DataError(
            f"--questions {spec.questions_per_dataset}, --participants {spec.participants}, --attention-checks "
            f"{spec.attention_checks}: questions and participants must be >= 1, checks >= 0"
        )
    rng = np.random.default_rng([spec.seed, 3])
    chosen, checks = choose_questions(candidates(runs), spec.questions_per_dataset, spec.attention_checks, rng)
    labels = [run.label for run in runs]
    definition = {
        "format": FORMAT,
        "version": VERSION,
        "seed": spec.seed,
        "participants": spec.participants,
        "questions_per_dataset": spec.questions_per_dataset,
        "attention_checks": spec.attention_checks,
        "methods": [{"label": r.label, "method": r.method, "run_dir": str(r.run_dir)} for r in runs],
        "datasets": list(chosen),
        "questions": {qid: candidate_record(c) for qid, c in question_ids(chosen).items()},
        "checks": {f"check-{j + 1:02d}": candidate_record(c) for j, c in enumerate(checks)},
    }
    study_id = stable_hash(definition, 12)
    definition = {"study_id": study_id, **definition}
    existing = out / "study.json"
    if existing.is_file() and json.loads(existing.read_text()).get("study_id") != study_id:
        raise DataError(f"{existing} holds another study; choose another --out (pages may already be out)")

    screens = assign(labels, chosen, checks, spec.participants, spec.seed)
    site = out / SITE_DIR
    image_of = SiteImages(site)
    rows = assignment_rows(study_id, screens, image_of)
    people = list(dict.fromkeys(s.participant for s in screens))
    for person in people:
        mine = [s for s in screens if s.participant == person]
        data = {
            "format": RESPONSE_FORMAT,
            "version": VERSION,
            "study_id": study_id,
            "participant": person,
            "screens": [
                {
                    "question": s.question,
                    "prompt": s.candidate.prompt,
                    "subject": image_of(s.candidate.source_path),
                    "options": [
                        image_of(s.candidate.source_path if o == SOURCE else s.candidate.images[o]) for o in s.options
                    ],
                }
                for s in mine
            ],
        }
        atomic_write_bytes(site / f"{person}.html", page_html(spec.title, data))
    for name in ASSETS:
        atomic_write_bytes(site / name, asset(name))
    atomic_write_bytes(site / "index.html", index_html(study_id, people))
    atomic_write_bytes(out / "assignments.csv", csv_bytes(rows, ASSIGNMENT_COLUMNS))
    atomic_write_json(existing, definition)
    return definition
