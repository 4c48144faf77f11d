"""Metric backbones behind one small interface: `embed_images(list[PIL]) -> [N, D]`, `embed_texts`.

Embeddings come back in fp32, L2-normalised, on the CPU, so a score is a plain dot product (a cosine,
not x100). Each backbone is named in `eval.backbones.<key>` and loaded through its library's own entry
point (`timm.create_model`, `open_clip.create_model_and_transforms`); a `tiny` block instead writes a
small random checkpoint in the same format and loads that file through the same call.

Conventions (issue 4, the paper's reference code):
- DINO (timm ViTs, the CLS token after the final norm): resize the short side to 256 (bicubic), centre
  crop 224, ImageNet mean/std. DINOv2 is built at 224 px, not timm's 518 px default.
- CLIP (open_clip): the model's own eval transform and tokenizer; OpenAI weights use QuickGELU.
"""

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from monkey.errors import ConfigError, ModelLoadError
from monkey.hashing import stable_hash
from monkey.hub_needs import HubNeed

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINDS = ("timm", "open_clip")


@dataclass(frozen=True)
class BackboneSpec:
    """One entry of `eval.backbones`: which model, which weights, which metric columns it fills."""

    key: str  # the config key, e.g. "dino"
    kind: str  # timm | open_clip
    model_name: str  # timm model name (with tag) or open_clip architecture name
    image_metric: str  # column of image-image cosines, e.g. "dino", "clip_i"
    text_metric: str | None = None  # column of image-text cosines (CLIP only), e.g. "clip_t"
    pretrained: str | None = None  # timm: null = the hub weights, or a local file; open_clip: a tag or a file
    resize: int = 256  # timm preprocessing: short side resized to this (bicubic) ...
    crop: int = 224  # ... then centre-cropped to this; also the model's input size
    force_quick_gelu: bool = False  # open_clip: OpenAI's CLIP weights were trained with QuickGELU
    tiny: dict[str, Any] | None = None  # architecture overrides of a tiny random checkpoint written by code
    tiny_seed: int = 0

    @property
    def identity(self) -> str:
        """Names the embeddings this backbone produces: cache entries are keyed by it."""
        fields = {k: v for k, v in self.__dict__.items() if k not in ("key", "image_metric", "text_metric")}
        return f"{self.key}-{stable_hash(fields, 12)}"


    def needs(self) -> list[HubNeed]:
        """What `load_backbone` reads from the hub for this spec (none for a tiny or a local checkpoint):
        the hub location comes from timm's / open_clip's own pretrained tables, as their loaders read them."""
        if self.tiny is not None or (self.pretrained and os.path.exists(os.path.expanduser(self.pretrained))):
            return []
        what = f"eval backbone {self.key} ({self.kind} {self.model_name})"
        if self.kind == "timm":
            return [timm_need(self.model_name, what)]
        return [open_clip_need(self.model_name, self.pretrained, what)]


def timm_need(model_name: str, what: str) -> HubNeed:
    import timm

    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None or not cfg.hf_hub_id:
        raise ConfigError(f"{what}: timm has no hub weights for {model_name!r}; set its `pretrained` to a local file")
    repo, _, revision = cfg.hf_hub_id.partition("@")
    # timm.models.load_state_dict_from_hf: the named file, else safetensors before the .bin
    names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else ("model.safetensors", "pytorch_model.bin")
    return HubNeed(repo, what, revision=revision or None, files=(names,))


def open_clip_need(model_name: str, tag: str | None, what: str) -> HubNeed:
    import open_clip
    from open_clip.pretrained import HF_WEIGHTS_NAME, _get_safe_alternatives

    cfg = open_clip.get_pretrained_cfg(model_name, tag or "")
    if not cfg.get("hf_hub"):
        raise ConfigError(
            f"{what}: open_clip has no hub weights for pretrained={tag!r}; set its `pretrained` to a local file"
        )
    # open_clip.pretrained.download_pretrained: 'org/name/file' or 'org/name/' (its default file name),
    # its safetensors twin tried first
    repo, filename = os.path.split(cfg["hf_hub"])
    filename = filename or HF_WEIGHTS_NAME
    return HubNeed(repo, what, files=((*_get_safe_alternatives(filename), filename),))


