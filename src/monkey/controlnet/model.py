"""The ControlNet of a `method.control` block, loaded through `ControlNetModel.from_pretrained` (the
real path for real and tiny models alike), once per process."""

from pathlib import Path

from diffusers import ControlNetModel

from monkey.controlnet.settings import TINY, ControlSettings
from monkey.controlnet.tiny import materialize_tiny_controlnet
from monkey.errors import ModelLoadError
from monkey.models.profiles import Runtime, load_cause, offline_hint
from monkey.provenance import Checkpoint

_LOADED: dict[tuple, ControlNetModel] = {}


def controlnet_source(settings: ControlSettings, runtime: Runtime) -> str:
    """A hub id or folder: `tiny` becomes the twin written for the run's tiny model profile."""
    if settings.model == TINY:
        return str(materialize_tiny_controlnet(runtime.model.tiny or "", runtime.model.tiny_seed))
    return settings.model


def controlnet_checkpoint(settings: ControlSettings, runtime: Runtime) -> Checkpoint:
    """The ControlNet as a provenance checkpoint (its files' digest, or its hub snapshot)."""
    source = controlnet_source(settings, runtime)
    if settings.subfolder and Path(source).expanduser().exists():
        source = str(Path(source).expanduser() / settings.subfolder)
    probe = f"{settings.subfolder}/config.json" if settings.subfolder else "config.json"
    return Checkpoint("controlnet", source, probe, settings.revision)


def load_controlnet(settings: ControlSettings, runtime: Runtime) -> ControlNetModel:
    source = controlnet_source(settings, runtime)
    key = (source, settings.revision, settings.subfolder, str(runtime.device), str(runtime.dtype))
    if key not in _LOADED:
        kwargs = {"revision": settings.revision} if settings.revision else {}
        if settings.subfolder:
            kwargs["subfolder"] = settings.subfolder
        try:
            model = ControlNetModel.from_pretrained(source, torch_dtype=runtime.dtype, **kwargs)
        except (OSError, ValueError) as err:
            raise ModelLoadError(
                f"cannot load method.control.model={settings.model!r} with ControlNetModel.from_pretrained "
                f"{offline_hint(source)}. Cause: {load_cause(err)}"
            ) from err
        _LOADED.clear()  # one ControlNet at a time, as one pipeline (monkey.models.profiles)
        _LOADED[key] = model.to(runtime.device).eval().requires_grad_(False)
    return _LOADED[key]
