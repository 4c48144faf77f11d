"""Tiny random metric backbones written by code in the real checkpoint formats, for `eval=tiny` and tests.

timm: a `model.safetensors` state dict of the real architecture name (e.g. `vit_base_patch14_dinov2`)
built with small widths, at the architecture's default input size (518 px for DINOv2, as the real
checkpoint), so loading it at 224 px goes through timm's own position-embedding resampling.
open_clip: a model config JSON registered with `open_clip.add_model_config` plus an
`open_clip_model.safetensors` state dict, loaded with `create_model_and_transforms(name, pretrained=file)`.

Files go to `$MONKEY_CACHE/tiny-eval/<hash>/`, keyed by everything that decides their bytes.
"""

import json
import logging
from pathlib import Path
from typing import Any

import torch
from monkey.eval.backbones import root_logging_at
from safetensors.torch import save

from monkey.atomic import atomic_write_bytes
from monkey.hashing import stable_hash
from monkey.paths import cache_dir


def _folder(spec: dict[str, Any]) -> Path:
    return cache_dir() / "tiny-eval" / f"{spec['library']}-{stable_hash(spec)}"


def _state_bytes(model: torch.nn.Module) -> bytes:
    return save({name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()})


def materialize_tiny_timm(model_name: str, arch: dict[str, Any], seed: int = 0) -> Path:
    """Write (once) a random checkpoint of `model_name` with the `arch` overrides; return the file."""
    import timm

    spec = {"library": "timm", "model_name": model_name, "arch": arch, "seed": seed, "version": timm.__version__}
    path = _folder(spec) / "model.safetensors"
    if not path.is_file():
        torch.manual_seed(seed)
        model = timm.create_model(model_name, pretrained=False, num_classes=0, **arch)
        with torch.no_grad():  # LayerScale starts at 1e-5 (DINOv2): every image would embed alike
            for name, parameter in model.named_parameters():
                if name.endswith(".gamma"):
                    parameter.fill_(1.0)
        atomic_write_bytes(path, _state_bytes(model))
    return path


def materialize_tiny_open_clip(model_cfg: dict[str, Any], seed: int = 0) -> tuple[str, Path]:
    """Write (once) and register a tiny open_clip model config and its weights.

    Returns (registered model name, weights file). The name carries the spec's hash, so two tiny
    configs never overwrite each other in open_clip's global registry.
    """
    import open_clip

    spec = {"library": "open_clip", "model_cfg": model_cfg, "seed": seed, "version": open_clip.__version__}
    folder = _folder(spec)
    name = f"monkey-tiny-clip-{stable_hash(spec, 8)}"
    config_path = folder / f"{name}.json"
    weights = folder / "open_clip_model.safetensors"
    if not config_path.is_file():
        atomic_write_bytes(config_path, json.dumps(model_cfg, indent=2, sort_keys=True).encode())
    if name not in open_clip.list_models():
        open_clip.add_model_config(config_path)
    if not weights.is_file():
        torch.manual_seed(seed)
        with root_logging_at(logging.ERROR):  # "no pretrained weights loaded": random on purpose
            model = open_clip.create_model(name, pretrained=None)
        atomic_write_bytes(weights, _state_bytes(model))
    return name, weights
