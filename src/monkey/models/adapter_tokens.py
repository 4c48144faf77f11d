"""How many image tokens a model profile's IP-Adapter has, read from its weights file alone.

Sweep presets need the count before any job runs (`method.token: ${monkey.image_token_sweep:}` in
conf/experiment/ablate_token.yaml): the plus adapters have 16 tokens, h94's base adapters 4. The file
is found by diffusers' own `_get_model_file` (hub cache or local folder, as `load_ip_adapter` finds
it) and read the way diffusers decides the projection: a `latents` tensor is the Resampler
(`IPAdapterPlusImageProjection`, tokens = latents.shape[1]); `proj.weight` is `ImageProjection`, which
diffusers always builds with 4 tokens. A safetensors file is read by its header only. The sampler
checks the loaded UNet's count again (MonkeySettings.check_model), so a misread cannot go unnoticed.
"""

from pathlib import Path
from typing import Any

from monkey.errors import ConfigError, ModelLoadError
from monkey.models.profiles import IPAdapterSpec, ModelProfile, load_cause, offline_hint, profile_from_config

IMAGE_PROJECTION_TOKENS = 4  # diffusers' ImageProjection for `proj.weight` checkpoints


def adapter_file(spec: IPAdapterSpec) -> Path:
    """The adapter's weights file, through the loader's own lookup (downloaded once into the cache)."""
    from diffusers.utils import _get_model_file

    try:
        return Path(_get_model_file(spec.repo, weights_name=spec.weight_name, subfolder=spec.subfolder))
    except (OSError, ValueError) as err:
        raise ModelLoadError(
            f"cannot find model.ip_adapter.repo={spec.repo!r} ({spec.subfolder}/{spec.weight_name}) "
            f"{offline_hint(spec.repo)}. Cause: {load_cause(err)}"
        ) from err


def projection_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Shapes of the `image_proj.*` tensors (keys without the prefix)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return {
                key.removeprefix("image_proj."): tuple(handle.get_slice(key).get_shape())
                for key in handle.keys()  # noqa: SIM118 (a safetensors handle is not iterable)
                if key.startswith("image_proj.")
            }
    from diffusers.models.model_loading_utils import load_state_dict

    state = load_state_dict(str(path))
    return {key: tuple(value.shape) for key, value in state.get("image_proj", {}).items()}


def count_from_shapes(shapes: dict[str, tuple[int, ...]], where: str) -> int:
    if "latents" in shapes:
        return int(shapes["latents"][1])  # [1, num_queries, hidden]
    if "proj.weight" in shapes:
        return IMAGE_PROJECTION_TOKENS
    raise ConfigError(
        f"{where}: cannot tell its image-token count (no image_proj.latents or image_proj.proj.weight); "
        "give the token sweep explicitly, e.g. method.token=0,1,2,3"
    )


def image_token_count(profile: ModelProfile) -> int:
    if profile.ip_adapter is None:
        raise ConfigError(f"model profile '{profile.name}' has no ip_adapter, so it has no image tokens")
    spec = profile.resolved().ip_adapter
    assert spec is not None
    path = adapter_file(spec)
    return count_from_shapes(projection_shapes(path), str(path))


def image_token_sweep(*, _root_: Any) -> str:
    """`${monkey.image_token_sweep:}`: "0,1,...,T-1" for the model MONKEY runs on, a Hydra sweep value:
    the method's own `model` (method=monkey_sdxl) when it names one, else the run's model profile."""
    from omegaconf import OmegaConf

    from monkey.methods.presets import model_profile_config

    method = _root_.get("method") if _root_ is not None else None
    if method is not None and method.get("model"):
        model = OmegaConf.merge(model_profile_config(method.model), method.get("model_overrides") or {})
    else:
        model = _root_.get("model") if _root_ is not None else None
    if model is None:
        raise ConfigError("${monkey.image_token_sweep:} needs a `model` profile at the config root")
    count = image_token_count(profile_from_config(model))
    return ",".join(str(token) for token in range(count))
