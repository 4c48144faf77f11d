"""Writes docs/reference/configuration.md from conf/: every group, option file and key.

The page is generated so it cannot drift from the configs: `tests/test_docs.py` renders it again and
compares it with the committed page. After changing anything under conf/, run

    python tools/config_reference.py --write

Each key is listed with its default as written in the file and the comment beside it or just above it;
a short comment line that names a run of keys ("mask pass", "sampler", or one ending in ":") becomes a
bold label row instead.
Values come from the YAML text itself, so interpolations (`${...}`) show as written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
PAGE = ROOT / "docs" / "reference" / "configuration.md"

# what each group decides (the group folders themselves carry no description file)
GROUP_INTRO = {
    "": "`config.yaml` is `monkey-bench`'s; `attention.yaml` is `monkey-attention`'s and extends it.",
    "dataset": "Where subject images come from and how they are normalised (`dataset=`; see "
    "[Datasets](../datasets.md)).",
    "eval": "Metric backbones, score-set name and report settings (`eval=`; see "
    "[Evaluation and reports](../evaluation.md)).",
    "experiment": "A whole study: groups, limits and the multirun sweep (`experiment=`; see "
    "[Sweeps and ablations](../sweeps.md)).",
    "hydra/launcher": "Hydra launchers (`hydra/launcher=`; see [Scaling out](../scaling.md)).",
    "logger": "Experiment tracking of reports (`logger=`; see [Evaluation and reports](../evaluation.md)).",
    "method": "How an image is made (`method=`; see [Methods and baselines](../methods/index.md)).",
    "model": "Pipeline class, hub id or path, IP-Adapter, scheduler, dtype, native size (`model=`).",
    "prompts": "Prompt lists and the template (`prompts=`; see [Datasets](../datasets.md)).",
}

KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[^\s#\-\"'][^:#]*?|\"[^\"]*\"|'[^']*'):(?P<rest>\s.*|)$")
ITEM_LINE = re.compile(r"^(?P<indent>\s*)- (?P<rest>.*)$")


@dataclass
class Entry:
    """One key of an option file: dotted path, default as written, comment (no path: a section label)."""

    path: str
    default: str
    comment: str


@dataclass
class OptionDoc:
    """One option file: its header comment, package directive, defaults list and keys."""

    group: str
    option: str
    rel_path: str
    header: list[str] = field(default_factory=list)
    package: str | None = None
    entries: list[Entry] = field(default_factory=list)


def split_comment(text: str) -> tuple[str, str, int]:
    """Value text, comment text and the comment's column (-1: none), outside quotes and braces."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip(), text[i + 1 :].strip(), i
    return text.rstrip(), "", -1


