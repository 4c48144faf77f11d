"""Optional speed-ups of the sampling loop, behind `runtime:` keys (all off by default).

- `compile`: torch.compile of the UNet's `forward` only. The module's `__call__` stays eager, so the
  forward pre-hooks that MONKEY's step controller and the per-item image embeddings install per call
  run as Python before every evaluation; the recording processors run inside the compiled forward,
  where Dynamo breaks the graph around their Python state (and around the early exit's exception).
  A recompile limit hit raises instead of falling back to eager code without saying so.
- `channels_last`: the UNet's and VAE's weights in channels-last layout (convolutions pick other
  kernels, so other float rounding).
- `sdpa_backend`: `torch.nn.attention.sdpa_kernel` with that one backend around every evaluation of
  the denoiser (UNet or transformer), installed by hooks at load. The VAE, text and image encoders keep
  torch's choice: under an fp16 UNet the VAE runs in fp32, where flash attention has no kernel, so a
  backend around the whole call made `flash` unusable with the default precision. A backend with no
  kernel for the denoiser's shapes fails naming the key (`sampling`), never falls back.
- `cudnn_benchmark`: `torch.backends.cudnn.benchmark` on during each generate call, so cuDNN times its
  convolution algorithms per shape once and keeps the fastest (other algorithms round differently).
- `cuda_graphs`: refused (see `refuse_cuda_graphs`).

Every key that can move a pixel enters the run's config hash (`hashed`); the defaults add nothing,
so the hashes of existing run folders hold.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.hooks import RemovableHandle

from monkey.errors import ConfigError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
SDPA_BACKENDS = {
    "auto": None,
    "math": SDPBackend.MATH,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
}
KEYS = ("compile", "channels_last", "sdpa_backend", "cudnn_benchmark", "cuda_graphs")
# Graphs one compiled forward may hold: MONKEY's step plans give a handful of variants (capture
# processors on or off, recording or not, masks or not, IP scales); past this Dynamo raises
RECOMPILE_LIMIT = 64
# torch.compile's backend for the `compile` key (tests swap in Dynamo's "eager" backend: the same tracing,
# guards and graph breaks around MONKEY's Python state, without inductor's minutes of C++ builds on a CPU)
COMPILE_BACKEND = "inductor"
CUDA_GRAPHS_REFUSAL = (
    "runtime.cuda_graphs=true is refused: a CUDA graph replays one fixed sequence of kernels on fixed "
    "buffers, and a MONKEY call changes the UNet's work from step to step (the IP scale, per-item masks "
    "on mask steps only, the recorder's maps on capture steps, and pass 1 leaving the UNet mid-forward at "
    "the capture layer), while every pipeline call also makes new latents. Use runtime.compile="
    "reduce-overhead instead: it records CUDA graphs per compiled region and re-records them per variant"
)


@dataclass(frozen=True)
class Speedups:
    """The `runtime:` speed-up keys, read once from the config."""

    compile: str | None = None  # None: eager; else a torch.compile mode
    channels_last: bool = False
    sdpa_backend: str = "auto"
    cuda_graphs: bool = False
    cudnn_benchmark: bool = False

    def hashed(self) -> dict[str, Any]:
        """The keys that can change pixels, where they differ from the defaults (for the config hash)."""
        out: dict[str, Any] = {}
        if self.compile is not None:
            out["compile"] = self.compile
        if self.channels_last:
            out["channels_last"] = True
        if self.sdpa_backend != "auto":
            out["sdpa_backend"] = self.sdpa_backend
        if self.cudnn_benchmark:
            out["cudnn_benchmark"] = True
        return out


def speedups_from_config(runtime: Any) -> Speedups:
    """The speed-up keys of a `runtime:` config node (a DictConfig or a dict); absent keys are off."""
    get = runtime.get if hasattr(runtime, "get") else (lambda key, default=None: default)
    return Speedups(
        compile=compile_mode(get("compile", False)),
        channels_last=flag(get("channels_last", False), "runtime.channels_last"),
        sdpa_backend=sdpa_backend_name(get("sdpa_backend", "auto")),
        cuda_graphs=flag(get("cuda_graphs", False), "runtime.cuda_graphs"),
        cudnn_benchmark=flag(get("cudnn_benchmark", False), "runtime.cudnn_benchmark"),
    )


def compile_mode(value: Any) -> str | None:
    if value is False or value is None or value in ("false", "off", "none"):
        return None
    if value is True or value == "true":
        return "default"
    if value not in COMPILE_MODES:
        raise ConfigError(f"runtime.compile={value!r} is not allowed; choose false or one of {list(COMPILE_MODES)}")
    return str(value)


def flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is not allowed; choose true or false")
    return value


def sdpa_backend_name(value: Any) -> str:
    if value not in SDPA_BACKENDS:
        raise ConfigError(f"runtime.sdpa_backend={value!r} is not allowed; choose one of {list(SDPA_BACKENDS)}")
    return str(value)


def refuse_cuda_graphs(speedups: Speedups) -> None:
    if speedups.cuda_graphs:
        raise ConfigError(CUDA_GRAPHS_REFUSAL)


def apply_to_pipeline(pipe: Any, speedups: Speedups) -> None:
    """Layout and compilation of a freshly loaded pipeline (each done once per loaded pipeline)."""
    refuse_cuda_graphs(speedups)
    if speedups.channels_last:
        for name in ("unet", "vae"):
            module = getattr(pipe, name, None)
            if module is not None:
                module.to(memory_format=torch.channels_last)
    attach_sdpa_backend(denoiser(pipe), speedups.sdpa_backend)
    if speedups.compile is not None:
        compile_unet_forward(pipe.unet, speedups.compile)


def denoiser(pipe: Any) -> torch.nn.Module:
    """The network the sampling loop evaluates: a UNet, or an SD3/FLUX transformer."""
    module = getattr(pipe, "unet", None)
    module = module if module is not None else getattr(pipe, "transformer", None)
    if module is None:
        raise ConfigError(f"{type(pipe).__name__} has neither a unet nor a transformer for runtime.sdpa_backend")
    return module


def attach_sdpa_backend(module: torch.nn.Module, name: str) -> list[RemovableHandle]:
    """Only backend `name` for SDPA inside every forward of `module` (nothing for auto). The exit hook runs
    even when the forward raises (pass 1's early exit leaves the UNet by an exception), so the global
    backend flags are always put back. Returns the hooks' handles, to detach them."""
    backend = SDPA_BACKENDS[sdpa_backend_name(name)]
    if backend is None:
        return []
    open_contexts: list[Any] = []  # a stack: a forward inside a forward (never in diffusers) stays paired

    def enter(_module: torch.nn.Module, _args: tuple) -> None:
        context = sdpa_kernel([backend])
        context.__enter__()
        open_contexts.append(context)

    def leave(_module: torch.nn.Module, _args: tuple, _output: Any) -> None:
        open_contexts.pop().__exit__(None, None, None)

    return [module.register_forward_pre_hook(enter), module.register_forward_hook(leave, always_call=True)]


def compile_unet_forward(unet: torch.nn.Module, mode: str) -> None:
    """Compile `unet.forward` in place: hooks (`__call__`) and the module's attributes stay as they were,
    so `attn_processors`, `set_processor` and `get_submodule` keep working on the same module."""
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    torch._dynamo.config.fail_on_recompile_limit_hit = True  # never eager code behind a compile key
    # dynamic=False: one static graph per shape (per resolution of each attention frame), which suits
    # inductor and CUDA graphs better than symbolic sizes; the limit above bounds their number
    unet.forward = torch.compile(
        unet.forward, mode=None if mode == "default" else mode, backend=COMPILE_BACKEND, dynamic=False
    )


def is_compiled(unet: torch.nn.Module) -> bool:
    return "forward" in vars(unet) and hasattr(unet.forward, "_torchdynamo_orig_callable")


@contextlib.contextmanager
def sampling(speedups: Speedups, device: torch.device | str = "cpu") -> Iterator[None]:
    """Around one generate call: cuDNN's benchmark mode when asked (put back after), and the chosen SDPA
    backend's absence of a kernel (raised inside the denoiser, see `attach_sdpa_backend`) as a config
    error naming the key."""
    with cudnn_benchmark(speedups.cudnn_benchmark):
        try:
            yield
        except RuntimeError as err:
            message = " ".join(str(err).split())
            if speedups.sdpa_backend == "auto" or not any(
                words in message.lower() for words in ("no available kernel", "no viable backend")
            ):
                raise
            raise ConfigError(
                f"runtime.sdpa_backend={speedups.sdpa_backend!r} has no kernel for this model's attention on "
                f"{device} (torch: {message[:160]}). Choose auto, or a backend this device and dtype offer"
            ) from err


@contextlib.contextmanager
def cudnn_benchmark(on: bool) -> Iterator[None]:
    """cuDNN's benchmark mode within the block when `on`; the process's own setting after it."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = before or on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
