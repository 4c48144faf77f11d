"""Presets: which prompt, size, seed and base model every method gets, decided in one place.

`preset=fair` (the default) gives every method the plan's prompt string and the item's seed, and
runs each base model at its native size (its profile's `native_size`: SD1.5 at 512, SD3.5-large and
FLUX at 1024), so no model is judged below the resolution it was trained for; `generation.height`
and `generation.width` set to numbers force one common size on every method instead. `preset=paper` applies each
method's `paper:` block, the choices the paper's own runs made (prompt form, resolution, seeding
and known bugs, each behind a named flag), so the paper's table can be regenerated and the
difference to `fair` shown.

A method config may also name its own base model (`model:` a conf/model profile name, usually
`${monkey.if_tiny:<tiny profile>,<real profile>}`), so MasaCtrl on Stable Diffusion v1.4 runs in
the same multirun as IP-Adapter on LCM Dreamshaper. The resolved spec is what the run folder's
config hash covers: the knobs after the preset, the model actually used, the size and the preset.
"""

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from monkey.datasets.base import Source
from monkey.errors import ConfigError
from monkey.hashing import to_plain
from monkey.models.profiles import ModelProfile
from monkey.plan import WorkItem
from monkey.prompts import PromptSet

log = logging.getLogger(__name__)

PRESETS = ("fair", "paper")

# How a method's prompt is formed from a work item: a prompt template applied to the item's prompt
# entry (so DreamBooth's "red {subject}" entries keep their modifier), after the method's caption
# for the caption forms. "plan" is the plan's own prompt (prompts.template).
PROMPT_FORMS: dict[str, str | None] = {
    "plan": None,
    "location": "{location}",
    "subject_location": "{subject_word} {location}",
    "caption_location": "{location}",
}
CAPTION_FORMS = ("caption_location",)
# Keys of a method config that choose how it is set up rather than being passed to its class.
SPEC_KEYS = ("model", "model_overrides", "paper", "vae_dtype")
# `method.vae_dtype` (a method key, so a `paper:` block can set it): `runtime` leaves the VAE's precision to
# `runtime.vae_dtype`; `model` runs the VAE in the UNet's dtype, as the MONKEY reference code ran its
# fp16 pipeline (fp16 on CUDA; on the CPU the model dtype is usually fp32, so nothing changes).
METHOD_VAE_DTYPES = ("runtime", "model")
PAPER_KEYS = {"prompt", "size", "seeded", "seed", "clip_t_prompt", "set", "note"}


def format_prompt(form: str, item: WorkItem, caption: Callable[[Source], str]) -> str:
    """The prompt string of `form` for `item`; `caption` is only called by the caption forms."""
    if form not in PROMPT_FORMS:
        raise ConfigError(f"prompt form {form!r} is not allowed; choose one of {list(PROMPT_FORMS)}")
    template = PROMPT_FORMS[form]
    if template is None:
        return item.prompt
    text = PromptSet(name=form, locations=(), template=template).format(item.source, item.location)
    if form in CAPTION_FORMS:
        text = f"{caption(item.source)} {text}"
    return " ".join(text.split())


def model_profile_config(name: str) -> dict[str, Any]:
    """A conf/model profile by name (or a path to a profile YAML), its `defaults` merged in, as Hydra
    would compose it for `model=<name>`."""
    path = Path(name).expanduser()
    if not (name.endswith(".yaml") and path.is_file()):
        path = Path(str(resources.files("monkey.conf") / "model" / f"{name}.yaml"))
    if not path.is_file():
        known = sorted(p.stem for p in Path(str(resources.files("monkey.conf") / "model")).glob("*.yaml"))
        raise ConfigError(f"method.model={name!r} is neither a conf/model profile ({known}) nor a profile YAML file")
    node = OmegaConf.load(path)
    defaults = list(node.pop("defaults", []))
    if "_self_" not in defaults:
        defaults.append("_self_")  # as Hydra: the file's own keys last unless placed otherwise
    merged = OmegaConf.create()
    for entry in defaults:
        if entry == "_self_":
            merged = OmegaConf.merge(merged, node)
        elif isinstance(entry, str):
            merged = OmegaConf.merge(merged, model_profile_config(str(path.parent / f"{entry}.yaml")))
        else:
            raise ConfigError(f"{path}: only plain profile names are supported in `defaults`, got {entry!r}")
    return to_plain(merged)


@dataclass(frozen=True)
class MethodSpec:
    """A method as a job runs it: its class knobs, its base model, and what every request gets."""

    name: str  # the label in folders, manifests and tables
    preset: str
    method: dict[str, Any]  # _target_, name and knobs passed to the class (preset applied)
    model: dict[str, Any]  # the model profile config this method runs on
    model_source: str  # "run" (the job's `model` group) or the profile the method names
    prompt_form: str
    height: int
    width: int
    seeded: bool  # False: a fresh random seed per image, recorded in the row (a paper choice)
    clip_t_prompt_form: str | None = None  # paper preset: the text the paper scored CLIP-T against
    fixed_seed: int | None = None  # paper preset `seed:`: one seed for every item (the forks' 123)
    vae_dtype: str = "runtime"  # method.vae_dtype: runtime (runtime.vae_dtype decides) or model (the UNet's dtype)

    def describe(self) -> dict[str, Any]:
        """The preset's part of the config hash."""
        return {
            "name": self.preset,
            "prompt_form": self.prompt_form,
            "seeded": self.seeded,
            "model_source": self.model_source,
            "clip_t_prompt_form": self.clip_t_prompt_form,
            **({"fixed_seed": self.fixed_seed} if self.fixed_seed is not None else {}),
        }

    def seed_for(self, item: WorkItem) -> int:
        if self.fixed_seed is not None:
            return self.fixed_seed
        return item.seed if self.seeded else secrets.randbelow(2**31)


