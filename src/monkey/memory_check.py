"""Refuse an image size the device cannot hold, before any model is loaded.

Without this, `generation.height=800000 generation.width=800000` passes every key check, loads the
model and dies minutes later in the VAE decoder asking for terabytes. The estimate is a LOWER bound
of what one batch needs at its last step, counting only what grows with the pixel count:

  per image   2 x C x H x W x vae_bytes    the VAE decoder's full-resolution block: a convolution's
                                           input and output (C: its channels, 128 in every real SD,
                                           SDXL, SD3 and FLUX VAE; the tiny profiles' own width)
            + 4 x (H/8) x (W/8) x 2 x bytes the latents and the model's prediction for them
            + 3 x H x W x 4                 the decoded image as float32 (the pipeline's output)
            + 3 x H x W                     the 8-bit image that is saved
  x batch    images decoded together (method.batch_size, else generation.batch_size)

Weights and everything else only add to it, so a size refused here could never have run; a size that
passes may still not fit (the bound says nothing about the UNet's attention at that size).
"""

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from monkey.errors import ConfigError
from monkey.models.profiles import Runtime

VAE_FULL_RES_CHANNELS = 128  # block_out_channels[0] of the SD-family AutoencoderKL
LATENT_CHANNELS = 4  # SD1.x/SDXL; SD3 and FLUX have 16, so 4 keeps the bound low
LATENT_FACTOR = 8


@dataclass(frozen=True)
class MemoryNeed:
    bytes_needed: int
    bytes_available: int | None  # None: this device's free memory cannot be read (no check)
    device: str


def decoder_channels(runtime: Runtime) -> int:
    """Channels of the VAE decoder's full-resolution block: the tiny profiles' own, else SD's 128."""
    if runtime.model.tiny is not None:
        from monkey.models.tiny import VAE

        return int(VAE["block_out_channels"][0])
    return VAE_FULL_RES_CHANNELS


def bytes_of(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def estimate_bytes(height: int, width: int, batch: int, runtime: Runtime) -> int:
    """The lower bound of the module docstring, in bytes."""
    pixels = height * width
    latents = LATENT_CHANNELS * (height // LATENT_FACTOR) * (width // LATENT_FACTOR)
    per_image = (
        2 * decoder_channels(runtime) * pixels * bytes_of(runtime.vae)
        + 2 * latents * bytes_of(runtime.dtype)
        + 3 * pixels * 4
        + 3 * pixels
    )
    return batch * per_image


def available_bytes(device: torch.device) -> int | None:
    """Free memory where the batch is decoded: the GPU's free memory, or the machine's available RAM."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        return available_ram()
    return None  # mps and others: no portable query


def available_ram() -> int | None:
    """MemAvailable from /proc/meminfo (counts reclaimable page cache), else free pages (sysconf)."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_memory(
    height: int, width: int, batch: int, runtime: Runtime, size_keys: str, available: int | None = None
) -> MemoryNeed:
    """Raise ConfigError when the lower bound exceeds the free memory of `runtime.device`; `size_keys`
    names the keys that set the size (for the message), `available` overrides the query (tests)."""
    need = estimate_bytes(height, width, batch, runtime)
    free = available if available is not None else available_bytes(runtime.device)
    if free is not None and need > free:
        raise ConfigError(
            f"{size_keys} with batches of {batch}: decoding needs at least {human(need)} on {runtime.device}, "
            f"{human(free)} is free there; lower the size or the batch size"
        )
    return MemoryNeed(need, free, str(runtime.device))
