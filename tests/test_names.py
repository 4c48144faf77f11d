"""Names that become paths stay inside the run root: every name key refuses '..', absolute paths,
separators and empty names with one line naming the key, and nothing is written outside."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import QUICK

from monkey.cli import run_job
from monkey.errors import ConfigError, DataError
from monkey.names import folder_slug, path_name

ESCAPES = ["..", "../../x", "/tmp/abs", "a/b", "a\\b", "", " ", ".", "x\x00y"]
NAME_KEYS = ["method.name", "dataset.name", "run.name", "eval.name"]
SMALL = ("plan.limit.subjects=1", "plan.limit.prompts=1", *QUICK)


@pytest.mark.parametrize("value", ESCAPES)
def test_path_name_refuses_what_is_not_one_component(value):
    with pytest.raises(ConfigError, match=r"^some\.key="):
        path_name(value, "some.key")
    slug = folder_slug(value)  # Hydra's folder: always one plain component
    assert slug not in ("", ".", "..") and "/" not in slug and "\\" not in slug and "\x00" not in slug


@pytest.mark.parametrize("value", ["ip_adapter_1.0", "monkey,method.token=2", "my dog", "..hidden", "a.b"])
def test_path_name_keeps_plain_names(value):
    assert path_name(value, "k") == value and folder_slug(value) == value


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("key", NAME_KEYS)
@pytest.mark.parametrize("value", ["..", "../../x", "/tmp/abs/x", "a/b", "a\\b", ""])
def test_every_name_key_refuses_escapes_in_one_line(make_config, tmp_path, caplog, key, value):
    run_root = tmp_path / "runs" / "exp" / "job"
    run_root.mkdir(parents=True)
    before = files_under(tmp_path)
    quoted = f"'{value}'" if value else "''"
    code = run_job(make_config(*SMALL, "run.stages=[generate,evaluate]", "eval=tiny", f"{key}={quoted}"), run_root)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert code == 2 and len(errors) == 1 and errors[0].startswith(f"{key}={value!r}")
    assert files_under(tmp_path) == before  # nothing written anywhere


def test_subject_names_from_a_dataset_cannot_leave_the_folder(tmp_path):
    """DreamBooth's class table names the subject folders: '../evil' would read and write elsewhere."""
    from omegaconf import OmegaConf
    from standins import noise

    from monkey.datasets.base import load_sources

    root = tmp_path / "db"
    (root / "dataset").mkdir(parents=True)
    (root / "evil").mkdir()
    noise(64, 64).save(root / "evil" / "00.jpg")
    (root / "dataset" / "prompts_and_classes.txt").write_text("subject_name,class\n../evil,dog\n")
    cfg = OmegaConf.create({"_target_": "monkey.datasets.dreambooth.load_dreambooth", "name": "dreambooth",
                            "root": str(root), "images": "first"})
    with pytest.raises(DataError, match=r"subject of dataset 'dreambooth', .*evil.*='\.\./evil'"):
        load_sources(cfg)


def test_the_console_script_keeps_a_bad_method_name_inside_the_run_root(tmp_path):
    script = Path(sys.executable).parent / "monkey-bench"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "monkey.cli"]
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    result = subprocess.run(
        [*command, "hydra.mode=RUN", "method.name=../../../x", "run.name=../../y", *SMALL],
        cwd=work, capture_output=True, text=True, timeout=300, env=os.environ.copy(),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output  # the console script: exit 2, one line
    lines = [line for line in output.splitlines() if "cannot name a folder or file" in line]
    assert len(lines) == 1 and "ERROR" in lines[0] and "run.name='../../y'" in lines[0]
    outside = {p for p in files_under(tmp_path) if not p.startswith("a/b/c/runs/")}
    assert outside == {"a", "a/b", "a/b/c", "a/b/c/runs"}  # Hydra's folder is a slug inside runs/
    assert not list(tmp_path.rglob("images")) and not list(tmp_path.rglob("manifest"))


def test_long_folder_names_become_a_readable_prefix_and_a_hash():
    from monkey.names import MAX_FOLDER_BYTES, folder_name, short_name

    long = "ip_adapter_1.0,plan.limit.subjects=[" + ",".join(f"subject_{i}" for i in range(30)) + "]"
    short = short_name(long)
    assert len(long.encode()) > MAX_FOLDER_BYTES >= len(short.encode())
    prefix, _, digest = short.rpartition("-")
    assert long.startswith(prefix) and len(prefix) > 150 and len(digest) == 12
    assert short_name(long + "x") != short  # the hash tells apart names sharing the prefix
    assert short_name(long) == short and folder_slug(long) == short == folder_name(long, "run.name")
    accents = short_name("é" * 200)  # 400 bytes: cut between characters, never inside one
    assert len(accents.encode()) <= MAX_FOLDER_BYTES and accents.startswith("é" * 90)
    exact = "a" * MAX_FOLDER_BYTES
    assert short_name(exact) == exact and short_name(exact + "a") != exact + "a"
    with pytest.raises(ConfigError, match=r"^method\.name=.*too long to name a file \(101 bytes"):
        path_name("m" * 101, "method.name")
    assert path_name("m" * 100, "method.name") == "m" * 100


def test_a_key_given_twice_is_passed_on_once_with_its_last_value(monkeypatch):
    """Hydra composes the last value; the folder name (built from the overrides) must be the plain run's."""
    import monkey.cli
    from monkey.hydra_errors import unique_overrides

    seen = []
    monkeypatch.setattr(monkey.cli, "app", lambda: seen.append(sys.argv[1:]))
    assert monkey.cli.main(["method.scale=0.3", "plan.seeds=2", "method.scale=0.5", "-m", "+x.y=1", "+x.y=2"]) == 0
    assert seen == [["plan.seeds=2", "method.scale=0.5", "-m", "+x.y=2"]]
    given = ["a=1", "~a", "a=2", "--cfg", "job", "b=[1,2]", "b=3"]
    assert unique_overrides(given) == ["~a", "a=2", "--cfg", "job", "b=3"]
