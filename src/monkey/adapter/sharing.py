"""Work the variants of a sweep repeat, done once: pass-1 attention maps and pass-2 prefixes.

Both caches are content-addressed (monkey.cache.ContentCache) by everything that decides the
computation: the model, device and precision, the exact pipeline call (prompts and seeds of the whole
batch, since neighbours change float rounding), the subject embedding's bytes, the size and the pass's
own settings, and the source of the code that computes them (every .py file of the installed `monkey`
package, see `package_code_digest`). Never by a variant's name: the jobs of a multirun, later sweeps and
reruns share them, and a cached entry holds the bytes the computation would give, so cached and uncached runs match.

Pass 1: one entry per (item, layer, step) with that map for all image tokens, [h, w, T]. A variant
needs its layers x capture steps; when any is missing, pass 1 runs once and records those plus the
extras of `share.record_layers` / `share.record_steps`, so the sweep's other variants find theirs.
A variant that reads the pass-1 image (`save_pass1_image`, the segmenter and refined mask sources)
also needs one image entry per item, keyed by the maps' item key plus the VAE's dtype; without it
pass 1 runs to its end, and stores its image and maps for the variants after it; `share.record_image`
makes any computed pass 1 do so, so that a sweep's first variant serves the image readers after it.
Token, threshold, combine rule, mask steps and the pass-2 scale never enter the key; everything that
changes a map does: the call, the pass-1 trajectory (steps, scale, guidance), the map's temperature
(`attention_scale`, `record_dtype`) and the code itself (`CAPTURE_FORMAT` and a digest of the whole
package's source: pass 1 runs capture.py, control.py, sampler.py, item_embeds.py, prompt_embeds.py and
more, and an edit of any of them, e.g. the IP scale control.py sets, changes the maps), so a cache that
outlives an edit or an upgrade never serves maps computed the old way.

Pass 2: the steps before the first masked step do not depend on the mask. Their result (latents after
step j, plus each item's generator state, since LCM draws fresh noise every step) is stored under the
IP scales of steps 0..j-1 and the same package digest; a variant resumes from the longest stored prefix
of its own schedule.
Resuming needs a scheduler whose whole state is its step index (LCM); any other runs pass 2 whole.
"""

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
from diffusers import LCMScheduler
from PIL import Image

import monkey
from monkey.adapter.capture import CAPTURE_FORMAT, map_key
from monkey.cache import ContentCache
from monkey.errors import ConfigError
from monkey.hashing import stable_hash
from monkey.models.profiles import Runtime
from monkey.paths import cache_dir

PASS1_NAMESPACE = "monkey-pass1"
PREFIX_NAMESPACE = "monkey-pass2-prefix"
ALL_LAYERS = "all"


@dataclass(frozen=True)
class ShareSettings:
    """`method.share`: what a MONKEY job takes from and gives to the shared caches (never the images)."""

    pass1: bool = True
    pass2_prefix: bool = True
    record_layers: tuple[str, ...] = ()  # ("all",): every attn2 layer of the model
    record_steps: tuple[int, ...] = ()
    record_image: bool = False  # a computed pass 1 also runs to its end and caches its image (mask-source sweeps)
    dir: str | None = None  # cache root; default $MONKEY_CACHE or ~/.cache/monkey-bench

    def __post_init__(self) -> None:
        layers = self.record_layers
        layers = (layers,) if isinstance(layers, str) else tuple(str(layer) for layer in layers or ())
        object.__setattr__(self, "record_layers", layers)
        try:
            steps = tuple(sorted({int(step) for step in self.record_steps or ()}))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"method.share.record_steps={self.record_steps!r} must be a list of integers") from err
        if any(step < 0 for step in steps):
            raise ConfigError(f"method.share.record_steps={list(steps)} has negative steps (0-based loop indices)")
        object.__setattr__(self, "record_steps", steps)

    @property
    def enabled(self) -> bool:
        return self.pass1 or self.pass2_prefix

    def root(self) -> Path:
        return Path(self.dir) if self.dir else cache_dir()

    def extra_layers(self, model_layers: Sequence[str]) -> tuple[str, ...]:
        """The extra layers by name; `all` means every attn2 layer of the model."""
        if ALL_LAYERS in self.record_layers:
            return tuple(model_layers)
        unknown = [layer for layer in self.record_layers if layer not in model_layers]
        if unknown:
            raise ConfigError(
                f"method.share.record_layers has unknown layer(s) {unknown}; use 'all' or the model's attn2 "
                f"layers: {list(model_layers)}"
            )
        return self.record_layers


