"""MkDocs hook: the benchmark page shows the committed records of results/benchmarks/*.md.

The records are written by the benchmark scripts; reading them at build time means the page shows
exactly the recorded figures and never a hand copy of them. Each record's headings move down two
levels so they nest under the page's "Records" section.
"""

from __future__ import annotations

import re
from pathlib import Path

RECORDS = Path(__file__).resolve().parents[1] / "results" / "benchmarks"
MARKER = "<!-- benchmark records -->"
ONE_RECORD = re.compile(r"<!-- benchmark record: ([a-z0-9_]+) -->")  # one record on a page of its own topic


def record_markdown(path: Path) -> str:
    """One record with its headings demoted by two levels (`#` -> `###`), code fences left alone."""
    lines, fence = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        if not fence and re.match(r"^#{1,4} ", line):
            line = "##" + line
        lines.append(line)
    return "\n".join(lines) + f"\n\nRecord: `results/benchmarks/{path.name}` (and `{path.stem}.json`).\n"


def records_markdown(folder: Path = RECORDS) -> str:
    return "\n\n".join(record_markdown(p) for p in sorted(folder.glob("*.md")))


def on_page_markdown(markdown: str, page, config, files) -> str:  # MkDocs hook signature
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, records_markdown())
    return ONE_RECORD.sub(lambda match: record_markdown(RECORDS / f"{match.group(1)}.md"), markdown)
