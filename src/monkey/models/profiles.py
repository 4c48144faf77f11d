"""Model profiles (conf/model/*.yaml) and the one function that loads a pipeline from them.

Real and tiny profiles go through the same `from_pretrained` + `load_ip_adapter` calls; a tiny
profile only first writes its checkpoints and substitutes their local paths.
"""

import inspect
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

import diffusers
import torch
from omegaconf import DictConfig

from monkey.errors import ConfigError, ModelLoadError
from monkey.hashing import stable_hash, to_plain
from monkey.hub_needs import HubNeed, transformers_model
from monkey.models.speedups import Speedups, apply_to_pipeline
from monkey.models.vae_precision import keep_vae_in
from monkey.provenance import Checkpoint
from monkey.shards import launch_device

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class IPAdapterSpec:
    repo: str | None  # hub id or local folder; None for tiny profiles until materialised
    subfolder: str = "models"
    weight_name: str = "ip-adapter_sd15.bin"
    image_encoder_folder: str | None = "image_encoder"
    revision: str | None = None  # a hub commit (or branch/tag) of `repo` to pin; passed to load_ip_adapter

    def image_encoder_path(self) -> str | None:
        """The encoder's folder inside `repo`, as diffusers' load_ip_adapter finds it (a bare name is
        looked up under `subfolder`)."""
        folder = self.image_encoder_folder
        if folder is None:
            return None
        return f"{self.subfolder}/{folder}" if "/" not in folder else folder


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
    tiny: str | None = None  # tiny family ("lcm", "sd", "sd3"): checkpoints are written by code
    tiny_seed: int = 0
    cpu_offload: bool = False  # CUDA: enable_model_cpu_offload (one model on the GPU at a time; same images)
    drop_text_encoder_3: bool = False  # SD3: load without T5 (text_encoder_3=None; zeros in its place)

    def resolved(self) -> "ModelProfile":
        """For tiny profiles: write the checkpoints and point the profile at their paths."""
        if self.tiny is None:
            return self
        from monkey.models.tiny import materialize_tiny

        paths = materialize_tiny(self.tiny, self.tiny_seed)
        adapter = replace(self.ip_adapter, repo=str(paths.ip_adapter)) if self.ip_adapter else None
        return replace(self, pretrained=str(paths.pipeline), ip_adapter=adapter)

    def needs(self) -> list[HubNeed]:
        """What `load_pipeline` reads from the hub for this profile: the pipeline's component folders
        (at `revision`), the IP-Adapter weights and its image encoder. Tiny profiles and local folders
        need nothing (their files are written by code or already on disk)."""
        if self.tiny is not None:
            return []
        needs = []
        if self.pretrained and not is_local(self.pretrained):
            needs.append(
                HubNeed(
                    repo_id=self.pretrained,
                    what=f"{self.pipeline_class} of model profile {self.name}",
                    revision=self.revision,
                    components=pipeline_component_names(self.pipeline_class),
                    skip_components=self.skipped_components(),
                )
            )
        spec = self.ip_adapter
        if spec is not None and spec.repo and not is_local(spec.repo):
            # load_ip_adapter reads the weights file, then the encoder from subfolder/<folder> (or <folder>
            # itself when it holds a '/'), both at the repository's default branch
            weights = f"{spec.subfolder}/{spec.weight_name}" if spec.subfolder else spec.weight_name
            needs.append(HubNeed(spec.repo, f"IP-Adapter weights of model profile {self.name}", files=((weights,),)))
            if spec.image_encoder_folder:
                folder = spec.image_encoder_folder
                if "/" not in folder and spec.subfolder:
                    folder = f"{spec.subfolder}/{folder}"
                needs.append(
                    transformers_model(
                        spec.repo, f"IP-Adapter image encoder of model profile {self.name}", subfolder=folder
                    )
                )
        return needs

    def skipped_components(self) -> tuple[str, ...]:
        """Folders `load_pipeline` tells from_pretrained not to read (it passes None for them)."""
        skipped = ["safety_checker"] if "safety_checker" in pipeline_component_names(self.pipeline_class) else []
        if self.drop_text_encoder_3:
            skipped += ["text_encoder_3", "tokenizer_3"]
        return tuple(skipped)

    def dtype_for(self, device: torch.device) -> torch.dtype:
        table = dict(self.dtype)
        name = table.get(device.type, "float32")
        if name not in DTYPES:
            raise ConfigError(f"model.dtype.{device.type}={name!r} is not allowed; choose one of {list(DTYPES)}")
        return DTYPES[name]


