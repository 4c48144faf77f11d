"""Tally a study: responses in, Table 3 and the statistics the paper lacks out.

Files written to the tally folder:
    table3.csv / .md / .tex   counts per method per dataset and aggregated, the paper's beside them
    win_rates.csv             share of answers won, percentile bootstrap CI over participants
    bradley_terry.csv         Luce/Bradley-Terry log-strength per method, bootstrap CI over participants
    agreement.csv             Krippendorff's alpha (nominal) per dataset and aggregated
    choices.csv               every answer of every participant (kept or not), with the chosen method
    exclusions.csv            participants left out and why (no response, incomplete, failed checks)
    tally.md                  all of the above on one page
"""

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from monkey.atomic import atomic_write_bytes
from monkey.errors import DataError
from monkey.study import stats
from monkey.study.assignment import STUDY
from monkey.study.responses import failed_checks, load_study, read_answers
from monkey.study.table3 import read_paper_table3, table3_latex, table3_long, table3_markdown


@dataclass(frozen=True)
class TallySettings:
    resamples: int = 2000  # win-rate bootstrap
    bt_resamples: int = 200  # Bradley-Terry bootstrap (one choix fit each)
    confidence: float = 0.95
    seed: int = 0
    bt_alpha: float = 0.01  # choix regularisation: finite scores for never-chosen methods
    allowed_check_failures: int = 0


@dataclass
class Tally:
    choices: pd.DataFrame
    exclusions: pd.DataFrame
    counts: pd.DataFrame
    table3: pd.DataFrame
    win_rates: pd.DataFrame
    bradley_terry: pd.DataFrame
    agreement: pd.DataFrame


def tally_study(
    study_dir: Path, responses: list[Path], settings: TallySettings, paper_names: dict[str, str], paper_table: Path
) -> Tally:
    study = load_study(study_dir)
    answers, exclusions = read_answers(study, responses)
    exclusions = pd.concat([exclusions, failed_checks(answers, settings.allowed_check_failures)], ignore_index=True)
    answers["kept"] = ~answers["participant"].isin(exclusions["participant"])
    choices = answers[answers["kept"] & (answers["kind"] == STUDY)]
    if choices.empty:
        reasons = ", ".join(f"{n} {r}" for r, n in exclusions["reason"].value_counts().items())
        raise DataError(f"no participant left to count in {[str(p) for p in responses]} (excluded: {reasons})")
    methods, datasets = study.methods, study.definition["datasets"]
    rows_method = {m["label"]: m["method"] for m in study.definition["methods"]}
    names = {label: paper_names.get(label, paper_names.get(method, "")) for label, method in rows_method.items()}
    counts = stats.counts(choices, methods, datasets)
    s = settings
    return Tally(
        choices=answers,
        exclusions=exclusions,
        counts=counts,
        table3=table3_long(counts, read_paper_table3(paper_table), names),
        win_rates=stats.win_rates(choices, methods, datasets, s.resamples, s.seed, s.confidence),
        bradley_terry=stats.bradley_terry(choices, methods, datasets, s.bt_resamples, s.seed, s.confidence, s.bt_alpha),
        agreement=stats.agreement(choices, methods, datasets),
    )


def frame_markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    columns = list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        cells = [f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def tally_markdown(tally: Tally, settings: TallySettings) -> str:
    kept = tally.choices[tally.choices["kept"]]["participant"].nunique()
    reasons = tally.exclusions["reason"].value_counts()
    excluded = ", ".join(f"{n} {reason}" for reason, n in reasons.items()) or "none"
    return "\n".join(
        [
            "# User study",
            "",
            f"{kept} participants kept; excluded: {excluded} (exclusions.csv). "
            f"{len(tally.choices[tally.choices['kept'] & (tally.choices['kind'] == STUDY)])} answers counted.",
            "",
            "## Table 3: times chosen best (share of answers)",
            "",
            table3_markdown(tally.table3),
            f"## Win rates ({100 * settings.confidence:.0f}% percentile bootstrap over participants, "
            f"{settings.resamples} resamples; scipy.stats.bootstrap)",
            "",
            frame_markdown(tally.win_rates),
            f"## Bradley-Terry (Luce) log-strengths (choix.ilsr_top1, alpha={settings.bt_alpha}; "
            f"{settings.bt_resamples} bootstrap resamples over participants)",
            "",
            frame_markdown(tally.bradley_terry),
            "## Inter-rater agreement (Krippendorff's alpha, nominal; krippendorff package)",
            "",
            frame_markdown(tally.agreement),
            "## Exclusions",
            "",
            frame_markdown(tally.exclusions) if len(tally.exclusions) else "none\n",
        ]
    )


def write_tally(tally: Tally, out: Path, settings: TallySettings) -> None:
    def csv(name: str, frame: pd.DataFrame) -> None:
        atomic_write_bytes(out / name, frame.to_csv(index=False, float_format="%.6g").encode())

    csv("table3.csv", tally.table3)
    atomic_write_bytes(out / "table3.md", table3_markdown(tally.table3).encode())
    atomic_write_bytes(out / "table3.tex", table3_latex(tally.table3).encode())
    csv("win_rates.csv", tally.win_rates)
    csv("bradley_terry.csv", tally.bradley_terry)
    csv("agreement.csv", tally.agreement)
    csv("choices.csv", tally.choices)
    csv("exclusions.csv", tally.exclusions)
    atomic_write_bytes(out / "tally.md", tally_markdown(tally, settings).encode())
