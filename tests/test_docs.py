"""The documentation cannot drift from the code: configs, method pages, commands, nav, README.

These checks read the files and the CLIs; one strict MkDocs build (about 2 s) runs where the docs extra
is installed, as in CI.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "tools"))

import config_reference  # noqa: E402
import readme_coverage  # noqa: E402
from mkdocs_hooks import records_markdown  # noqa: E402

# every conf/method/<name>.yaml and the page that documents it (a new method needs a line here)
METHOD_PAGES = {
    "monkey": "monkey.md",
    "monkey_sdxl": "sdxl.md",
    "monkey_multi": "multi_subject.md",
    "ip_adapter_multi": "multi_subject.md",
    "ip_adapter_halves": "multi_subject.md",
    "ip_adapter_1.0": "methods/ip_adapter.md",
    "ip_adapter_0.5": "methods/ip_adapter.md",
    "text_only": "methods/ip_adapter.md",
    "masactrl": "methods/masactrl.md",
    "tf_ti2i": "methods/tf_ti2i.md",
    "external": "methods/external.md",
    "freegraftor": "methods/freegraftor.md",
    "rectifid": "methods/rectifid.md",
}

QUICK_START_RUN = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.14.1 torchvision==0.29.1 "
    "&& pip install . && monkey-bench"
)
QUICK_START_TEST = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.14.1 torchvision==0.29.1 "
    '&& pip install -e ".[dev]" && python -m pytest -q'
)


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def nav_pages() -> list[str]:
    """Every file named in mkdocs.yml's nav, in order."""

    def walk(node) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, list):
            return [p for item in node for p in walk(item)]
        if isinstance(node, dict):
            return [p for value in node.values() for p in walk(value)]
        return []

    return walk(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])


def code_text(markdown: str) -> list[str]:
    """The lines of fenced blocks and the inline code spans: where commands are named."""
    out, fence = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fence = not fence
        elif fence:
            out.append(line)
        else:
            out += re.findall(r"`([^`]+)`", line)
    return out


# configuration reference ---------------------------------------------------------------------------


def test_config_reference_page_is_generated_from_conf():
    committed = (DOCS / "reference" / "configuration.md").read_text()
    assert committed == config_reference.render(), "run: python tools/config_reference.py --write"


def test_configuration_group_table_lists_every_option_file():
    """docs/configuration.md's group table is generated from conf/ (ablations, SDXL profiles, monkey_sdxl ...)."""
    page = (DOCS / "configuration.md").read_text()
    assert page == config_reference.render_overview(page), "run: python tools/config_reference.py --write"
    for group in config_reference.OVERVIEW_GROUPS:
        for path in (ROOT / "conf" / group).glob("*.yaml"):
            assert f"#{group}-{path.stem}".replace(".", "-").replace("_", "-").lower() in page, path


def leaf_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys += leaf_keys(value, f"{path}.")
        else:
            keys.append(path)
    return keys


def reference_sections() -> dict[str, str]:
    """The reference page cut at its option headings: heading text -> section."""
    page = (DOCS / "reference" / "configuration.md").read_text()
    pieces = re.split(r"^### (.+?) \{#[^}]+\}$", page, flags=re.M)
    return dict(zip(pieces[1::2], pieces[2::2], strict=True))


def test_reference_lists_every_group_option_and_key():
    sections = reference_sections()
    page = (DOCS / "reference" / "configuration.md").read_text()
    files = sorted((ROOT / "conf").rglob("*.yaml"))
    assert len(sections) == len(files)
    for path in files:
        rel = path.relative_to(ROOT / "conf")
        group = rel.parent.as_posix()
        title = f"`{rel.stem}`" if group == "." else f"`{group}={rel.stem}`"
        if group != ".":
            assert f"## Group `{group}`" in page, group
        assert title in sections, f"{rel} has no section in the reference"
        section = sections[title]
        assert f"File `conf/{rel.as_posix()}`" in section
        for key in leaf_keys(yaml.safe_load(path.read_text()) or {}):
            assert f"| `{key}` |" in section, f"{rel}: key {key} missing from the reference"