def is_local(name: str) -> bool:
    """A local folder or file rather than a hub id (`from_pretrained` checks the same way: a path that exists)."""
    return os.path.exists(os.path.expanduser(name)) or name.startswith(("/", "./", "../", "~"))


def pipeline_component_names(pipeline_class: str) -> tuple[str, ...]:
    """The component folders a diffusers pipeline class may read (its `__init__`'s module arguments)."""
    cls = getattr(diffusers, pipeline_class, None)
    if cls is None or not inspect.isclass(cls):
        raise ConfigError(f"model.pipeline_class={pipeline_class!r} is not a diffusers pipeline class")
    expected, _ = cls._get_signature_keys(cls)  # the second list: plain keyword options, no folders
    return tuple(sorted(expected))


def profile_checkpoints(profile: ModelProfile) -> list[Checkpoint]:
    """Every checkpoint loading the profile reads (base model, adapter, image encoder), at its pinned
    revision: what a manifest row records as its `weights` (monkey.provenance)."""
    profile = profile.resolved()
    checkpoints = []
    if profile.pretrained:
        checkpoints.append(Checkpoint("base", profile.pretrained, "model_index.json", profile.revision))
    spec = profile.ip_adapter
    if spec is not None and spec.repo:
        local = os.path.exists(os.path.expanduser(spec.repo))
        weight = f"{spec.subfolder}/{spec.weight_name}" if spec.subfolder else spec.weight_name
        adapter_source = os.path.join(spec.repo, weight) if local else spec.repo
        checkpoints.append(Checkpoint("adapter", adapter_source, weight, spec.revision))
        encoder = spec.image_encoder_path()
        if encoder is not None:
            source = os.path.join(spec.repo, encoder) if local else spec.repo
            checkpoints.append(Checkpoint("image_encoder", source, f"{encoder}/config.json", spec.revision))
    return checkpoints


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
    vae_dtype: torch.dtype | None = None  # None: the same as dtype
    speedups: Speedups = field(default_factory=Speedups)  # the runtime speed-up keys (docs/gpu-speed.md)

    @property
    def vae(self) -> torch.dtype:
        return self.vae_dtype or self.dtype


def vae_dtype_for(dtype: torch.dtype, vae_dtype: str = "auto") -> torch.dtype:
    """`runtime.vae_dtype`: auto keeps the VAE in fp32 under an fp16 UNet (SD1.5's VAE config asks for
    that upcast: `force_upcast`), and in the UNet's precision otherwise; fp16 suits an fp16-fix VAE.
    `model` is the UNet's precision whatever it is (what `method.vae_dtype=model` asks for)."""
    if vae_dtype == "auto":
        return torch.float32 if dtype == torch.float16 else dtype
    if vae_dtype == "model":
        return dtype
    if vae_dtype not in DTYPES:
        allowed = ["auto", "model", *DTYPES]
        raise ConfigError(f"runtime.vae_dtype={vae_dtype!r} is not allowed; choose one of {allowed}")
    return DTYPES[vae_dtype]


def resolve_runtime(
    model: ModelProfile,
    device: str = "auto",
    dtype: str = "auto",
    vae_dtype: str = "auto",
    speedups: Speedups | None = None,
) -> Runtime:
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
    return Runtime(
        device=torch_device,
        dtype=torch_dtype,
        model=model,
        vae_dtype=vae_dtype_for(torch_dtype, vae_dtype),
        speedups=speedups or Speedups(),
    )


def offline_hint(repo_id: str | None = None) -> str:
    """Why a load may have failed offline and the exact download command for `repo_id`."""
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    state = "HF_HUB_OFFLINE is set, so only the local cache is read" if offline else "the hub may be unreachable"
    command = f"`hf download {repo_id}`" if repo_id else "`hf download` with its hub id"
    return (
        f"({state}). Download it on a machine with network ({command}) into the cache, or "
        "set the key to a local folder in the hub layout"
    )


