"""Read participants' exported answers against the study that made their pages.

Every problem that would change a count is either an error naming the file (a response from another
study, an unknown participant, a participant twice, an answer to a question the page never asked, a
choice outside the options) or a counted exclusion listed in exclusions.csv (no response file,
unanswered questions, failed attention checks). Nothing is dropped silently.
"""

import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from monkey.errors import DataError
from monkey.study.assignment import CHECK, SOURCE
from monkey.study.site import ASSIGNMENT_COLUMNS, FORMAT, RESPONSE_FORMAT
from monkey.text_files import read_text


@dataclass(frozen=True)
class Study:
    definition: dict
    assignments: pd.DataFrame  # one row per (participant, question, position)

    @property
    def study_id(self) -> str:
        return self.definition["study_id"]

    @property
    def methods(self) -> list[str]:
        return [m["label"] for m in self.definition["methods"]]


def load_study(folder: Path) -> Study:
    path, table = folder / "study.json", folder / "assignments.csv"
    if not path.is_file() or not table.is_file():
        raise DataError(f"{folder}: not a study folder (needs study.json and assignments.csv from monkey-study build)")
    definition = read_definition(path)
    try:
        assignments = pd.read_csv(
            io.StringIO(read_text(table)), dtype={"participant": str, "question": str, "option": str, "method": str}
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise DataError(f"{table}: not the assignments table monkey-study build writes ({one_line(err)})") from None
    missing = [column for column in ASSIGNMENT_COLUMNS if column not in assignments.columns]
    if missing:
        raise DataError(f"{table}: columns {missing} missing; monkey-study build writes {ASSIGNMENT_COLUMNS}")
    if not pd.api.types.is_integer_dtype(assignments["position"]) or assignments["participant"].isna().any():
        raise DataError(f"{table}: every row needs a participant and a whole-number position (rewrite it with build)")
    assignments["method"] = assignments["method"].fillna("")
    return Study(definition, assignments)


def one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def read_definition(path: Path) -> dict:
    """study.json, checked for the keys tally reads: a truncated or hand-edited file stops here."""
    try:
        definition = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: not JSON ({err.msg} at line {err.lineno} column {err.colno}); rebuild it with monkey-study build"
        ) from None
    if not isinstance(definition, dict) or definition.get("format") != FORMAT:
        found = definition.get("format") if isinstance(definition, dict) else type(definition).__name__
        raise DataError(f"{path}: format {found!r}, expected {FORMAT!r}")
    methods, datasets = definition.get("methods"), definition.get("datasets")
    if not isinstance(definition.get("study_id"), str):
        raise DataError(f"{path}: key 'study_id' must be a string")
    if not isinstance(methods, list) or not all(
        isinstance(m, dict) and isinstance(m.get("label"), str) and isinstance(m.get("method"), str) for m in methods
    ):
        raise DataError(f"{path}: key 'methods' must be a list of objects with 'label' and 'method' strings")
    if not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets):
        raise DataError(f"{path}: key 'datasets' must be a list of dataset names")
    return definition


def response_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.glob("*.json"))
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path}: no such response file or folder")
    if not files:
        raise DataError(f"no response file (*.json) in {[str(p) for p in paths]}")
    return files


def read_response(path: Path, study: Study) -> dict:
    try:
        response = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not a JSON response file ({err})") from err
    if not isinstance(response, dict) or response.get("format") != RESPONSE_FORMAT:
        raise DataError(f"{path}: not a monkey-study response (format must be {RESPONSE_FORMAT!r})")
    if response.get("study_id") != study.study_id:
        raise DataError(
            f"{path}: a response to study {response.get('study_id')!r}, not to this study {study.study_id!r}"
        )
    if not isinstance(response.get("answers"), list):
        raise DataError(f"{path}: key 'answers' must be a list")
    return response


def read_answers(study: Study, paths: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(answers, exclusions). answers: one row per answered screen with the chosen option and whether
    the participant is kept; exclusions: one row per participant left out, with the reason."""
    table = study.assignments
    people = list(dict.fromkeys(table["participant"]))
    seen: dict[str, Path] = {}
    rows, exclusions = [], []
    for path in response_files(paths):
        response = read_response(path, study)
        person = response.get("participant")
        if not isinstance(person, str) or person not in people:
            raise DataError(f"{path}: participant {person!r} is not in this study ({people[0]}..{people[-1]})")
        if person in seen:
            raise DataError(f"{path}: participant {person!r} answered twice (also in {seen[person]}); keep one file")
        seen[person] = path
        mine = table[table["participant"] == person]
        options = {q: group.sort_values("position") for q, group in mine.groupby("question")}
        answered: set[str] = set()
        for index, answer in enumerate(response["answers"]):
            if not isinstance(answer, dict):
                raise DataError(f"{path}: answers[{index}] must be an object with 'question' and 'choice'")
            question, choice = answer.get("question"), answer.get("choice")
            if not isinstance(question, str) or question not in options:
                raise DataError(f"{path}: answers[{index}] names question {question!r}, not on {person}'s page")
            if question in answered:
                raise DataError(f"{path}: question {question!r} is answered twice")
            if type(choice) is not int or not 0 <= choice < len(options[question]):
                raise DataError(f"{path}: answers[{index}].choice={choice!r}, allowed 0..{len(options[question]) - 1}")
            answered.add(question)
            shown = options[question].iloc[choice]
            rows.append(
                {
                    "participant": person,
                    "file": str(path),
                    "question": question,
                    "kind": shown["kind"],
                    "dataset": shown["dataset"],
                    "item_id": shown["item_id"],
                    "position": choice,
                    "chosen": shown["option"],
                    "passed": None if shown["kind"] != CHECK else shown["option"] == SOURCE,
                    "ms": answer.get("ms"),
                }
            )
        missing = sorted(set(options) - answered)
        if missing:
            exclusions.append(
                {
                    "participant": person,
                    "file": str(path),
                    "reason": "incomplete",
                    "detail": f"{len(missing)} of {len(options)} unanswered: {', '.join(missing[:5])}",
                }
            )
    for person in people:
        if person not in seen:
            exclusions.append({"participant": person, "file": "", "reason": "no response", "detail": ""})
    answers = pd.DataFrame(
        rows,
        columns=["participant", "file", "question", "kind", "dataset", "item_id", "position", "chosen", "passed", "ms"],
    )
    return answers, pd.DataFrame(exclusions, columns=["participant", "file", "reason", "detail"])


def failed_checks(answers: pd.DataFrame, allowed_failures: int) -> pd.DataFrame:
    """Exclusions for participants who failed more attention checks than allowed."""
    checks = answers[answers["kind"] == CHECK]
    failed_flags = checks.assign(failed=~checks["passed"].astype(bool))
    failures = failed_flags.groupby("participant")["failed"].agg(["sum", "size"])
    failed = failures[failures["sum"] > allowed_failures]
    return pd.DataFrame(
        [
            {
                "participant": p,
                "file": answers.loc[answers["participant"] == p, "file"].iloc[0],
                "reason": "failed attention check",
                "detail": f"{int(r['sum'])} of {int(r['size'])} checks failed",
            }
            for p, r in failed.iterrows()
        ],
        columns=["participant", "file", "reason", "detail"],
    )