def package_code_digest(root: Path) -> str:
    """SHA-256 over every .py file under `root` (relative path and bytes, in sorted order).

    The caches key by all of it, not by the modules one thinks a pass runs: a digest of capture.py
    alone served stale maps after an edit of control.py. Other files (YAML, data) are left out: what
    they change reaches the key through the settings and inputs it already holds."""
    digest = hashlib.sha256()
    files = sorted(path for path in root.rglob("*.py") if "__pycache__" not in path.parts)
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@functools.cache
def installed_code_digest() -> str:
    """`package_code_digest` of the installed `monkey` package, computed once per process."""
    return package_code_digest(Path(monkey.__file__).parent)


def tensor_digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()


def runtime_identity(runtime: Runtime) -> dict[str, Any]:
    """What, besides the inputs, decides the floats: model, device kind, precision, library versions."""
    device = runtime.device.type
    if device == "cuda" and torch.cuda.is_available():
        device = f"cuda:{torch.cuda.get_device_name(runtime.device)}"
    return {
        "model": asdict(runtime.model),
        "device": device,
        "dtype": str(runtime.dtype),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }


def call_identity(
    identity: dict[str, Any],
    prompts: Sequence[str],
    seeds: Sequence[int],
    subject: torch.Tensor,
    height: int,
    width: int,
) -> dict[str, Any]:
    """One pipeline call's inputs: the whole batch, so a cached entry is bound to its neighbours."""
    return {
        **identity,
        "prompts": list(prompts),
        "seeds": [int(seed) for seed in seeds],
        "subject": tensor_digest(subject),
        "size": [int(height), int(width)],
    }


def union(first: Iterable[Any], second: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys([*first, *second]))


class Pass1Cache:
    """Pass-1 maps per (item, layer, step)."""

    def __init__(self, root: Path):
        self.cache = ContentCache(root, PASS1_NAMESPACE)

    @staticmethod
    def item_keys(call: dict[str, Any], settings: Any) -> list[str]:
        """Per item of the call: its inputs, the pass-1 settings that shape the trajectory, and how a
        map is computed from it (temperature, capture format and code)."""
        trajectory = {
            "initial_steps": settings.initial_steps,
            "initial_scale": float(settings.initial_scale),
            "guidance_scale": float(settings.guidance_scale),
        }
        maps = {
            "attention_scale": settings.attention_scale,
            "record_dtype": settings.record_dtype,
            "format": CAPTURE_FORMAT,
            "code": installed_code_digest(),
        }
        base = stable_hash({"call": call, "pass1": trajectory, "maps": maps}, 32)
        return [stable_hash([base, index], 32) for index in range(len(call["prompts"]))]

    @staticmethod
    def entry_key(item_key: str, layer: str, step: int) -> str:
        return stable_hash([item_key, layer, int(step)], 32)

    def load(
        self, item_keys: Sequence[str], layers: Sequence[str], steps: Sequence[int]
    ) -> list[dict[str, torch.Tensor]] | None:
        """Every item's maps for layers x steps, or None when any is missing (then pass 1 runs)."""
        if not all(
            self.entry_key(k, layer, step) in self.cache for k in item_keys for layer in layers for step in steps
        ):
            self.cache.misses += 1
            return None
        records = []
        for item_key in item_keys:
            record = {}
            for layer in layers:
                for step in steps:
                    entry = self.cache.get_tensors(self.entry_key(item_key, layer, step))
                    if entry is None:  # removed since the check: treat as a miss
                        return None
                    record[map_key(layer, step)] = entry["map"]
            records.append(record)
        return records

    def store(self, item_keys: Sequence[str], records: Sequence[dict[str, torch.Tensor]]) -> None:
        for item_key, record in zip(item_keys, records, strict=True):
            for key, values in record.items():
                layer, step = key.rsplit("@", 1)
                self.cache.put_tensors(self.entry_key(item_key, layer, int(step)), {"map": values})

    @staticmethod
    def image_key(item_key: str, decoder: dict[str, Any]) -> str:
        """The pass-1 image of an item: its maps' key (the same trajectory and code) and what decodes the
        latents (the VAE's dtype), which the maps never see."""
        return stable_hash([item_key, "image", decoder], 32)

    def load_images(self, item_keys: Sequence[str], decoder: dict[str, Any]) -> list[Image.Image] | None:
        """Every item's decoded pass-1 image, or None when any is missing."""
        keys = [self.image_key(item_key, decoder) for item_key in item_keys]
        entries = [self.cache.get_tensors(key) if key in self.cache else None for key in keys]
        if any(entry is None for entry in entries):
            return None
        return [Image.fromarray(entry["image"].numpy()) for entry in entries]

    def store_images(self, item_keys: Sequence[str], decoder: dict[str, Any], images: Sequence[Image.Image]) -> None:
        for item_key, image in zip(item_keys, images, strict=True):
            pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy())  # [H, W, 3]
            self.cache.put_tensors(self.image_key(item_key, decoder), {"image": pixels})