def test_reference_gives_defaults_and_comments_as_written():
    # one line of conf/method/monkey.yaml, read here by hand: key, value, comment
    line = next(ln for ln in (ROOT / "conf/method/monkey.yaml").read_text().splitlines() if ln.startswith("token:"))
    value, comment = (part.strip() for part in line[len("token:") :].split("#", 1))
    assert f"| `token` | `{value}` | {comment} |" in reference_sections()["`method=monkey`"]
    # a comment line above a run of keys labels it; comment lines above one key describe that key
    monkey = reference_sections()["`method=monkey`"].splitlines()
    label = monkey.index("| **mask pass** | | |")
    assert monkey[label + 1].startswith("| `layers` |")
    lines = (ROOT / "conf/experiment/paper_dreambooth.yaml").read_text().splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.strip().startswith("preset:"))
    above = " ".join(ln.strip().lstrip("# ") for ln in lines[at - 2 : at])
    assert f"| `hydra.sweeper.params.preset` | `fair,paper` | {above} |" in (
        reference_sections()["`experiment=paper_dreambooth`"]
    )
    # a nested key of the primary config, with a comment
    assert "| `plan.limit.subjects` | `null` | first N subjects, or a list of subject names |" in (
        reference_sections()["`config`"]
    )


# pages ---------------------------------------------------------------------------------------------


def test_every_method_config_has_its_page():
    methods = {p.stem for p in (ROOT / "conf" / "method").glob("*.yaml")}
    assert methods == set(METHOD_PAGES), "a method config without a page (or a page for a removed one)"
    nav = nav_pages()
    for name, page in METHOD_PAGES.items():
        assert (DOCS / page).is_file(), page
        assert page in nav, f"{page} is not in mkdocs.yml's nav"
        assert f"conf/method/{name}.yaml" in (DOCS / page).read_text(), f"{page} never names conf/method/{name}.yaml"


def test_every_nav_entry_exists_and_every_page_is_in_the_nav():
    nav = nav_pages()
    for page in nav:
        assert (DOCS / page).is_file(), f"mkdocs.yml names {page}, which does not exist"
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages == set(nav), f"pages outside the nav: {sorted(pages - set(nav))}"
    # the pages other issues write are reserved
    assert {"sdxl.md", "gpu-speed.md"} <= set(nav)


def test_benchmark_page_shows_every_record():
    shown = records_markdown()
    for record in sorted((ROOT / "results" / "benchmarks").glob("*.md")):
        title = record.read_text().splitlines()[0]
        assert title.startswith("# ")
        assert f"\n##{title}\n" in f"\n{shown}\n", f"{record.name} is not on the benchmarks page"
    assert "<!-- benchmark records -->" in (DOCS / "benchmarks.md").read_text()


# commands ------------------------------------------------------------------------------------------


class Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def subcommands(entry_point: str, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The subcommands of a console script, read from the argparse parser its entry point builds."""

    def capture(self, *args, **kwargs):
        raise Captured(self)

    for name in ("parse_args", "parse_known_args", "parse_intermixed_args"):
        monkeypatch.setattr(argparse.ArgumentParser, name, capture)
    module, func = entry_point.split(":")
    monkeypatch.setattr(sys, "argv", [module])
    try:
        getattr(importlib.import_module(module), func)()
    except Captured as captured:
        found = set()
        for action in captured.parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                found |= set(action.choices)
        return found
    raise AssertionError(f"{entry_point} returned without parsing its arguments")


def scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


COMMAND = re.compile(r"(?<![\w/.~$-])(monkey-[a-z]+)(?![\w/.-])(?:[ \t]+(\S+))?")


def test_every_command_named_in_the_docs_exists(monkeypatch):
    entry_points = scripts()
    subs = {name: subcommands(target, monkeypatch) for name, target in entry_points.items()}
    assert subs["monkey-data"] == {"download", "verify", "checksum", "prefetch"}  # the capture itself works
    named = 0
    for path in doc_files():
        for snippet in code_text(path.read_text()):
            for command, word in COMMAND.findall(snippet):
                named += 1
                where = f"{path.relative_to(ROOT)}: `{snippet.strip()[:80]}`"
                assert command in entry_points, f"{where}: no console script {command} in pyproject.toml"
                if subs[command] and word and not word.startswith(("-", "<")):
                    assert word in subs[command], f"{where}: {command} has no subcommand {word!r}"
    assert named > 50


def test_every_script_named_in_the_docs_exists():
    named = set()
    for path in doc_files():
        for snippet in code_text(path.read_text()):
            named |= set(re.findall(r"(?:python|bash)\s+((?:benchmarks|tools)/[\w/-]+\.(?:py|sh))", snippet))
            named |= set(re.findall(r"(?<![\w/])((?:tests|benchmarks|tools)/[\w-]+\.(?:py|sh))", snippet))
    assert "benchmarks/monkey_speed.py" in named
    for script in sorted(named):
        assert (ROOT / script).is_file(), f"the docs name {script}, which does not exist"


# README --------------------------------------------------------------------------------------------


def test_readme_is_a_short_front_page_with_the_two_commands_first():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 150
    assert re.findall(r"^## .*", readme, flags=re.M)[0] == "## Quick start"
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    assert blocks[:2] == [QUICK_START_RUN, QUICK_START_TEST]
    # CI installs the project as the README says and runs its test command and the strict docs build
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q" in ci and "mkdocs build --strict" in ci
    # --quiet hides the warnings that --strict counts: a strict build with it passes broken links
    build = next(line for line in ci.splitlines() if "mkdocs build" in line)
    assert "--quiet" not in build and " -q" not in build
    assert re.search(r'pip install -q -e "\.\[dev[,\]]', ci)


def test_readme_links_resolve():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if not re.match(r"\w+://", link)]
    assert any(link.startswith("docs/") for link in local)
    for link in local:
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"


def test_nothing_of_the_pre_split_readme_is_lost():
    try:
        old = readme_coverage.old_readme()
    except FileNotFoundError as error:
        pytest.skip(f"no git history with the pre-split README: {error}")
    lost = readme_coverage.missing(old, readme_coverage.current_text())
    assert not any(lost.values()), {kind: items[:3] for kind, items in lost.items() if items}
    # and the check can see a loss: one page less loses its facts
    without = readme_coverage.current_text().replace((DOCS / "methods" / "masactrl.md").read_text(), "")
    assert readme_coverage.missing(old, without)["sentences"]


def test_git_history_check_runs_in_this_checkout():
    # the skip above must not hide a broken tool in a full clone
    done = subprocess.run(["git", "cat-file", "-e", f"{readme_coverage.BEFORE_SPLIT}^{{commit}}"], cwd=ROOT)
    if done.returncode:
        pytest.skip("shallow clone: commit 3b4019f absent")
    assert readme_coverage.old_readme().startswith("# monkey-bench")


def test_every_docs_page_named_in_code_and_configs_exists():
    named = {}
    for folder in ("src", "conf", "baselines", "eval", "benchmarks", "notebooks"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".yaml", ".md", ".sh"}:
                for page in re.findall(r"(?<![\w/])docs/[\w/.-]+?\.md", path.read_text()):
                    named.setdefault(page, path.relative_to(ROOT))
    assert "docs/methods/freegraftor.md" in named  # the error message that tells users how to set it up
    for page, where in named.items():
        assert (ROOT / page).is_file(), f"{where} names {page}, which does not exist"


def test_site_builds_strictly(tmp_path):
    # about 2 s; CI also runs it in .ci/run. Without the docs extra (the README's test install) it skips.
    pytest.importorskip("mkdocs", reason='the docs extra is not installed: pip install -e ".[docs]"')
    pytest.importorskip("material", reason='the docs extra is not installed: pip install -e ".[docs]"')
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "site" / "reference" / "configuration" / "index.html").is_file()


def test_front_page_and_site_home_show_the_same_tables():
    def tables(text: str) -> list[str]:
        rows = [line for line in text.splitlines() if line.startswith("|")]
        return [re.sub(r"\]\((?:docs/)?([^)]*)\)", r"](\1)", row) for row in rows]  # links relative to docs/

    readme, home = (ROOT / "README.md").read_text(), (DOCS / "index.md").read_text()
    assert tables(readme) == tables(home)
    assert "docs/assets/demo_pareto.png" in readme and "(assets/demo_pareto.png)" in home
