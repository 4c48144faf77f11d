"""Mutation testing of MONKEY's mask extraction and the report's numbers (not run in CI).

mutmut (2.x, `pip install "mutmut<3"`) edits one source file at a time in place, runs a fast selection of
tests against each mutant, and puts the file back. Surviving mutants are changes no test notices:
each is either a test to write or an equivalent mutant (same behaviour), said so in the record.

    python benchmarks/mutation.py                       # the default targets (hours on 2 shared cores)
    python benchmarks/mutation.py --target masks        # one target
    python benchmarks/mutation.py --summarize-only      # rewrite the record from .mutmut-cache

Writes results/mutation/<name>.json and .md (`--name`, default mutmut): per file the mutants killed,
survived, timed out, not reached (`untested`: the run was time-boxed), and each survivor's diff. Run it
in a clean checkout: it edits the source files while it runs (and restores them; a killed run may leave
a mutant in place, so `git diff` after one). To run it beside your work, run it in a copy of the tree
whose editable install points at the copy.
"""

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from monkey.atomic import atomic_write_bytes, atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".mutmut-cache"
OUT = ROOT / "results" / "mutation"

# target -> (files mutated, the light tests that judge them: torch/numpy/pandas only, no model, run with
# --noconftest, about 5 s of CPU each; the suite's heavier tests of these files are not run per mutant)
TARGETS: dict[str, tuple[list[str], list[str]]] = {
    "masks": (["src/monkey/adapter/masks.py"], ["tests/test_monkey_mask_rules.py"]),
    "aggregate": (["eval/aggregate.py", "eval/pareto.py"], ["tests/test_eval_aggregate.py"]),
}
DEFAULT_TARGETS = ["masks", "aggregate"]
STATUS = {
    "ok_killed": "killed",
    "bad_survived": "survived",
    "bad_timeout": "timeout",
    "ok_suspicious": "suspicious",
    "untested": "untested",
    "skipped": "skipped",
}


def runner(tests: list[str]) -> str:
    return f"{sys.executable} -m pytest --noconftest -x -q -p no:cacheprovider " + " ".join(tests)


def run_target(name: str) -> dict:
    files, tests = TARGETS[name]
    command = [
        sys.executable,
        "-m",
        "mutmut",
        "run",
        "--paths-to-mutate",
        ",".join(files),
        "--runner",
        runner(tests),
        "--tests-dir",
        "tests",
        # string literals (error messages, column names, labels) give mostly meaningless survivors and
        # cost a test run each on a 2-core machine: not mutated
        "--disable-mutation-types",
        "string,fstring",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    return {
        "target": name,
        "files": files,
        "tests": tests,
        "exit_code": done.returncode,
        "seconds": round(time.perf_counter() - start, 1),
    }


def mutant_rows() -> list[dict]:
    """Every mutant in mutmut's cache: file, 1-based line, the line's text, status."""
    with sqlite3.connect(CACHE) as db:
        rows = db.execute(
            "SELECT m.id, s.filename, l.line_number, l.line, m.status FROM mutant m "
            "JOIN line l ON m.line = l.id JOIN sourcefile s ON l.sourcefile = s.id ORDER BY m.id"
        ).fetchall()
    return [
        {"id": i, "file": f, "line": n + 1, "source": text.strip(), "status": STATUS.get(status, status)}
        for i, f, n, text, status in rows
    ]


def diff_of(mutant_id: int) -> str:
    shown = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", str(mutant_id)], cwd=ROOT, capture_output=True, text=True
    )
    return "\n".join(
        line for line in shown.stdout.splitlines() if line.startswith(("-", "+")) and line[:3] not in ("---", "+++")
    )


def summarize(runs: list[dict], notes: dict[str, str]) -> dict:
    mutants = mutant_rows()
    per_file: dict[str, dict[str, int]] = {}
    for row in mutants:
        counts = per_file.setdefault(row["file"], {s: 0 for s in STATUS.values()})
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    survivors = [
        {**row, "diff": diff_of(row["id"]), "note": notes.get(f"{row['file']}:{row['line']}", "")}
        for row in mutants
        if row["status"] in ("survived", "timeout", "suspicious")
    ]
    totals = {s: sum(c.get(s, 0) for c in per_file.values()) for s in STATUS.values()}
    return {
        "tool": subprocess.run([sys.executable, "-m", "mutmut", "version"], capture_output=True, text=True)
        .stdout.strip()
        .replace("mutmut version", "mutmut"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "runs": runs,
        "per_file": per_file,
        "totals": totals,
        "survivors": survivors,
    }


def markdown(record: dict, context: str) -> str:
    lines = [
        "# Mutation testing (mutmut)",
        "",
        context,
        "",
        f"Tool: {record['tool']}, Python {record['python']}, {record['machine']}.",
        "",
        "| file | mutants | killed | survived | timeout | suspicious |",
        "|---|---|---|---|---|---|",
    ]
    for path, c in record["per_file"].items():
        total = sum(c.values())
        lines.append(f"| `{path}` | {total} | {c['killed']} | {c['survived']} | {c['timeout']} | {c['suspicious']} |")
    t = record["totals"]
    lines.append(
        f"| **all** | {sum(t.values())} | {t['killed']} | {t['survived']} | {t['timeout']} | {t['suspicious']} |"
    )
    lines += ["", "## Runs", ""]
    for run in record["runs"]:
        lines.append(
            f"- `{run['target']}`: {', '.join(run['files'])}; {run['seconds']} s; tests: "
            + ", ".join(f"`{t.split('::')[-1]}`" for t in run["tests"])
        )
    lines += ["", "## Surviving mutants", ""]
    for s in record["survivors"]:
        note = f" {s['note']}" if s["note"] else ""
        lines += [f"- `{s['file']}:{s['line']}` ({s['status']}){note}", "", "```diff", s["diff"], "```", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target", action="append", choices=sorted(TARGETS), help="default: " + ", ".join(DEFAULT_TARGETS)
    )
    parser.add_argument("--summarize-only", action="store_true", help="write the record from .mutmut-cache")
    parser.add_argument("--runs", type=Path, help="a JSON list of earlier runs to put in the record")
    parser.add_argument("--notes", type=Path, help='JSON {"file:line": note} explaining survivors')
    parser.add_argument("--name", default="mutmut", help="record stem: results/mutation/<name>.json and .md")
    parser.add_argument("--context", default="", help="a sentence for the record (machine load, what was left out)")
    args = parser.parse_args()
    runs = json.loads(args.runs.read_text()) if args.runs else []
    if not args.summarize_only:
        runs += [run_target(name) for name in args.target or DEFAULT_TARGETS]
    notes = json.loads(args.notes.read_text()) if args.notes else {}
    record = summarize(runs, notes)
    atomic_write_json(OUT / f"{args.name}.json", record)
    atomic_write_bytes(OUT / f"{args.name}.md", markdown(record, args.context).encode("utf-8"))
    print(json.dumps(record["totals"]))


if __name__ == "__main__":
    main()
