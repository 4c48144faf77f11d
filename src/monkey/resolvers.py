"""OmegaConf resolvers the configs use, registered when `monkey` is imported (so any code that
resolves a config, the CLI, the runner, a notebook or a test, sees them).

`${monkey.if_tiny:A,B}` is A when the run's model profile is a tiny one (`model.tiny` set) and B
otherwise. A method config uses it for values that must differ on tiny random models, e.g. its
own base model (`model: ${monkey.if_tiny:tiny_sd14,sd14}`) or fewer sampling steps in the demo.
An explicit command-line value replaces the whole expression, so overrides always win.

`${monkey.image_token_sweep:}` is "0,1,...,T-1" for the T image tokens of the run's model profile's
IP-Adapter, read from its weights file (monkey.models.adapter_tokens): the token ablation's sweep.

`${monkey.folder_slug:X}` is X made one safe path component (monkey.names), for Hydra's output folders.

`${monkey.step_range:N}` is the list [0, 1, ..., N-1]: every step of an N-step LCM sampling loop
(e.g. MONKEY's `ip_steps: ${monkey.step_range:${method.final_steps}}`, the plain adapter on every step).
"""

from typing import Any

from omegaconf import DictConfig, OmegaConf

from monkey.errors import ConfigError
from monkey.names import folder_slug


def if_tiny(tiny_value: Any, real_value: Any, *, _root_: DictConfig) -> Any:
    model = _root_.get("model") if isinstance(_root_, DictConfig) else None
    if model is None:
        raise ConfigError("${monkey.if_tiny:...} needs a `model` profile at the config root to choose from")
    return tiny_value if model.get("tiny") else real_value


def image_token_sweep(*, _root_: DictConfig) -> str:
    from monkey.models.adapter_tokens import image_token_sweep as sweep  # torch/diffusers: only when used

    return sweep(_root_=_root_)


def step_range(count: Any) -> list[int]:
    try:
        steps = int(count)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"${{monkey.step_range:{count}}} needs a whole number of steps") from err
    if steps < 0:
        raise ConfigError(f"${{monkey.step_range:{count}}} needs a non-negative number of steps")
    return list(range(steps))


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("monkey.if_tiny"):
        OmegaConf.register_new_resolver("monkey.if_tiny", if_tiny)
    if not OmegaConf.has_resolver("monkey.image_token_sweep"):
        OmegaConf.register_new_resolver("monkey.image_token_sweep", image_token_sweep)
    if not OmegaConf.has_resolver("monkey.step_range"):
        OmegaConf.register_new_resolver("monkey.step_range", step_range)
    if not OmegaConf.has_resolver("monkey.folder_slug"):
        OmegaConf.register_new_resolver("monkey.folder_slug", folder_slug)
