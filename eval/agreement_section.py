"""The report's "Which metric agrees with people" section (eval.report.agreement): when a built user study and
its responses are named, the report computes how far each metric's pick agrees with the participants' picks
(and, given DreamBench++'s human ratings, Krippendorff's alpha) through the same code as
`monkey-study agreement` (monkey.study.agreement_run), reading the study's score rows from the report's own
run folders, and writes agreement.{csv,md} beside Table 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monkey.errors import ConfigError
from monkey.study.agreement import agreement_markdown
from monkey.study.agreement_run import Agreement, AgreementInputs, compute_agreement, write_agreement

KEYS = ("study", "responses", "dreambench", "dreambench_scores")


def agreement_inputs(
    settings: dict[str, Any] | None, eval_name: str, run_dirs: list[Path], boot: dict
) -> AgreementInputs | None:
    """The typed inputs from eval.report.agreement, or None when no study is named."""
    settings = dict(settings or {})
    unknown = set(settings) - set(KEYS)
    if unknown:
        raise ConfigError(f"eval.report.agreement: unknown key(s) {sorted(unknown)}; allowed: {list(KEYS)}")
    if not settings.get("study"):
        return None
    responses = settings.get("responses") or []
    responses = [responses] if isinstance(responses, str) else list(responses)
    if not responses:
        raise ConfigError(
            "eval.report.agreement.study is set but eval.report.agreement.responses is empty: name the response "
            "files or folders of that study"
        )
    optional = {key: Path(settings[key]) if settings.get(key) else None for key in ("dreambench", "dreambench_scores")}
    return AgreementInputs(
        Path(settings["study"]), [Path(r) for r in responses], eval_name, list(run_dirs),
        optional["dreambench"], optional["dreambench_scores"],
        int(boot["samples"]), int(boot["seed"]), float(boot["confidence"]),
    )  # fmt: skip


def report_agreement(inputs: AgreementInputs | None, out_dir: Path) -> Agreement | None:
    if inputs is None:
        return None
    agreement = compute_agreement(inputs)
    write_agreement(agreement, out_dir)
    return agreement


def agreement_section(agreement: Agreement | None) -> list[str]:
    """report.md's section: agreement.md one heading level down."""
    if agreement is None:
        return []
    lines = agreement_markdown(agreement.study, agreement.dreambench).splitlines()
    demoted = ["#" + line if line.startswith("#") else line for line in lines]
    note = (
        f"{agreement.participants} participants who passed every attention check; files `agreement.csv`, "
        f"`agreement.md`{', `dreambench_alpha.csv`' if agreement.dreambench is not None else ''}."
    )
    return [*demoted[:2], note, "", *demoted[2:], ""]
