"""An attention figure from a config: which item, which model, which maps, and how they are drawn.

`attention_config(overrides)` composes conf/attention.yaml (the benchmark's config plus the figure's
keys); `make_attention_figure(cfg)` loads the model through the harness (the same profile, preset,
prompt and seed a run of that item uses), records pass 1 and returns an `AttentionFigure` whose
`draw()` gives the matplotlib figure and `save(stem)` writes PNG, PDF and a JSON of what is drawn.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from matplotlib.figure import Figure
from omegaconf import DictConfig
from PIL import Image

from monkey.adapter.capture import num_image_tokens
from monkey.adapter.method import MonkeyMethod
from monkey.adapter.sampler import SubjectBatch
from monkey.atomic import atomic_write_bytes
from monkey.datasets.base import load_sources
from monkey.errors import ConfigError
from monkey.figures.attention import AttentionMaps, check_tokens, record_attention
from monkey.figures.grid import (
    INTERPOLATIONS,
    NORMS,
    ROW_MODES,
    Panel,
    build_panels,
    check_choice,
    draw_grid,
    figure_png,
    save_figure,
)
from monkey.figures.words import prompt_words, select_words
from monkey.hashing import to_plain
from monkey.hydra_errors import compose_config
from monkey.methods.base import build_method
from monkey.methods.presets import MethodSpec, method_spec, runtime_vae_dtype
from monkey.models.profiles import profile_from_config, resolve_runtime
from monkey.names import folder_name
from monkey.plan import WorkItem, build_plan
from monkey.prompts import prompt_set_from_config

CONFIG_NAME = "attention"
STYLE_KEYS = ("norm", "cmap", "alpha", "interpolation")


def attention_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """conf/attention.yaml with Hydra overrides, e.g. ["subject=cat", "model=lcm_dreamshaper"]."""
    return compose_config(CONFIG_NAME, overrides)


def select_item(cfg: DictConfig) -> WorkItem:
    """The work item (subject image x prompt x seed) of `subject`, `image_id`, `prompt_index`, `seed_index`,
    with the seed a run derives for it (`plan.base_seed`)."""
    if int(cfg.seed_index) < 0:
        raise ConfigError(f"seed_index={cfg.seed_index} must be >= 0")
    sources = load_sources(cfg.dataset)
    subjects = list(dict.fromkeys(source.subject for source in sources))
    if cfg.subject not in subjects:
        raise ConfigError(f"subject={cfg.subject!r} is not in dataset {cfg.dataset.get('name')}; allowed: {subjects}")
    own = [source for source in sources if source.subject == cfg.subject]
    image_ids = [source.image_id for source in own]
    image_id = own[0].image_id if cfg.image_id is None else str(cfg.image_id)
    if image_id not in image_ids and isinstance(cfg.image_id, int):  # Hydra reads image_id=00 as the int 0
        image_id = f"{cfg.image_id:02d}"
    if image_id not in image_ids:
        raise ConfigError(f"image_id={cfg.image_id!r} is not an image of {cfg.subject}; allowed: {image_ids}")
    chosen = [source for source in own if source.image_id == image_id]
    prompts = prompt_set_from_config(cfg.prompts)
    items = build_plan(chosen, prompts, seeds=int(cfg.seed_index) + 1, base_seed=cfg.plan.base_seed)
    count = len(prompts.locations_for(chosen[0]))
    match = [i for i in items if i.prompt_index == cfg.prompt_index and i.seed_index == cfg.seed_index]
    if not match:
        raise ConfigError(
            f"prompt_index={cfg.prompt_index} is outside 0..{count - 1} (prompts={cfg.prompts.name} for {cfg.subject})"
        )
    return match[0]


def output_stem(cfg: DictConfig) -> Path:
    """`out`, else <run.root>/<run.name>/figures/attention_<subject>_pNN_sK (beside the run's folders)."""
    if cfg.out:
        return Path(cfg.out)
    name = f"attention_{cfg.subject}_p{int(cfg.prompt_index):02d}_s{int(cfg.seed_index)}"
    return Path(cfg.run.root) / folder_name(cfg.run.name, "run.name") / "figures" / name


def monkey_method(cfg: DictConfig, spec: MethodSpec) -> MonkeyMethod:
    """MONKEY as a run builds it (preset applied, its model profile, the runtime's device and dtype)."""
    target = spec.method.get("_target_", "")
    if not issubclass(get_class(target), MonkeyMethod):
        raise ConfigError(
            f"method={spec.name} ({target}): an attention figure draws MONKEY's pass 1, so method must be monkey "
            "(a config whose _target_ is monkey.adapter.method.MonkeyMethod)"
        )
    runtime = resolve_runtime(
        profile_from_config(spec.model),
        cfg.runtime.device,
        cfg.runtime.dtype,
        runtime_vae_dtype(spec, cfg.runtime.get("vae_dtype", "auto")),
    )
    return build_method(spec.method, runtime, spec.prompt_form)


@dataclass
class AttentionFigure:
    maps: AttentionMaps
    subject: Image.Image
    panels: list[Panel]
    style: dict[str, Any]
    about: dict[str, Any] = field(default_factory=dict)  # item, model and settings, for the JSON

    def draw(self) -> Figure:
        return draw_grid(self.maps, self.subject, self.panels, **self.style)

    def _repr_png_(self) -> bytes:
        """Jupyter shows the grid when a cell ends with the figure, whatever matplotlib's backend."""
        return figure_png(self.draw())

    def save(self, stem: Path) -> list[Path]:
        """<stem>.png, <stem>.pdf and <stem>.json (what each row and column is)."""
        paths = save_figure(self.draw(), Path(stem))
        sidecar = Path(stem).parent / f"{Path(stem).name}.json"
        atomic_write_bytes(sidecar, json.dumps(self.describe(), indent=2).encode())
        return [*paths, sidecar]

    def describe(self) -> dict[str, Any]:
        words = {p.word.label: list(p.word.positions) for p in self.panels if p.word is not None}
        rows = list(dict.fromkeys((p.layer, p.step) for p in self.panels if p.layer is not None))
        return {
            **self.about,
            "prompt": self.maps.prompt,
            "seed": self.maps.seed,
            "rows": [{"layer": layer, "step": step} for layer, step in rows],
            "words": words,
            "tokens": sorted({p.token for p in self.panels if p.token is not None}),
            "style": self.style,
        }


def make_attention_figure(cfg: DictConfig, method: MonkeyMethod | None = None) -> AttentionFigure:
    """Record and lay out the figure `cfg` (conf/attention.yaml) asks for; `method` reuses a built one.
    Every choice is checked before the pipeline runs."""
    item = select_item(cfg)
    spec = method_spec(cfg)
    for key, allowed in (("rows", ROW_MODES), ("norm", NORMS), ("interpolation", INTERPOLATIONS)):
        check_choice(key, cfg[key], allowed)
    method = method or monkey_method(cfg, spec)
    pipe = method.pipe
    prompt = str(cfg.prompt) if cfg.prompt is not None else method.prompt_for(item)
    words = select_words(
        prompt_words(pipe.tokenizer, prompt), None if cfg.words is None else [str(w) for w in cfg.words]
    )
    tokens = check_tokens(None if cfg.tokens is None else list(cfg.tokens), num_image_tokens(pipe.unet))
    height, width = spec.height, spec.width
    batch = SubjectBatch([prompt], [item.seed], method.embedder.batch([item.source]), height, width)
    maps = record_attention(method.sampler, batch, list(cfg.layers), list(cfg.steps))
    panels = build_panels(maps, words, tokens, cfg.rows)
    style = {key: to_plain(cfg[key]) for key in STYLE_KEYS}
    about = {
        "item_id": item.item_id,
        "subject": item.source.subject,
        "source_path": str(item.source.image_path),
        "model": cfg.model.name,
        "size": [height, width],
        "preset": spec.preset,
        "pass1": {k: getattr(method.settings, k) for k in ("initial_steps", "initial_scale", "guidance_scale")},
    }
    return AttentionFigure(maps, item.source.load_image(), panels, style, about)