@dataclass
class Snapshot:
    """The state of a pass-2 call after `steps` steps: all a resumed call needs."""

    steps: int
    latents: torch.Tensor  # [n, C, h, w] as the loop hands them to the next step
    generator_states: list[torch.Tensor]  # per item, torch.Generator.get_state()


def resumable(pipe: Any) -> bool:
    """LCM's state between steps is its step index, and it is rebuilt from a custom timestep list;
    multistep schedulers (PNDM, DPM-Solver) keep a history the pipelines do not expose."""
    return isinstance(pipe.scheduler, LCMScheduler)


class PrefixCache:
    """Pass-2 snapshots keyed by the call and the IP scales of the steps done."""

    def __init__(self, root: Path):
        self.cache = ContentCache(root, PREFIX_NAMESPACE)

    @staticmethod
    def keys(call: dict[str, Any], settings: Any, scales: Sequence[float]) -> list[str]:
        """keys[j - 1] names the state after steps 0..j-1 run at scales[:j] (j = 1..len(scales))."""
        schedule = {"final_steps": settings.final_steps, "guidance_scale": float(settings.guidance_scale)}
        base = stable_hash({"call": call, "pass2": schedule, "code": installed_code_digest()}, 32)
        return [stable_hash([base, [float(s) for s in scales[:j]]], 32) for j in range(1, len(scales) + 1)]

    def longest(self, keys: Sequence[str]) -> Snapshot | None:
        for steps in range(len(keys), 0, -1):
            entry = self.cache.get_tensors(keys[steps - 1]) if keys[steps - 1] in self.cache else None
            if entry is not None:
                count = sum(name.startswith("generator.") for name in entry)
                states = [entry[f"generator.{index}"] for index in range(count)]
                return Snapshot(steps, entry["latents"], states)
        return None

    def store(self, key: str, snapshot: Snapshot) -> None:
        if key in self.cache:
            return
        tensors = {"latents": snapshot.latents}
        tensors.update({f"generator.{index}": state for index, state in enumerate(snapshot.generator_states)})
        self.cache.put_tensors(key, tensors)


@dataclass
class SharedWork:
    """The caches one MONKEY method instance uses, with what identifies its runtime."""

    settings: ShareSettings
    identity: dict[str, Any]
    decoder: dict[str, Any] = field(default_factory=dict)  # what decodes a cached pass-1 image (VAE dtype)

    def __post_init__(self) -> None:
        root = self.settings.root()
        self.pass1 = Pass1Cache(root) if self.settings.pass1 else None
        self.prefix = PrefixCache(root) if self.settings.pass2_prefix else None

    @classmethod
    def for_runtime(cls, settings: ShareSettings, runtime: Runtime) -> "SharedWork":
        return cls(settings, runtime_identity(runtime), {"vae_dtype": str(runtime.vae)})
