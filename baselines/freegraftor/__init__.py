"""FreeGraftor (Yao et al., 2025; Nihukat/FreeGraftor) through a wrapper.

FreeGraftor runs FLUX.1-dev through its own copy of the FLUX code plus Grounding DINO, SAM and
LaMa, with pinned dependencies that cannot share a process with this harness. So it runs in the
user's own environment: the harness writes the shard's job file and runs `driver.py` (this
package's standalone script, standard library only) with the user's Python in the user's checkout,
which imports FreeGraftor's pipeline and answers item by item (monkey.baselines.external).
"""

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monkey.baselines.external.method import Environment, ExternalMethod, positive_or_none

from monkey.errors import ConfigError
from monkey.methods.base import GenerationRequest
from monkey.models.profiles import Runtime

DRIVER = Path(__file__).with_name("driver.py")
NO_SUBJECT_POLICIES = ("fail", "whole_image")
# method.environment key -> the variable FreeGraftor reads
WEIGHTS = {"flux_dev": "FLUX_DEV", "grounding_dino": "GROUNDING_DINO", "sam": "SAM"}
ENVIRONMENT_KEYS = {"checkout", "python", *WEIGHTS, "env", "startup_timeout_s", "item_timeout_s"}
FLUX_BLOCKS = 57  # FLUX.1-dev: 19 double-stream + 38 single-stream blocks, ids 0..56


DRIVER_PYTHON = (3, 10)  # driver.py's own floor (it checks too, but only once started)


def check_python_version(python: Path) -> None:
    """Ask the user's interpreter its version before any job is written: one line if it is too old."""
    probe = "import sys; print(*sys.version_info[:2])"
    try:
        answer = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60)
        version = tuple(int(part) for part in answer.stdout.split())
    except (OSError, subprocess.TimeoutExpired, ValueError) as err:
        raise ConfigError(f"method.environment.python={str(python)!r} did not say its version: {err}") from err
    if answer.returncode != 0 or len(version) != 2:
        raise ConfigError(
            f"method.environment.python={str(python)!r} did not say its version (exit {answer.returncode}): "
            f"{(answer.stderr.strip().splitlines() or ['no output'])[-1]}"
        )
    if version < DRIVER_PYTHON:
        raise ConfigError(
            f"method.environment.python={str(python)!r} is Python {version[0]}.{version[1]}; the FreeGraftor driver "
            f"needs {DRIVER_PYTHON[0]}.{DRIVER_PYTHON[1]}+ (upstream's README sets up 3.10.9)"
        )


class FreeGraftorMethod(ExternalMethod):
    def __init__(
        self,
        name: str,
        runtime: Runtime,
        environment: dict[str, Any] | None = None,
        template: str = "prompt",
        num_steps: int = 25,
        guidance: float = 3.0,
        sim_threshold: float = 0.2,
        cyc_threshold: float = 1.5,
        inject_match_dropout: float = 0.2,
        start_inject_step: int = 0,
        end_inject_step: int | None = None,
        inject_blocks: Sequence[int] = (0, FLUX_BLOCKS - 1),
        offload: bool = False,
        on_no_subject: str = "fail",
    ):
        if on_no_subject not in NO_SUBJECT_POLICIES:
            raise ConfigError(
                f"method.on_no_subject={on_no_subject!r} is not allowed; choose one of {list(NO_SUBJECT_POLICIES)}"
            )
        blocks = list(inject_blocks)
        if len(blocks) != 2 or not 0 <= blocks[0] <= blocks[1] < FLUX_BLOCKS:
            raise ConfigError(
                f"method.inject_blocks={blocks} must be [first, last] with 0 <= first <= last <= {FLUX_BLOCKS - 1}"
            )
        if num_steps < 1 or not 0 <= start_inject_step <= (num_steps if end_inject_step is None else end_inject_step):
            raise ConfigError(
                f"method.num_steps={num_steps}, start_inject_step={start_inject_step}, "
                f"end_inject_step={end_inject_step}: need num_steps >= 1 and 0 <= start <= end"
            )
        knobs = {
            "num_steps": int(num_steps),
            "guidance": float(guidance),
            "sim_threshold": float(sim_threshold),
            "cyc_threshold": float(cyc_threshold),
            "inject_match_dropout": float(inject_match_dropout),
            "start_inject_step": int(start_inject_step),
            "end_inject_step": None if end_inject_step is None else int(end_inject_step),
            "inject_blocks": blocks,
            "offload": bool(offload),
            "on_no_subject": on_no_subject,
        }
        super().__init__(name, runtime, environment=environment, template=template, knobs=knobs)

    def resolve_environment(self, environment: dict[str, Any] | None) -> Environment:
        """The user's checkout, its Python and the weights; one error line naming every key left unset."""
        environment = dict(environment or {})
        unknown = sorted(set(environment) - ENVIRONMENT_KEYS)
        if unknown:
            raise ConfigError(f"method.environment has unknown keys {unknown}; allowed: {sorted(ENVIRONMENT_KEYS)}")
        unset = [key for key in ("checkout", "python", *WEIGHTS) if not environment.get(key)]
        if unset:
            raise ConfigError(
                f"method {self.name} runs in your own FreeGraftor environment: set "
                + " ".join(f"method.environment.{key}=..." for key in unset)
                + " (or the variables FREEGRAFTOR_CHECKOUT, FREEGRAFTOR_PYTHON, FLUX_DEV, GROUNDING_DINO, SAM);"
                " docs/methods/freegraftor.md says how to set it up,"
                " or leave the method out: hydra.sweeper.params.method=ip_adapter_0.5,ip_adapter_1.0,monkey"
            )
        checkout = Path(environment["checkout"]).expanduser().resolve()
        if not (checkout / "src" / "pipeline.py").is_file():
            raise ConfigError(
                f"method.environment.checkout={str(checkout)!r} has no src/pipeline.py: not a FreeGraftor clone"
            )
        python = Path(environment["python"]).expanduser()
        if not (python.is_file() and os.access(python, os.X_OK)):
            raise ConfigError(f"method.environment.python={str(python)!r} is not an executable Python interpreter")
        check_python_version(python)
        for key in WEIGHTS:
            if not Path(environment[key]).expanduser().exists():
                raise ConfigError(f"method.environment.{key}={environment[key]!r} does not exist ({WEIGHTS[key]})")
        env = {WEIGHTS[key]: str(Path(environment[key]).expanduser()) for key in WEIGHTS}
        env |= {str(k): str(v) for k, v in (environment.get("env") or {}).items()}
        return Environment(
            command=(str(python), str(DRIVER), "--checkout", str(checkout)),
            cwd=checkout,
            env=env,
            startup_timeout_s=positive_or_none(self.name, "startup_timeout_s", environment.get("startup_timeout_s")),
            item_timeout_s=positive_or_none(self.name, "item_timeout_s", environment.get("item_timeout_s")),
        )

    def check_request(self, request: GenerationRequest) -> None:
        """FLUX works on 16 px patches and upstream would silently round a size down: refuse instead."""
        if request.height % 16 or request.width % 16:
            raise ConfigError(
                f"method {self.name}: size {request.height}x{request.width} is not a multiple of 16, which FLUX "
                "needs (generation.height/width, or the preset's size)"
            )


__all__ = ["DRIVER", "FreeGraftorMethod"]