def load_cause(err: BaseException) -> str:
    """A library's load error as one line, without its pointers to a stack trace the CLI does not show."""
    text = " ".join(str(err).split())
    text = re.sub(r"[^.]*(stack ?trace|traceback)[^.]*(\.|$)", "", text, flags=re.IGNORECASE).strip()
    return text or type(err).__name__


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


def load_runtime_pipeline(runtime: Runtime) -> diffusers.DiffusionPipeline:
    """The pipeline of a job's runtime: its model, device, precisions and speed-ups."""
    return load_pipeline(runtime.model, runtime.device, runtime.dtype, runtime.vae_dtype, runtime.speedups)


def load_pipeline(
    profile: ModelProfile,
    device: torch.device,
    dtype: torch.dtype,
    vae_dtype: torch.dtype | None = None,
    speedups: Speedups | None = None,
) -> diffusers.DiffusionPipeline:
    """Load (or reuse) the profile's pipeline with its IP-Adapter. One pipeline is kept per process,
    so the jobs of an in-process multirun over methods of one model share it. `vae_dtype` (default:
    `dtype`) keeps the VAE in another precision (monkey.models.vae_precision); `speedups` are applied
    once, after loading (monkey.models.speedups)."""
    profile = profile.resolved()
    vae_dtype = vae_dtype or dtype
    speedups = speedups or Speedups()
    key = stable_hash(
        [repr(profile), str(device), str(dtype)]
        + ([str(vae_dtype)] if vae_dtype != dtype else [])
        + ([repr(speedups)] if speedups != Speedups() else [])
    )
    if key in _LOADED:
        return _LOADED[key]
    _LOADED.clear()
    pipeline_class = getattr(diffusers, profile.pipeline_class, None)
    if pipeline_class is None or not inspect.isclass(pipeline_class):
        raise ConfigError(
            f"model.pipeline_class={profile.pipeline_class!r} is not a diffusers pipeline class "
            "(e.g. LatentConsistencyModelPipeline, StableDiffusionPipeline)"
        )
    # a VAE in its own precision is read from the checkpoint in that precision (not rounded through dtype)
    kwargs: dict[str, Any] = {"dtype": dtype if vae_dtype == dtype else {"default": dtype, "vae": vae_dtype}}
    if profile.revision:
        kwargs["revision"] = profile.revision
    parameters = inspect.signature(pipeline_class.__init__).parameters
    if profile.drop_text_encoder_3 and "text_encoder_3" not in parameters:
        raise ConfigError(
            f"model.drop_text_encoder_3=true needs a pipeline with a third text encoder (SD3); "
            f"{profile.pipeline_class} has none"
        )
    # components passed as None are never read: the safety checker (benchmark images are kept as made)
    # and SD3's T5 when dropped. The same list tells `monkey-data prefetch` what not to fetch.
    kwargs.update(dict.fromkeys(profile.skipped_components()))
    if "safety_checker" in parameters:
        kwargs["requires_safety_checker"] = False
    try:
        pipe = pipeline_class.from_pretrained(profile.pretrained, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"cannot load model.pretrained={profile.pretrained!r} (profile '{profile.name}') "
            f"with {profile.pipeline_class}.from_pretrained {offline_hint(profile.pretrained)}. "
            f"Cause: {load_cause(err)}"
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
                **({"revision": spec.revision} if spec.revision else {}),
            )
        except (OSError, ValueError) as err:
            raise ModelLoadError(
                f"cannot load model.ip_adapter.repo={spec.repo!r} ({spec.subfolder}/{spec.weight_name}, "
                f"image encoder {spec.image_encoder_folder!r}) {offline_hint(spec.repo)}. Cause: {load_cause(err)}"
            ) from err
    if profile.cpu_offload and device.type != "cpu":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if vae_dtype != dtype:
        if getattr(pipe, "image_encoder", None) is not None:
            pipe.image_encoder.to(dtype)  # load_ip_adapter reads it in pipe.dtype, the first module's: the VAE's
        if getattr(pipe, "vae", None) is not None:
            keep_vae_in(pipe.vae, vae_dtype, dtype)
    apply_to_pipeline(pipe, speedups)
    pipe.set_progress_bar_config(disable=True)
    _LOADED[key] = pipe
    return pipe