def compact(value: object, in_defaults: bool = False) -> str:
    """A loaded YAML value written on one line (block lists and mappings)."""
    if in_defaults and isinstance(value, list):
        return "[" + ", ".join(compact(v)[1:-1] if isinstance(v, dict) else compact(v) for v in value) + "]"
    if isinstance(value, list):
        return "[" + ", ".join(compact(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {compact(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """Leaf keys of a nested mapping, dotted."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def is_label(lines: list[str]) -> bool:
    """A comment line above keys that names the run of keys after it ("mask pass", "cost (...)", "...:")
    rather than describing the next key alone."""
    if len(lines) != 1:
        return False
    words = re.sub(r"\([^)]*\)", "", lines[0]).split()
    return lines[0].endswith(":") or len(words) <= 4


def lookup(tree: object, parts: list[str]) -> object:
    for part in parts:
        tree = tree[part] if isinstance(tree, dict) else None
    return tree


def parse_option(path: Path) -> OptionDoc:
    """Scan one YAML file line by line for keys and their comments; values of blocks come from YAML."""
    rel = path.relative_to(CONF)
    group = rel.parent.as_posix() if rel.parent != Path(".") else ""
    doc = OptionDoc(group=group, option=rel.stem, rel_path=f"conf/{rel.as_posix()}")
    text = path.read_text()
    tree = yaml.safe_load(text) or {}
    lines = text.splitlines()
    stack: list[tuple[int, str]] = []  # (indent, key) of the open mappings
    pending: list[str] = []  # comment lines above the next key
    in_header = True
    skip_deeper_than: int | None = None  # inside a block scalar or a multi-line flow value
    last_entry: Entry | None = None
    last_comment_col = -1
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_deeper_than is not None:
            if stripped and indent <= skip_deeper_than:
                skip_deeper_than = None
            else:
                continue
        if not stripped:
            in_header = False
            pending = []
            continue
        if stripped.startswith("#"):
            body = stripped[1:].strip()
            if body.startswith("@package"):
                doc.package = body.split(None, 1)[1]
            elif in_header:
                doc.header.append(body)
            elif last_entry is not None and line.index("#") == last_comment_col and last_comment_col > 0:
                last_entry.comment = f"{last_entry.comment} {body}".strip()
            else:
                pending.append(body)
            continue
        in_header = False
        if ITEM_LINE.match(line):
            item_value, item_comment, _ = split_comment(ITEM_LINE.match(line).group("rest"))
            if stack and stack[-1][1] == "defaults" and item_comment:
                # a defaults entry's comment belongs to the defaults list
                defaults = next(e for e in doc.entries if e.path.endswith("defaults"))
                defaults.comment = f"{defaults.comment} ({item_value.strip()}) {item_comment}".strip()
            continue
        match = KEY_LINE.match(line)
        if not match:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = match.group("key").strip().strip("\"'")
        parts = [k for _, k in stack] + [key]
        value_text, comment, col = split_comment(match.group("rest"))
        value_text = value_text.strip()
        loaded = lookup(tree, parts)
        if pending and is_label(pending) and value_text:
            doc.entries.append(Entry(path="", default="", comment=pending[0]))
        elif pending:
            comment = " ".join([*pending, comment]).strip()
        pending = []
        if value_text in (">-", ">", "|", "|-", ">+", "|+"):
            default = compact(loaded).strip()
            skip_deeper_than = indent
        elif value_text.startswith(("[", "{")) and value_text.count(value_text[0]) > value_text.count(
            "]" if value_text[0] == "[" else "}"
        ):
            default = compact(loaded)
            skip_deeper_than = indent
        elif value_text:
            default = value_text
        elif isinstance(loaded, dict) and loaded:
            default = ""  # a mapping: its keys follow
            stack.append((indent, key))
        else:
            default = compact(loaded, in_defaults=key == "defaults")
            stack.append((indent, key))
        if isinstance(loaded, dict) and loaded and value_text.startswith("{"):
            default = ""  # an inline mapping: one row per key below it
        entry = Entry(path=".".join(parts), default=default, comment=comment)
        doc.entries.append(entry)
        if isinstance(loaded, dict) and loaded and value_text.startswith("{"):
            doc.entries += [Entry(f"{entry.path}.{k}", compact(v), "") for k, v in flatten(loaded).items()]
        last_entry, last_comment_col = entry, (indent + len(key) + 1 + col if col >= 0 else -1)
    return doc


def cell(text: str, code: bool = False) -> str:
    """Markdown table cell: pipes escaped; code spans fenced with enough backticks; no raw HTML."""
    text = text.replace("|", "\\|")
    if not code:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if not text:
        return text
    ticks = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def option_docs() -> list[OptionDoc]:
    files = sorted(CONF.rglob("*.yaml"), key=lambda p: (p.parent != CONF, p.relative_to(CONF).as_posix()))
    return [parse_option(p) for p in files]


def anchor(doc: OptionDoc) -> str:
    return re.sub(r"[^a-z0-9]+", "-", f"{doc.group}-{doc.option}".lower()).strip("-")


def render() -> str:
    """The whole reference page as Markdown."""
    docs = option_docs()
    groups: dict[str, list[OptionDoc]] = {}
    for doc in docs:
        groups.setdefault(doc.group, []).append(doc)
    out = [
        "# Configuration reference",
        "",
        "<!-- generated by tools/config_reference.py from conf/; do not edit: run"
        " `python tools/config_reference.py --write` -->",
        "",
        "Every config group, every option file and every key under `conf/`, with its default as written in"
        " the file and the comment beside it. Generated from the files themselves (`python"
        " tools/config_reference.py --write`; a test fails when this page and `conf/` disagree). Any key can be"
        " overridden on the command line (`monkey-bench method.threshold=0.3`); a group is chosen with"
        " `group=option` (`monkey-bench method=monkey`). How the groups fit together is in"
        " [Configuration](../configuration.md).",
        "",
        "| group | options |",
        "|---|---|",
    ]
    for group, members in groups.items():
        name = f"`{group}`" if group else "(primary)"
        links = ", ".join(f"[`{d.option}`](#{anchor(d)})" for d in members)
        out.append(f"| {name} | {links} |")
    for group, members in groups.items():
        out += ["", f"## {'Group `' + group + '`' if group else 'Primary configs'}", "", GROUP_INTRO.get(group, "")]
        for doc in members:
            title = f"`{doc.group}={doc.option}`" if doc.group else f"`{doc.option}`"
            out += ["", f"### {title} {{#{anchor(doc)}}}", "", f"File `{doc.rel_path}`."]
            if doc.package:
                out[-1] += f" Package `{doc.package}`."
            if doc.header:
                out += ["", cell(" ".join(doc.header))]
            if doc.entries:
                out += ["", "| key | default | comment |", "|---|---|---|"]
                out += [
                    f"| {cell(e.path, code=True)} | {cell(e.default, code=True)} | {cell(e.comment)} |"
                    if e.path
                    else f"| **{cell(e.comment)}** | | |"  # the comment line above a run of keys
                    for e in doc.entries
                    if e.default or e.comment  # a mapping without a comment: its keys say it all
                ]
            else:
                out += ["", "(no keys)"]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {PAGE.relative_to(ROOT)}")
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed page is stale")
    args = parser.parse_args(argv)
    page = render()
    if args.write:
        PAGE.parent.mkdir(parents=True, exist_ok=True)
        PAGE.write_text(page)
        print(f"wrote {PAGE.relative_to(ROOT)}")
    elif args.check:
        current = PAGE.read_text() if PAGE.exists() else ""
        if current != page:
            print(f"{PAGE.relative_to(ROOT)} is stale: run python tools/config_reference.py --write", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