def method_spec(cfg: DictConfig) -> MethodSpec:
    """Resolve `cfg.method` under `cfg.preset`: the knobs, the base model and the request settings."""
    preset = cfg.get("preset", "fair")
    if preset not in PRESETS:
        raise ConfigError(f"preset={preset!r} is not allowed; choose one of {list(PRESETS)}")
    method = to_plain(cfg.method)
    name = method.get("name")
    paper = method.pop("paper", None)
    own_model = method.pop("model", None)
    model_overrides = method.pop("model_overrides", None) or {}
    if own_model is None:
        model, model_source = to_plain(cfg.model), "run"
    else:
        model = to_plain(OmegaConf.merge(model_profile_config(own_model), model_overrides))
        model_source = own_model
    settings = {"prompt": "plan", "size": None, "seeded": True, "seed": None, "clip_t_prompt": None}
    if preset == "paper":
        if paper is None:
            log.warning("method %s has no `paper:` block: preset=paper runs it with the fair settings", name)
        else:
            settings |= paper_settings(name, paper, method)
            method |= paper.get("set") or {}
    vae_dtype = method.pop("vae_dtype", "runtime")
    if vae_dtype not in METHOD_VAE_DTYPES:
        raise ConfigError(f"method.vae_dtype={vae_dtype!r} is not allowed; choose one of {list(METHOD_VAE_DTYPES)}")
    size = settings["size"]
    height, width = (size, size) if size else generation_size(cfg.generation, model)
    return MethodSpec(
        name=name,
        preset=preset,
        method=method,
        model=model,
        model_source=model_source,
        prompt_form=settings["prompt"],
        height=int(height),
        width=int(width),
        seeded=bool(settings["seeded"]),
        clip_t_prompt_form=settings["clip_t_prompt"],
        fixed_seed=None if settings["seed"] is None else int(settings["seed"]),
        vae_dtype=vae_dtype,
    )


def runtime_vae_dtype(spec: MethodSpec, runtime_vae: str) -> str:
    """The `runtime.vae_dtype` a job of `spec` resolves: the runtime's own, or `model` when the method asks
    for the UNet's dtype. An explicit runtime value that the method would override is refused, not dropped."""
    if spec.vae_dtype == "runtime":
        return runtime_vae
    if runtime_vae not in ("auto", "model"):
        raise ConfigError(
            f"runtime.vae_dtype={runtime_vae} conflicts with method.vae_dtype=model (preset={spec.preset}), which "
            "runs the VAE in the UNet's dtype; drop the runtime key, or set method.vae_dtype=runtime to use it"
        )
    return "model"


def resolve_model_dtypes(method: dict[str, Any], model_dtype: str) -> dict[str, Any]:
    """A method's knobs with every `*_dtype: model` replaced by the model's dtype name (e.g. MONKEY's
    `record_dtype`), so the config hash names the precision that ran, not the word `model`."""
    return {key: model_dtype if key.endswith("_dtype") and value == "model" else value for key, value in method.items()}


def generation_size(generation: Any, model: dict[str, Any]) -> tuple[int, int]:
    """(height, width) under `fair`: both null, the model's native size; both numbers, that common size."""
    height, width = generation.get("height"), generation.get("width")
    if height is None and width is None:
        side = model.get("native_size", ModelProfile.native_size)  # a profile without the key loads as 512
        return int(side), int(side)
    if height is None or width is None:
        raise ConfigError(
            f"generation.height={height} and generation.width={width}: set both (one common size for every "
            "method) or neither (each method's model at its native size)"
        )
    return int(height), int(width)


def paper_settings(name: str, paper: dict[str, Any], method: dict[str, Any]) -> dict[str, Any]:
    """Check a `paper:` block: known keys, known prompt forms, flags that are real knobs."""
    unknown = set(paper) - PAPER_KEYS
    if unknown:
        raise ConfigError(
            f"method {name}: paper block has unknown keys {sorted(unknown)}; allowed: {sorted(PAPER_KEYS)}"
        )
    for key in ("prompt", "clip_t_prompt"):
        form = paper.get(key)
        if form is not None and form not in PROMPT_FORMS:
            raise ConfigError(
                f"method {name}: paper.{key}={form!r} is not a prompt form; choose one of {list(PROMPT_FORMS)}"
            )
    not_knobs = sorted(set(paper.get("set") or {}) - set(method))
    if not_knobs:
        raise ConfigError(f"method {name}: paper.set names {not_knobs}, which are not knobs of the method")
    seed = paper.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(
            f"method {name}: paper.seed={seed!r} must be a non-negative integer (one seed for every item)"
        )
    if seed is not None and paper.get("seeded") is False:
        raise ConfigError(f"method {name}: paper.seed={seed} and paper.seeded=false contradict; keep one")
    return {key: paper[key] for key in ("prompt", "size", "seeded", "seed", "clip_t_prompt") if key in paper}
