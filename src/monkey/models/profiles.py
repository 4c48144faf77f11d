"""Model profiles (conf/model/*.yaml) and the one function that loads a pipeline from them.

Real and tiny profiles go through the same `from_pretrained` + `load_ip_adapter` calls; a tiny
profile only first writes its checkpoints and substitutes their local paths.
"""

import inspect
import os
from dataclasses import dataclass, replace
from typing import Any

import diffusers
import torch
from omegaconf import DictConfig

from monkey.errors import ConfigError, ModelLoadError
from monkey.hashing import stable_hash, to_plain
from monkey.shards import launch_device

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class IPAdapterSpec:
    repo: str | None  # hub id or local folder; None for tiny profiles until materialised
    subfolder: str = "models"
    weight_name: str = "ip-adapter_sd15.bin"
    image_encoder_folder: str | None = "image_encoder"


@dataclass(frozen=True)
class ModelProfile:
    name: str
    pipeline_class: str
    pretrained: str | None
    revision: str | None = None
    ip_adapter: IPAdapterSpec | None = None
    dtype: tuple[tuple[str, str], ...] = (("cuda", "float16"), ("cpu", "float32"))
    scheduler: str | None = None  # diffusers scheduler class to swap in, from the loaded config
    scheduler_kwargs: tuple[tuple[str, Any], ...] = ()
    native_size: int = 512
    tiny: str | None = None  # tiny family ("lcm", "sd"): checkpoints are written by code
    tiny_seed: int = 0

    def resolved(self) -> "ModelProfile":
        """For tiny profiles: write the checkpoints and point the profile at their paths."""
        if self.tiny is None:
            return self
        from monkey.models.tiny import materialize_tiny

        paths = materialize_tiny(self.tiny, self.tiny_seed)
        adapter = replace(self.ip_adapter, repo=str(paths.ip_adapter)) if self.ip_adapter else None
        return replace(self, pretrained=str(paths.pipeline), ip_adapter=adapter)

    def dtype_for(self, device: torch.device) -> torch.dtype:
        table = dict(self.dtype)
        name = table.get(device.type, "float32")
        if name not in DTYPES:
            raise ConfigError(f"model.dtype.{device.type}={name!r} is not allowed; choose one of {list(DTYPES)}")
        return DTYPES[name]


def profile_from_config(cfg: DictConfig | dict[str, Any]) -> ModelProfile:
    plain = to_plain(cfg)
    known = {field for field in ModelProfile.__dataclass_fields__}
    unknown = set(plain) - known
    if unknown:
        raise ConfigError(f"model config has unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
    if not plain.get("pipeline_class"):
        raise ConfigError("model.pipeline_class is required (e.g. LatentConsistencyModelPipeline)")
    adapter = plain.get("ip_adapter")
    return ModelProfile(
        **{
            **plain,
            "ip_adapter": IPAdapterSpec(**adapter) if adapter else None,
            "dtype": tuple(sorted((plain.get("dtype") or {"cuda": "float16", "cpu": "float32"}).items())),
            "scheduler_kwargs": tuple(sorted((plain.get("scheduler_kwargs") or {}).items())),
        }
    )


@dataclass(frozen=True)
class Runtime:
    """Where and in which precision methods run; chosen once per job."""

    device: torch.device
    dtype: torch.dtype
    model: ModelProfile


def resolve_runtime(model: ModelProfile, device: str = "auto", dtype: str = "auto") -> Runtime:
    device = launch_device(device)  # one GPU per process under accelerate launch / torchrun
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch_device = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"runtime.device={device!r} is not a torch device (auto, cpu, cuda, cuda:1)") from err
    if dtype == "auto":
        torch_dtype = model.dtype_for(torch_device)
    elif dtype in DTYPES:
        torch_dtype = DTYPES[dtype]
    else:
        raise ConfigError(f"runtime.dtype={dtype!r} is not allowed; choose auto or one of {list(DTYPES)}")
    return Runtime(device=torch_device, dtype=torch_dtype, model=model)


def offline_hint() -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    state = "HF_HUB_OFFLINE is set, so only the local cache is read" if offline else "the hub may be unreachable"
    return (
        f"({state}). Download it on a machine with network (`hf download <id>`) into the cache, or "
        "set the key to a local folder in the hub layout"
    )


def scheduler_class_named(name: str) -> type:
    """A diffusers scheduler class by name, or a project scheduler by dotted path
    (`monkey.baselines.rectifid.scheduler.PeRFlowScheduler`)."""
    if "." in name:
        from hydra.utils import get_class

        try:
            return get_class(name)
        except (ImportError, ValueError) as err:
            raise ConfigError(f"model.scheduler={name!r} cannot be imported: {err}") from err
    scheduler_class = getattr(diffusers, name, None)
    if scheduler_class is None:
        raise ConfigError(f"model.scheduler={name!r} is not a diffusers scheduler class (or a dotted path to one)")
    return scheduler_class


_LOADED: dict[str, diffusers.DiffusionPipeline] = {}


def load_pipeline(profile: ModelProfile, device: torch.device, dtype: torch.dtype) -> diffusers.DiffusionPipeline:
    """Load (or reuse) the profile's pipeline with its IP-Adapter. One pipeline is kept per process,
    so the jobs of an in-process multirun over methods of one model share it."""
    profile = profile.resolved()
    key = stable_hash([repr(profile), str(device), str(dtype)])
    if key in _LOADED:
        return _LOADED[key]
    _LOADED.clear()
    pipeline_class = getattr(diffusers, profile.pipeline_class, None)
    if pipeline_class is None or not inspect.isclass(pipeline_class):
        raise ConfigError(
            f"model.pipeline_class={profile.pipeline_class!r} is not a diffusers pipeline class "
            "(e.g. LatentConsistencyModelPipeline, StableDiffusionPipeline)"
        )
    kwargs: dict[str, Any] = {"dtype": dtype}
    if profile.revision:
        kwargs["revision"] = profile.revision
    if "safety_checker" in inspect.signature(pipeline_class.__init__).parameters:
        kwargs.update(safety_checker=None, requires_safety_checker=False)  # benchmark images are kept as made
    try:
        pipe = pipeline_class.from_pretrained(profile.pretrained, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"cannot load model.pretrained={profile.pretrained!r} (profile '{profile.name}') "
            f"with {profile.pipeline_class}.from_pretrained {offline_hint()}. Cause: {err}"
        ) from err
    if profile.scheduler:
        scheduler_class = scheduler_class_named(profile.scheduler)
        pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config, **dict(profile.scheduler_kwargs))
    if profile.ip_adapter is not None:
        spec = profile.ip_adapter
        try:
            pipe.load_ip_adapter(
                spec.repo,
                subfolder=spec.subfolder,
                weight_name=spec.weight_name,
                image_encoder_folder=spec.image_encoder_folder,
            )
        except (OSError, ValueError) as err:
            raise ModelLoadError(
                f"cannot load model.ip_adapter.repo={spec.repo!r} ({spec.subfolder}/{spec.weight_name}, "
                f"image encoder {spec.image_encoder_folder!r}) {offline_hint()}. Cause: {err}"
            ) from err
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    _LOADED[key] = pipe
    return pipe
