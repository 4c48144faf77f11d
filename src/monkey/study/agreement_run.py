"""One agreement computation for both its callers: `monkey-study agreement` and the report's "Which metric
agrees with people" section (eval.report.agreement). Both read a built study, its responses and the score
rows of the study's methods, so the two can never disagree on which answers or which rows count."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from monkey.atomic import atomic_write_bytes
from monkey.errors import ConfigError
from monkey.study import agreement as ag


@dataclass(frozen=True)
class AgreementInputs:
    """What an agreement table is computed from; `runs`: where the study's run folders are now (None: where the
    study recorded them). `dreambench` and `dreambench_scores` go together."""

    study: Path
    responses: list[Path]
    eval_name: str = "default"
    runs: list[Path] | None = None
    dreambench: Path | None = None
    dreambench_scores: Path | None = None
    resamples: int = 2000
    seed: int = 0
    confidence: float = 0.95


@dataclass(frozen=True)
class Agreement:
    study: pd.DataFrame  # one row per metric (monkey.study.agreement.agreement_with_study)
    dreambench: pd.DataFrame | None  # one row per (metric, method) and a mean per metric, or None
    participants: int
    metrics: list[str]


def compute_agreement(inputs: AgreementInputs) -> Agreement:
    from monkey.study.assignment import STUDY
    from monkey.study.responses import failed_checks, load_study, read_answers

    if (inputs.dreambench is None) != (inputs.dreambench_scores is None):
        raise ConfigError("--dreambench and --dreambench-scores go together (the human ratings and our scores)")
    study = load_study(inputs.study)
    answers, exclusions = read_answers(study, list(inputs.responses))
    excluded = set(pd.concat([exclusions, failed_checks(answers, 0)])["participant"])
    answers = answers[(answers["kind"] == STUDY) & ~answers["participant"].isin(excluded)]
    scores = ag.study_scores(study.definition, inputs.eval_name, inputs.runs)
    metrics = ag.score_metrics(scores)
    table = ag.agreement_with_study(answers, scores, metrics, inputs.resamples, inputs.seed, inputs.confidence)
    dreambench = None
    if inputs.dreambench is not None and inputs.dreambench_scores is not None:
        ours = pd.read_csv(inputs.dreambench_scores, dtype={"method": str, "key": str})
        missing = {"method", "key"} - set(ours.columns)
        if missing:
            raise ConfigError(f"--dreambench-scores {inputs.dreambench_scores}: no column {sorted(missing)}")
        dreambench = ag.agreement_with_dreambench(
            inputs.dreambench, ours, [c for c in ours.columns if c not in ("method", "key")]
        )
    return Agreement(table, dreambench, int(answers["participant"].nunique()), metrics)


def write_agreement(agreement: Agreement, out: Path) -> None:
    """out/agreement.csv, out/dreambench_alpha.csv (with DreamBench++'s ratings) and out/agreement.md."""
    atomic_write_bytes(out / "agreement.csv", agreement.study.to_csv(index=False, float_format="%.6g").encode())
    if agreement.dreambench is not None:
        text = agreement.dreambench.to_csv(index=False, float_format="%.6g")
        atomic_write_bytes(out / "dreambench_alpha.csv", text.encode())
    atomic_write_bytes(out / "agreement.md", ag.agreement_markdown(agreement.study, agreement.dreambench).encode())
