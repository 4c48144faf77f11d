"""Where a device run (the throughput run, the speed-up keys) measures and in which precision, read once
from the arguments, and the head its record section begins with."""

import argparse
from dataclasses import dataclass
from typing import Any

import torch
from benchtools import cpu_model, provenance

from monkey.models.profiles import DTYPES  # the harness's names of the three precisions


@dataclass(frozen=True)
class DeviceRun:
    device: torch.device
    dtype: torch.dtype  # the UNet's and the encoders'
    vae_dtype: torch.dtype  # float32 beside a float16 run, else the run's dtype
    quick: bool  # CPU, tiny shapes, float32
    name: str  # the GPU's name, or the CPU model

    @classmethod
    def from_args(cls, args: argparse.Namespace, no_cuda: str) -> "DeviceRun":
        """--quick: the CPU in float32; else --device in --dtype. `no_cuda`: the message when a CUDA
        device is asked for and there is none."""
        device = torch.device("cpu" if args.quick else args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit(no_cuda)
        dtype = torch.float32 if args.quick else DTYPES[args.dtype]
        vae_dtype = torch.float32 if dtype == torch.float16 else dtype
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
        return cls(device, dtype, vae_dtype, args.quick, name)

    def head(self, load_start: tuple[float, float, float] | None = None) -> dict[str, Any]:
        """The section's provenance (with the load average since `load_start`) and device."""
        return {
            **provenance(self.device, load_start),
            "quick": self.quick,
            "device": str(self.device),
            "device_name": self.name,
        }

    def settings(self, size: int) -> dict[str, Any]:
        """The settings every device section begins with: the image size and the precisions."""
        return {
            "size": size,
            "dtype": str(self.dtype).removeprefix("torch."),
            "vae_dtype": str(self.vae_dtype).removeprefix("torch."),
        }