def spec_from_config(key: str, cfg: dict[str, Any]) -> BackboneSpec:
    known = set(BackboneSpec.__dataclass_fields__) - {"key"}
    unknown = set(cfg) - known
    if unknown:
        raise ConfigError(f"eval.backbones.{key} has unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
    if cfg.get("kind") not in KINDS:
        raise ConfigError(f"eval.backbones.{key}.kind={cfg.get('kind')!r} is not allowed; choose one of {list(KINDS)}")
    for required in ("model_name", "image_metric"):
        if not cfg.get(required):
            raise ConfigError(f"eval.backbones.{key}.{required} is required")
    if cfg.get("text_metric") and cfg["kind"] != "open_clip":
        raise ConfigError(f"eval.backbones.{key}.text_metric needs a text tower: only kind=open_clip has one")
    return BackboneSpec(key=key, **cfg)


@dataclass
class Counters:
    """How much work a backbone did: tests check cache accounting with these."""

    images: int = 0  # images passed through the image tower
    texts: int = 0  # texts passed through the text tower
    calls: int = 0  # forward calls (batches)
    per_call: list[int] = field(default_factory=list)


class Backbone(ABC):
    def __init__(self, spec: BackboneSpec, model: torch.nn.Module, device: torch.device, batch_size: int):
        self.spec = spec
        self.model = model.eval().to(device=device, dtype=torch.float32)
        self.device = device
        self.batch_size = batch_size
        self.counters = Counters()
        self.weights_file: str | None = None  # the local checkpoint file the loader read, if any

    @property
    def identity(self) -> str:
        return self.spec.identity

    def weights_identity(self) -> dict[str, Any]:
        """Which weights these embeddings came from (a score record's `backbone_weights`): the file's
        SHA-256 for a local checkpoint, else the hub snapshot timm resolves to (None when not cached)."""
        from monkey.provenance import Checkpoint

        if self.weights_file and Path(self.weights_file).is_file():
            return Checkpoint(self.spec.key, self.weights_file).identity()[0]
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        hub_id = cfg.get("hf_hub_id") if isinstance(cfg, dict) else None
        if hub_id:
            return Checkpoint(self.spec.key, hub_id, cfg.get("hf_hub_filename") or "model.safetensors").identity()[0]
        # an open_clip tag: named, not resolved to a commit
        return {"source": f"{self.spec.model_name}:{self.weights_file or self.spec.pretrained}", "snapshot": None}

    @property
    def has_text(self) -> bool:
        return self.spec.text_metric is not None

    def describe_transform(self) -> list[str]:
        """The preprocessing steps this backbone runs, as text (eval_config.json's `transforms`)."""
        transform = getattr(self, "transform", None)
        steps = getattr(transform, "transforms", [transform])
        return [getattr(step, "__name__", None) or " ".join(repr(step).split()) for step in steps]

    @abstractmethod
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One RGB image -> normalised pixels [3, H, W]."""

    @abstractmethod
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> raw embeddings [B, D]."""

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        raise ConfigError(f"backbone '{self.spec.key}' ({self.spec.model_name}) has no text tower")

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """[N] PIL images -> [N, D] fp32, L2-normalised, CPU."""
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            pixels = torch.stack([self.preprocess(image.convert("RGB")) for image in chunk]).to(self.device)
            out.append(F.normalize(self.encode_pixels(pixels).float(), dim=-1).cpu())
            self.counters.images += len(chunk)
            self.counters.calls += 1
            self.counters.per_call.append(len(chunk))
        return torch.cat(out) if out else torch.empty(0, 0)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """[N] strings -> [N, D] fp32, L2-normalised, CPU (CLIP backbones only)."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            out.append(F.normalize(self.encode_texts(chunk).float(), dim=-1).cpu())
            self.counters.texts += len(chunk)
            self.counters.calls += 1
            self.counters.per_call.append(len(chunk))
        return torch.cat(out) if out else torch.empty(0, 0)


class TimmBackbone(Backbone):
    """A timm ViT (DINOv2, DINO v1): the CLS token after the final norm (`num_classes=0`, token pooling)."""

    def __init__(self, spec: BackboneSpec, model: torch.nn.Module, device: torch.device, batch_size: int):
        super().__init__(spec, model, device, batch_size)
        self.transform = dino_transform(spec.resize, spec.crop)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)  # [B, D]


class OpenClipBackbone(Backbone):
    def __init__(self, spec, model, device, batch_size, transform, tokenizer):
        super().__init__(spec, model, device, batch_size)
        self.transform = transform
        self.tokenizer = tokenizer

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)  # [B, D]

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))  # [B, D]


def dino_transform(resize: int, crop: int):
    from torchvision import transforms  # imported on use: a report over scored folders never needs it

    return transforms.Compose(
        [
            transforms.Resize(resize, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(crop),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def offline_hint(repo_id: str | None = None) -> str:
    from monkey.models.profiles import offline_hint as hint  # imported on use: it pulls in diffusers

    return hint(repo_id)


def load_cause(err: BaseException) -> str:
    from monkey.models.profiles import load_cause as cause

    return cause(err)


def load_timm(spec: BackboneSpec, device: torch.device, batch_size: int) -> TimmBackbone:
    import timm
    from monkey.eval.tiny_backbones import materialize_tiny_timm

    kwargs: dict[str, Any] = {"num_classes": 0, "img_size": spec.crop}
    weights = spec.pretrained
    if spec.tiny is not None:
        weights = str(materialize_tiny_timm(spec.model_name, spec.tiny, spec.tiny_seed))
        kwargs.update(spec.tiny)
    if weights:
        kwargs["pretrained_cfg_overlay"] = {"file": weights}
    where = f"file {weights!r}" if weights else "the hub"
    try:
        model = timm.create_model(spec.model_name, pretrained=True, **kwargs)
    except TypeError as err:  # e.g. img_size on a model that does not take it
        raise ConfigError(
            f"eval.backbones.{spec.key}: {spec.model_name} is not a timm ViT taking img_size: {err}"
        ) from err
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ConfigError(f"eval.backbones.{spec.key}.model_name={spec.model_name!r}: {err}") from err
        raise ModelLoadError(
            f"cannot load eval.backbones.{spec.key} ({spec.model_name}) from {where} {offline_hint()}. "
            f"Cause: {load_cause(err)}"
        ) from err
    except OSError as err:
        raise ModelLoadError(
            f"cannot load eval.backbones.{spec.key} ({spec.model_name}) from {where} {offline_hint()}, or set "
            f"eval.backbones.{spec.key}.pretrained to a local model.safetensors. Cause: {load_cause(err)}"
        ) from err
    backbone = TimmBackbone(spec, model, device, batch_size)
    backbone.weights_file = weights
    return backbone


def load_open_clip(spec: BackboneSpec, device: torch.device, batch_size: int) -> OpenClipBackbone:
    import open_clip
    from monkey.eval.tiny_backbones import materialize_tiny_open_clip

    name, weights = spec.model_name, spec.pretrained
    if spec.tiny is not None:
        name, path = materialize_tiny_open_clip(spec.tiny, spec.tiny_seed)
        weights = str(path)
    try:
        model, _, transform = open_clip.create_model_and_transforms(
            name, pretrained=weights, force_quick_gelu=spec.force_quick_gelu
        )
    except (RuntimeError, OSError) as err:
        raise ModelLoadError(
            f"cannot load eval.backbones.{spec.key} (open_clip {name!r}, pretrained={weights!r}) "
            f"{offline_hint()}, or set eval.backbones.{spec.key}.pretrained to a local checkpoint file. "
            f"Cause: {load_cause(err)}"
        ) from err
    backbone = OpenClipBackbone(spec, model, device, batch_size, transform, open_clip.get_tokenizer(name))
    backbone.weights_file = weights
    return backbone


LOADERS = {"timm": load_timm, "open_clip": load_open_clip}


@contextmanager
def root_logging_at(level: int) -> Iterator[None]:
    """open_clip logs every loading step on the root logger (INFO under Hydra): keep it to warnings."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(max(level, previous))
    try:
        yield
    finally:
        root.setLevel(previous)


_LOADED: dict[str, Backbone] = {}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"eval.device={device!r} is not a torch device (auto, cpu, cuda, cuda:1)") from err


