"""Every package directory is declared in pyproject, so `pip install .` ships all of it."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_declared():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    mapping = config["package-dir"]
    found = set()
    for package, folder in mapping.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            relative = init.parent.relative_to(base).parts
            found.add(".".join([package, *relative]))
    assert found == declared


def test_configs_and_data_are_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "**/*.yaml" in config["monkey.conf"]
    assert {"**/*.jpg", "**/*.txt", "**/*.md"} <= set(config["monkey.data"])
