"""Every shell command in docs/ is either composed and run by these tests on the tiny profiles or says why it is
not run (tools/doc_commands.py: TINY, NOT_RUN, or a `<!-- needs: ... -->` marker before its block).

Planted bugs each test caught (issue 27):
- a documented command in no registry (a TINY entry removed) -> test_every_doc_command_is_classified
- a documented tiny command with a key Hydra cannot read (`dataset.root=~/x`) -> test_tiny_monkey_bench_commands_compose
- a registry entry whose command left the docs -> test_registries_name_only_commands_in_the_docs
"""

import shlex
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import doc_commands  # noqa: E402

import monkey.cli  # noqa: E402, F401  (registers the resolvers of the Hydra part of the config)

COMMANDS = doc_commands.doc_commands()


def test_every_doc_command_is_classified():
    unclassified = [f"docs/{c.page}:{c.line}: {c.text}" for c in COMMANDS if doc_commands.classification(c) is None]
    assert not unclassified, (
        "commands in docs/ that no test runs and nothing marks (add each to TINY or NOT_RUN in "
        "tools/doc_commands.py, or put <!-- needs: gpu|weights|network|environment --> before its block):\n"
        + "\n".join(unclassified)
    )
    assert set(doc_commands.NOT_RUN.values()) <= set(doc_commands.WHY)


def test_registries_name_only_commands_in_the_docs():
    shown = {(c.page, c.text) for c in COMMANDS}
    stale = sorted((set(doc_commands.TINY) | set(doc_commands.NOT_RUN)) - shown)
    assert not stale, f"tools/doc_commands.py names commands no longer in docs/: {stale}"


def test_tiny_monkey_bench_commands_compose():
    """Each tiny monkey-bench command's overrides, as Hydra parses them, compose (first job of a sweep) with
    the tiny overrides added: unknown groups, options and keys, and values Hydra cannot read, fail here."""
    parser = OverridesParser.create()
    checked = 0
    with initialize_config_module(config_module="monkey.conf", version_base="1.3"):  # once: it costs a second
        for command in COMMANDS:
            if doc_commands.classification(command) != "tiny" or not command.text.startswith("monkey-bench"):
                continue
            arguments = [a for a in shlex.split(command.text)[1:] if a not in ("-m", "--multirun")]
            overrides = []
            for override in parser.parse_overrides(arguments):
                value = next(iter(override.sweep_string_iterator())) if override.is_sweep_override() else None
                overrides.append(override.input_line if value is None else f"{override.get_key_element()}={value}")
            cfg = compose(config_name="config", overrides=[*overrides, *doc_commands.TINY_OVERRIDES])
            assert cfg.plan.limit.subjects == 1 and cfg.model.tiny, command
            checked += 1
    assert checked >= 10


TINY_BENCH = [c for c in COMMANDS if doc_commands.classification(c) == "tiny" and c.text.startswith("monkey-bench")]


@pytest.mark.parametrize("command", TINY_BENCH, ids=[f"{c.page}:{c.line}" for c in TINY_BENCH])
def test_tiny_monkey_bench_commands_run(command, tmp_path):
    """Each tiny monkey-bench command runs as written, with doc_commands.RUN_OVERRIDES added, in this
    process: exit 0 and every job's folder holds its finished image."""
    from bad_input_cases import run_entry

    from monkey.store import RunStore

    argv = [*shlex.split(command.text)[1:], *doc_commands.RUN_OVERRIDES, f"run.root={tmp_path}"]
    outcome = run_entry("monkey-bench", argv)
    assert outcome.raised is None and outcome.code == 0, (
        f"{command.text}: exit {outcome.code}\n{outcome.output[-3000:]}"
    )
    folders = [p.parent for p in tmp_path.rglob("manifest") if p.is_dir()]
    assert folders, f"{command.text}: no run folder"
    for folder in folders:
        assert any(row["status"] == "ok" for row in RunStore(folder).rows()), (
            f"{command.text}: nothing made in {folder}"
        )
