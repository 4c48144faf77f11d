"""Hydra's own failures as one error line (exit 2), the same in every entry point that reads conf/.

Hydra reports a group option that does not exist (`method=nope`), a key a config lacks
(`method.nokey=3`) or an override it cannot parse over several lines and exits 1 (`hydra.main`), or
raises (the Compose API). They are input the user can fix, so they end like every other bad input:
one line naming the override and what is allowed, exit code 2 (docs/configuration.md).

`compose_config` is the Compose API for the CLIs that compose by hand (monkey-report, monkey-attention,
monkey-attention rank, monkey-import); `monkey.cli.main` catches the same errors around `hydra.main`.
`unique_overrides` drops a key given twice on the command line (the last wins, as Hydra composes
it), so the run folder's name, built from the overrides, is the same as with the key once.
"""

import re
from collections.abc import Sequence
from importlib import resources

from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from monkey.errors import ConfigError

# what Hydra raises for a bad command line (MissingConfigException is a ConfigCompositionException)
HYDRA_INPUT_ERRORS = (ConfigCompositionException, OverrideParseException)
GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic"
_NOT_OVERRIDABLE = re.compile(r"Could not override '([^']+)'")
# lines of Hydra's messages that say where it searched or how to get a trace, not what is wrong
_NOISE = ("Config search path", "provider=", "object_type=", "See https://hydra.cc", "Set the environment variable")


def group_options(group: str) -> list[str]:
    """The options of a config group in conf/ (its .yaml files), [] for a group conf/ does not have."""
    folder = resources.files("monkey.conf")
    for part in group.split("/"):
        folder = folder.joinpath(part)
    if not folder.is_dir():
        return []
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines()]
    return " ".join(line for line in lines if line and not line.startswith(_NOISE)).strip()


def composition_message(err: Exception) -> str:
    """One line for a Hydra composition or override error: the override at fault and what is allowed."""
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and "/" in err.missing_cfg_file:
        group, _, name = err.missing_cfg_file.rpartition("/")
        options = list(err.options or []) or group_options(group)
        allowed = f"; allowed: {', '.join(options)}" if options else ""
        return f"{group}={name}: config group '{group}' has no option '{name}'{allowed}"
    if isinstance(err, OverrideParseException):
        detail = one_line(str(err.message).replace(f"Error parsing override '{err.override}'", ""))
        return f"{err.override!r} is not an override Hydra can read ({detail}); the form is key=value ({GRAMMAR})"
    missing_key = _NOT_OVERRIDABLE.search(str(err))
    if missing_key and isinstance(err.__cause__, OmegaConfBaseException):
        key = missing_key.group(1)
        return f"{key}: the config has no key {key}; a typo? (to add a new key on purpose: +{key}=<value>)"
    return f"bad override: {one_line(str(err))}"


def compose_config(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """conf/<config_name>.yaml with `overrides`; a bad group option, key or override is a ConfigError."""
    try:
        with initialize_config_module(config_module="monkey.conf", version_base="1.3"):
            return compose(config_name=config_name, overrides=unique_overrides(overrides))
    except HYDRA_INPUT_ERRORS as err:
        raise ConfigError(composition_message(err)) from err


def override_key(override: str) -> str | None:
    """`a.b=1` -> `a.b`, `+a.b=1` -> `+a.b`; None for anything but a plain key=value (kept as given)."""
    key, sep, _ = override.partition("=")
    if not sep or not key or key.startswith("~") or key.startswith("-"):
        return None
    return key


def unique_overrides(overrides: Sequence[str]) -> list[str]:
    """`overrides` with each key once, at its last place and value: what Hydra composes from the list."""
    last = {override_key(o): i for i, o in enumerate(overrides) if override_key(o) is not None}
    return [o for i, o in enumerate(overrides) if override_key(o) is None or last[override_key(o)] == i]