def load_backbone(spec: BackboneSpec, device: str = "auto", batch_size: int = 32) -> Backbone:
    """Load (or reuse) a backbone: the jobs of an in-process multirun share one copy per spec."""
    torch_device = resolve_device(device)
    memo = f"{spec.identity}|{spec.image_metric}|{spec.text_metric}|{torch_device}"
    if memo not in _LOADED:
        log.info("loading metric backbone %s (%s %s)", spec.key, spec.kind, spec.model_name)
        with root_logging_at(logging.WARNING):
            _LOADED[memo] = LOADERS[spec.kind](spec, torch_device, batch_size)
    backbone = _LOADED[memo]
    backbone.batch_size = batch_size
    return backbone


def backbone_specs(backbones_cfg: dict[str, Any]) -> list[BackboneSpec]:
    """All specs of `eval.backbones`, checking that no two fill the same metric column."""
    if not backbones_cfg:
        raise ConfigError("eval.backbones is empty: name at least one metric backbone")
    specs = [spec_from_config(key, dict(cfg)) for key, cfg in backbones_cfg.items()]
    columns = [c for spec in specs for c in (spec.image_metric, spec.text_metric) if c]
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise ConfigError(f"eval.backbones fill the metric columns {duplicates} twice; give each its own name")
    return specs
