"""Which shard of the plan this process works on, and which device, in multi-process launches.

`shard=k num_shards=n` names the shard explicitly (one process, or one SLURM job per shard).
`shard=auto` takes it from the launcher: `accelerate launch` and `torchrun` start one process per
device and give each RANK, WORLD_SIZE and LOCAL_RANK, so process r works on shard r of WORLD_SIZE
and, with `runtime.device=auto`, on GPU `cuda:<LOCAL_RANK>`. Outside such a launch `auto` is the
whole plan (shard 0 of 1).
"""

import contextlib
import logging
import os
from collections.abc import Mapping

from omegaconf import DictConfig

from monkey.errors import ConfigError

AUTO = "auto"

log = logging.getLogger(__name__)


def launch_env_int(name: str, env: Mapping[str, str]) -> int | None:
    value = env.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as err:
        raise ConfigError(
            f"environment variable {name}={value!r} must be an integer (set by accelerate/torchrun)"
        ) from err


def launch_rank(env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """(RANK, WORLD_SIZE) of a torchrun-style launch, or None when this process was not launched so."""
    env = os.environ if env is None else env
    rank, world = launch_env_int("RANK", env), launch_env_int("WORLD_SIZE", env)
    if rank is None and world is None:
        return None
    if rank is None or world is None:
        raise ConfigError(
            f"shard=auto needs both RANK and WORLD_SIZE in the environment; got RANK={rank} WORLD_SIZE={world}"
        )
    return rank, world


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def shard_numbers(shard: object, num_shards: object, env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """Validate `shard`/`num_shards` (ints, or shard=auto from the launch) into (shard, num_shards)."""
    if shard == AUTO:
        launched = launch_rank(env)
        rank, world = launched if launched is not None else (0, 1)
        if num_shards not in (1, AUTO, world):
            raise ConfigError(
                f"shard=auto takes num_shards from WORLD_SIZE={world}, but num_shards={num_shards!r} was given; "
                "leave num_shards out (or set it to auto)"
            )
        shard, num_shards = rank, world
    if (
        isinstance(shard, bool)
        or not isinstance(shard, int)
        or isinstance(num_shards, bool)
        or not isinstance(num_shards, int)
    ):
        raise ConfigError(f"shard={shard!r} and num_shards={num_shards!r} must be integers (or shard=auto)")
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ConfigError(f"shard={shard} must lie in [0, num_shards={num_shards})")
    return shard, num_shards


def resolve_shard(cfg: DictConfig) -> tuple[int, int]:
    shard = cfg.get("shard", 0)
    if shard == AUTO and launch_rank() is None:
        log.warning(
            "shard=auto, but no RANK/WORLD_SIZE in the environment: this process runs the whole plan "
            "(`accelerate launch --cpu` starts one process whatever --num_processes says; use --multi_gpu "
            "with runtime.device=cpu, docs/scaling.md)"
        )
    return shard_numbers(shard, cfg.get("num_shards", 1))


def shard_label(shard: object, num_shards: object) -> str:
    """`shard-<k>-of-<n>`: names this process's files in a shared run folder (`.hydra/`, the log).

    Used by Hydra (resolver `monkey.shard_label`) before the job runs, so it never raises: a bad
    value is reported by `resolve_shard` inside the job, as one clear error.
    """
    with contextlib.suppress(ConfigError):
        shard, num_shards = shard_numbers(shard, num_shards)
    return f"shard-{shard}-of-{num_shards}"


def launch_device(device: str, env: Mapping[str, str] | None = None) -> str:
    """`auto` in a multi-process launch on a CUDA machine: this process's own GPU, cuda:<LOCAL_RANK>."""
    env = os.environ if env is None else env
    local_rank = launch_env_int("LOCAL_RANK", env)
    if device != AUTO or local_rank is None:
        return device
    import torch

    if not torch.cuda.is_available():
        return device
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(
            f"LOCAL_RANK={local_rank} but only {count} CUDA device(s) are visible; launch at most {count} "
            "processes per machine or set runtime.device explicitly"
        )
    return f"cuda:{local_rank}"
