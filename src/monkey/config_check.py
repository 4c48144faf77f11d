"""Check a composed job config before any stage runs: the generic groups and the knobs every method
shares, each with one error naming the key, its value and what is allowed.

Without this, a bad value surfaces deep in a library (`method.num_inference_steps=0` as a
ZeroDivisionError inside diffusers, `generation.height=7` as a shape error in the VAE) after models
were loaded. Method-specific knobs stay the method classes' job (new methods bring their own), so
unknown method keys pass here.
"""

from typing import Any

import torch
from omegaconf import DictConfig

from monkey.errors import ConfigError
from monkey.hashing import to_plain
from monkey.models.speedups import refuse_cuda_graphs, speedups_from_config
from monkey.names import folder_name, path_name

VAE_FACTOR = 8  # the Stable Diffusion VAE's downsampling: image sides must be multiples of it
DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")
# knobs a method may have that mean the same thing in every method
SHARED_METHOD_COUNTS = ("num_inference_steps", "batch_size")
# IP-Adapter scales wherever a method has them (ip_adapter_*/text_only: scale; MONKEY: initial_scale,
# ip_scale): 0 is the prompt alone, 1 the adapter at full weight. A negative scale turns the subject
# into a negative prompt, which no method means; 2 bounds typos (the paper and its sweeps use 0..1).
ADAPTER_SCALES = ("scale", "initial_scale", "ip_scale")
SCALE_RANGE = (0.0, 2.0)


def check_job_config(cfg: DictConfig) -> None:
    """Raise ConfigError for the first key of `cfg` that no stage could use."""
    folder_name(select(cfg, "run.name"), "run.name")  # a folder only: a long one is shortened, not refused
    for key in ("method.name", "dataset.name"):  # these also name files (manifests, configs)
        path_name(select(cfg, key), key)
    sides = {key: select(cfg, key) for key in ("generation.height", "generation.width")}
    if (sides["generation.height"] is None) != (sides["generation.width"] is None):
        raise ConfigError(
            f"generation.height={sides['generation.height']} and generation.width={sides['generation.width']}: "
            "set both (one common size for every method) or neither (each method's model at its native size)"
        )
    for key in (key for key, side in sides.items() if side is not None):  # null: the model's native size
        side = count(cfg, key, minimum=VAE_FACTOR)
        if side % VAE_FACTOR:
            raise ConfigError(
                f"{key}={side} is not a multiple of {VAE_FACTOR} (the VAE's downsampling factor); "
                f"try {max(VAE_FACTOR, side - side % VAE_FACTOR)} or {side - side % VAE_FACTOR + VAE_FACTOR}"
            )
    count(cfg, "generation.batch_size", minimum=1)
    for knob in SHARED_METHOD_COUNTS:
        if cfg.method.get(knob) is not None:
            count(cfg, f"method.{knob}", minimum=1)
    for knob in ADAPTER_SCALES:
        if cfg.method.get(knob) is not None:
            number_in(cfg, f"method.{knob}", *SCALE_RANGE)
    check_device(str(select(cfg, "runtime.device")), "runtime.device")
    refuse_cuda_graphs(speedups_from_config(select(cfg, "runtime")))  # compile, sdpa_backend, ... values too
    count(cfg, "plan.seeds", minimum=1)
    integer(cfg, "plan.base_seed")
    if select(cfg, "plan.limit.prompts") is not None:
        count(cfg, "plan.limit.prompts", minimum=1)
    check_subject_limit(to_plain(select(cfg, "plan.limit.subjects")))
    check_shard(select(cfg, "shard"), select(cfg, "num_shards"))
    if "eval" in cfg and cfg.eval is not None:  # after runtime.device, which eval.device follows by default
        if "name" in cfg.eval:
            path_name(cfg.eval.name, "eval.name")
        if cfg.eval.get("device") is not None:
            check_device(str(cfg.eval.device), "eval.device")
        if not isinstance(cfg.eval.get("masked", False), bool):  # before generating, not after (monkey.eval.masked)
            raise ConfigError(f"eval.masked={cfg.eval.masked!r} is not allowed; choose true or false")


def select(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if node is None or part not in node:
            raise ConfigError(f"the config has no key {key}; it is needed by every run")
        node = node[part]
    return node


def integer(cfg: DictConfig, key: str) -> int:
    value = select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}={value!r} is not allowed; it must be a whole number")
    return value


def count(cfg: DictConfig, key: str, minimum: int) -> int:
    value = integer(cfg, key)
    if value < minimum:
        raise ConfigError(f"{key}={value} is not allowed; it must be a whole number >= {minimum}")
    return value


def number_in(cfg: DictConfig, key: str, low: float, high: float) -> float:
    value = select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(f"{key}={value!r} is not allowed; it must be a number in [{low:g}, {high:g}]")
    return float(value)


def check_device(device: str, key: str) -> None:
    """A device torch knows and this machine has: `cuda` without a visible GPU stops here, not in .to()."""
    if device == "auto":
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as err:
        allowed = ", ".join(DEVICE_KINDS)
        raise ConfigError(f"{key}={device!r} is not a torch device; allowed: {allowed}, cuda:N") from err
    if parsed.type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available == 0:
            raise ConfigError(f"{key}={device!r} but no CUDA GPU is visible here; use {key}=cpu or {key}=auto")
        if parsed.index is not None and parsed.index >= available:
            raise ConfigError(f"{key}={device!r} but {available} CUDA GPU(s) are visible (cuda:0..{available - 1})")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key}={device!r} but MPS is not available here; use {key}=cpu or {key}=auto")


def check_subject_limit(limit: Any) -> None:
    if limit is None:
        return
    if isinstance(limit, int) and not isinstance(limit, bool):
        if limit < 1:
            raise ConfigError(f"plan.limit.subjects={limit} is not allowed; a number >= 1, a list of names, or null")
        return
    if isinstance(limit, list) and limit and all(isinstance(name, str) and name for name in limit):
        return
    raise ConfigError(f"plan.limit.subjects={limit!r} is not allowed; a number >= 1, a list of names, or null")


def check_shard(shard: Any, num_shards: Any) -> None:
    if shard == "auto":
        return
    for key, value in (("shard", shard), ("num_shards", num_shards)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r} is not allowed; a whole number (shard may also be auto)")
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ConfigError(f"shard={shard} must lie in [0, num_shards={num_shards})")
