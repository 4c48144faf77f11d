"""`monkey-attention rank`: which (layer, image token, step) map of MONKEY's pass 1 best finds the subject.

The config (conf/rank.yaml, extending the benchmark's) is read once into a `RankSettings`; for every
chosen subject image, pass 1 runs on the noised source image (monkey.rank.probe) recording every asked
attn2 layer and step with all image tokens, each map is scored by IoU with the image's subject mask
(monkey.rank.score), and the ranking is written (monkey.rank.report).
"""

import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from monkey.adapter.capture import attn2_layers, num_image_tokens
from monkey.adapter.sampler import SubjectBatch, loop_steps
from monkey.adapter.settings import THRESHOLD_RULES
from monkey.datasets.base import Source, load_sources
from monkey.errors import ConfigError
from monkey.figures.attention_figure import monkey_method
from monkey.hashing import stable_hash, to_plain
from monkey.hydra_errors import compose_config
from monkey.methods.presets import method_spec
from monkey.names import folder_name
from monkey.rank.probe import item_noise, noised_inputs, noised_source, source_latents
from monkey.rank.report import write_ranking
from monkey.rank.score import mask_on_grid, rank, score_record
from monkey.rank.subject_masks import FolderMasks, SegmentedMasks

log = logging.getLogger("monkey")
CONFIG_NAME = "rank"
ALL = "all"


@dataclass(frozen=True)
class RankSettings:
    subjects: tuple[str, ...] | int | None  # names, the first N, or all
    images_per_subject: int | None  # the first N images of each subject, or all
    prompt: str  # "{word}" becomes the subject word
    layers: tuple[str, ...] | None  # None: every attn2 layer
    steps: tuple[int, ...] | None  # None: every step of pass 1
    threshold: float
    threshold_rule: str
    masks_dir: Path | None
    segmenter: dict[str, Any] | None
    top: int
    out: Path


def rank_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    return compose_config(CONFIG_NAME, overrides)


def rank_settings(cfg: DictConfig) -> RankSettings:
    """The ranking's keys, checked, with one error line naming the key for anything wrong."""
    masks = to_plain(cfg.masks) or {}
    unknown = set(masks) - {"dir", "segmenter"}
    if unknown:
        raise ConfigError(f"masks has unknown keys {sorted(unknown)}; allowed: ['dir', 'segmenter']")
    if (masks.get("dir") is None) == (masks.get("segmenter") is None):
        raise ConfigError(
            "give exactly one mask source: masks.dir=<folder of <subject>/<image_id>.png> or "
            "masks.segmenter={_target_: ...} (a segmentation model, see monkey.rank.segmenters)"
        )
    segmenter = masks.get("segmenter")
    if segmenter is not None and (not isinstance(segmenter, dict) or "_target_" not in segmenter):
        raise ConfigError(f"masks.segmenter={segmenter!r} must be a config with a _target_ (a Segmenter factory)")
    subjects = to_plain(cfg.subjects)
    if isinstance(subjects, list):
        subjects = tuple(str(s) for s in subjects)
    elif subjects is not None and (isinstance(subjects, bool) or not isinstance(subjects, int) or subjects < 1):
        raise ConfigError(f"subjects={subjects!r} must be null (all), a count >= 1 or a list of subject names")
    images = cfg.images_per_subject
    if images is not None and (isinstance(images, bool) or not isinstance(images, int) or images < 1):
        raise ConfigError(f"images_per_subject={images!r} must be null (all) or a count >= 1")
    layers = to_plain(cfg.layers)
    if layers != ALL and (not isinstance(layers, list) or not layers):
        raise ConfigError(f"layers={layers!r} must be 'all' or a non-empty list of attn2 layer names")
    steps = to_plain(cfg.steps)
    if steps is not None and (not isinstance(steps, list) or not all(isinstance(s, int) and s >= 0 for s in steps)):
        raise ConfigError(f"steps={steps!r} must be null (every pass-1 step) or a list of 0-based step indices")
    if cfg.threshold_rule not in THRESHOLD_RULES:
        raise ConfigError(
            f"threshold_rule={cfg.threshold_rule!r} is not allowed; choose one of {list(THRESHOLD_RULES)}"
        )
    if not 0.0 <= float(cfg.threshold) <= 1.0:
        raise ConfigError(f"threshold={cfg.threshold!r} must lie in [0, 1] (maps are min-max normalised)")
    if "{word}" not in str(cfg.prompt):
        raise ConfigError(f"prompt={cfg.prompt!r} must contain {{word}} (replaced by the subject word)")
    out = Path(cfg.out) if cfg.out else Path(cfg.run.root) / folder_name(cfg.run.name, "run.name") / "rank"
    return RankSettings(
        subjects=subjects,
        images_per_subject=images,
        prompt=str(cfg.prompt),
        layers=None if layers == ALL else tuple(str(layer) for layer in layers),
        steps=None if steps is None else tuple(sorted(set(steps))),
        threshold=float(cfg.threshold),
        threshold_rule=str(cfg.threshold_rule),
        masks_dir=Path(masks["dir"]) if masks.get("dir") is not None else None,
        segmenter=segmenter,
        top=int(cfg.top),
        out=out,
    )


