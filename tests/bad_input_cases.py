"""Run a console entry point in this process and check a refusal (imported by the bad-input tables).

A case is (kind, entry, argv, expected exit code, words the one error line must contain). `run_entry`
calls the entry's `main(argv)` with stdout/stderr captured and the `monkey` logger's records kept;
`check_refusal` asserts what docs/configuration.md promises for bad input: the exit code, exactly one
error line (a logged ERROR for the logging CLIs, one stderr line for the printing ones), no traceback,
the words, and nothing a run writes (configs/<hash>.json, a manifest, an image) under the run root.
A subprocess per case would cost ~5 s of imports; in-process a case costs a config composition.
"""

import contextlib
import importlib
import io
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# entry -> (its `main(argv) -> int`, how it reports an error: a logged record or a stderr line)
ENTRIES: dict[str, tuple[str, str]] = {
    "monkey-bench": ("monkey.cli:main", "log"),
    "monkey-report": ("monkey.eval.cli:main", "log"),
    "monkey-attention": ("monkey.figures.cli:main", "log"),
    "monkey-import": ("monkey.import_cli:main", "stderr"),
    "monkey-data": ("monkey.datasets.cli:main", "stderr"),
    "monkey-study": ("monkey.study.cli:main", "stderr"),
}
# what a run writes once it has started work: a refused run must have written none of it
RUN_OUTPUTS = ("configs/*.json", "manifest/*.jsonl", "images/**/*.png", "scores/**/*.json")


@dataclass(frozen=True)
class Case:
    kind: str  # config values, composition, names, paths, ...
    argv: tuple[str, ...]
    words: tuple[str, ...]  # each must be in the one error line
    code: int = 2
    entry: str = "monkey-bench"

    @property
    def id(self) -> str:
        text = " ".join(self.argv)
        return f"{self.entry}:{text[:60]}" + ("..." if len(text) > 60 else "")


@dataclass
class Outcome:
    code: int
    errors: list[str]  # the error lines: ERROR records (log CLIs) or stderr lines (printing CLIs)
    output: str  # stdout + stderr + any traceback that escaped
    raised: str | None = None  # the traceback of an exception that escaped main()


class _Records(logging.Handler):
    """Keeps the ERROR records of the `monkey` logger; survives Hydra's logging.config (a non-root logger)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def entry_main(entry: str) -> Callable[[list[str]], int]:
    module, function = ENTRIES[entry][0].split(":")
    return getattr(importlib.import_module(module), function)


def run_entry(entry: str, argv: list[str] | tuple[str, ...]) -> Outcome:
    """`<entry> argv` in this process: its exit code, error lines and output; never raises."""
    out, err, records = io.StringIO(), io.StringIO(), _Records()
    logger = logging.getLogger("monkey")
    logger.addHandler(records)
    raised = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = entry_main(entry)(list(argv))
            except SystemExit as stop:  # argparse, or a main that exits itself
                code = stop.code if isinstance(stop.code, int) else 1
            except Exception:  # the table reports it as a traceback
                raised, code = traceback.format_exc(), 1
    finally:
        logger.removeHandler(records)
    output = out.getvalue() + err.getvalue() + (raised or "")
    if ENTRIES[entry][1] == "log":
        errors = [r.getMessage() for r in records.records]
    else:
        errors = [line for line in err.getvalue().splitlines() if line.strip()]
    return Outcome(int(code or 0), errors, output, raised)


def written_outputs(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for pattern in RUN_OUTPUTS for p in root.rglob(pattern))


def check_refusal(outcome: Outcome, case: Case, run_root: Path | None = None) -> str:
    """Assert the promise for a refused input; returns the one error line."""
    assert outcome.raised is None, f"{case.id}: a traceback:\n{outcome.raised}"
    assert "Traceback" not in outcome.output, f"{case.id}: a traceback in the output:\n{outcome.output}"
    assert outcome.code == case.code, f"{case.id}: exit {outcome.code}, expected {case.code}:\n{outcome.output}"
    assert len(outcome.errors) == 1, f"{case.id}: {len(outcome.errors)} error lines: {outcome.errors}"
    line = outcome.errors[0]
    assert "\n" not in line, f"{case.id}: the error spans lines: {line!r}"
    missing = [w for w in case.words if w not in line]
    assert not missing, f"{case.id}: {missing} not in {line!r}"
    if run_root is not None and run_root.exists():
        assert not written_outputs(run_root), f"{case.id}: a refused run wrote {written_outputs(run_root)}"
    return line