def select_sources(sources: list[Source], settings: RankSettings) -> list[Source]:
    names = list(dict.fromkeys(source.subject for source in sources))
    if isinstance(settings.subjects, tuple):
        missing = [name for name in settings.subjects if name not in names]
        if missing:
            raise ConfigError(f"subjects has names {missing} that are not in the dataset; allowed: {names}")
        names = [name for name in names if name in settings.subjects]
    elif isinstance(settings.subjects, int):
        names = names[: settings.subjects]
    chosen = []
    for name in names:
        own = [source for source in sources if source.subject == name]
        chosen += own[: settings.images_per_subject] if settings.images_per_subject else own
    return chosen


def item_seed(base_seed: int, source: Source) -> int:
    """The noise seed of one subject image: from the plan's base seed and the image, never the model."""
    return int(stable_hash([int(base_seed), source.source_id], 8), 16)


def adapter_label(cfg: DictConfig) -> str:
    spec = cfg.model.get("ip_adapter") or {}
    repo = spec.get("repo") or f"tiny {cfg.model.get('tiny')}"
    return f"{repo}: {spec.get('subfolder')}/{spec.get('weight_name')}"


def run_ranking(cfg: DictConfig, command: str | None = None) -> tuple[pd.DataFrame, list[Path]]:
    settings = rank_settings(cfg)
    sources = select_sources(load_sources(cfg.dataset), settings)
    spec = method_spec(cfg)
    method = monkey_method(cfg, spec)
    pipe, sampler, knobs = method.pipe, method.sampler, method.settings
    model_layers = attn2_layers(pipe.unet)
    layers = settings.layers or tuple(model_layers)
    unknown = [layer for layer in layers if layer not in model_layers]
    if unknown:
        raise ConfigError(f"layers has unknown layer(s) {unknown}; the model's attn2 layers are: {model_layers}")
    loop = loop_steps(pipe, knobs.initial_steps)
    steps = settings.steps or tuple(range(loop))
    if steps[-1] >= loop:
        raise ConfigError(
            f"steps={list(steps)} has steps outside 0..{loop - 1}: pass 1 runs {loop} steps for "
            f"method.initial_steps={knobs.initial_steps}"
        )
    if settings.masks_dir is not None:
        masks = FolderMasks(settings.masks_dir)
        masks_about = f"files under {settings.masks_dir}"
    else:
        masks = SegmentedMasks(instantiate(settings.segmenter), settings.segmenter, settings.out / "masks")
        masks_about = f"segmented by {settings.segmenter}"
    height, width = spec.height, spec.width
    latent_hw = sampler.latent_hw(SubjectBatch([""], [0], method.embedder.batch(sources[:1]), height, width))
    frames = []
    for index, source in enumerate(sources):
        image = source.load_image()
        subject = mask_on_grid(masks(source, image), latent_hw)  # [h, w] bool on the latent grid
        seed = item_seed(cfg.plan.base_seed, source)
        prompt = settings.prompt.replace("{word}", source.subject_word)
        embeds = method.embedder.batch([source])
        batch = SubjectBatch([prompt], [seed], embeds, height, width, method.embedder.negative_embeds())
        z0 = source_latents(pipe, image, height, width)
        inputs = noised_inputs(pipe, z0, item_noise(tuple(z0.shape), seed).to(z0.device), knobs.initial_steps)
        with noised_source(pipe, inputs):
            pass1 = sampler.record(batch, layers=layers, steps=steps)
        frames.append(
            score_record(pass1.records[0], subject, settings.threshold, settings.threshold_rule, source.source_id)
        )
        log.info("ranked %s (%d/%d)", source.source_id, index + 1, len(sources))
    scores = pd.concat(frames, ignore_index=True)
    table = rank(scores)
    about = {
        "model": cfg.model.name,
        "ip_adapter": adapter_label(cfg),
        "image_tokens": num_image_tokens(pipe.unet),
        "subjects": list(dict.fromkeys(source.subject for source in sources)),
        "items": len(sources),
        "size": [height, width],
        "prompt": settings.prompt,
        "initial_steps": knobs.initial_steps,
        "initial_scale": knobs.initial_scale,
        "guidance_scale": knobs.guidance_scale,
        "attention_scale": knobs.attention_scale,
        "threshold": settings.threshold,
        "threshold_rule": settings.threshold_rule,
        "steps": list(steps),
        "layers": len(layers),
        "masks": masks_about,
        "base_seed": int(cfg.plan.base_seed),
        "command": command or "monkey-attention rank " + " ".join(shlex.quote(a) for a in sys.argv[2:]),
    }
    return table, write_ranking(settings.out, table, scores, about, settings.top)
