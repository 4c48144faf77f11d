"""Score a run folder: DINO / CLIP-I / CLIP-T cosines per generated image, plus the real-image oracle.

Per generated image and image backbone (metric m):
    m        cosine(generated, its source image)                          (1:1, the paper's column)
    m_all    mean cosine(generated, every reference image of the subject)  (the source included)
Per text backbone (metric t):
    t        cosine(generated, the exact prompt stored in its manifest row)
    t_paper  cosine(generated, the row's `paper_clip_t_prompt`), only for preset=paper rows: the text
             the paper scored CLIP-T against, to reproduce its number beside the fair one
The oracle row of an item (method `oracle`) scores the real source photo instead: m_all against the
subject's *other* photos (None when the subject has one photo), t against the plan's prompt, m empty.

Only records whose image, prompt, source or references changed are recomputed, and every embedding
goes through the run folder's content cache, so scoring twice does no forward pass.
"""

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monkey.eval.backbones import Backbone, BackboneSpec, backbone_specs, load_backbone
from monkey.eval.embeddings import EmbeddingCache
from monkey.eval.judge_run import judge_run, judge_settings
from monkey.eval.masked import masked_run, masked_settings
from monkey.eval.score_store import IGNORED_BY_OPEN_CLIP, ORACLE, ScoreSet
from omegaconf import DictConfig, OmegaConf

from monkey.atomic import remove_stale_temp_files
from monkey.datasets.base import load_sources
from monkey.errors import ConfigError, RunFolderError
from monkey.hashing import stable_hash, to_plain
from monkey.images import AS_STORED, load_rgb
from monkey.provenance import FileHashes, check_inputs
from monkey.store import STATUS_OK, RunStore

log = logging.getLogger(__name__)

REFERENCE_MODES = ("all", "source")
# Metrics see an image as its file holds it (EXIF applied, RGB), not the dataset's square fit: the
# backbone's own preprocessing resizes and crops, and a tiny generated image is still scored.
CHUNK = 256  # records written per chunk: a killed evaluation resumes from the last chunk
ROW_FIELDS = (
    "method",
    "item_id",
    "dataset",
    "subject",
    "source_id",
    "image_id",
    "class_name",
    "live",
    "prompt_index",
    "location",
    "seed_index",
    "seed",
    "height",  # the size the image was generated at (each model's native one under `fair`)
    "width",
    "prompt",
    "plan_prompt",
    "image",
    "source_path",
    "config_hash",
    "paper_clip_t_prompt",
    "device",
    "source_sha256",
)
PAPER_SUFFIX = "_paper"  # <text metric>_paper: against the row's paper_clip_t_prompt (preset=paper rows only)


def backbone_settings(spec: BackboneSpec) -> dict[str, Any]:
    """A backbone's settings as eval_config.json lists them; open_clip's resize/crop are left out (it runs
    its model's own transform, listed under `transforms`)."""
    fields = {k: v for k, v in spec.__dict__.items() if k != "key"}
    if spec.kind == "open_clip":
        fields = {k: v for k, v in fields.items() if k not in IGNORED_BY_OPEN_CLIP}
    return fields


def eval_settings(eval_cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """What a score set's numbers depend on (not where or how fast they were computed)."""
    plain = to_plain(eval_cfg)
    specs = backbone_specs(plain.get("backbones") or {})
    references = plain.get("references", "all")
    if references not in REFERENCE_MODES:
        raise ConfigError(f"eval.references={references!r} is not allowed; choose one of {list(REFERENCE_MODES)}")
    return {
        "backbones": {s.key: backbone_settings(s) for s in specs},
        "references": references,
    }


@dataclass
class EvaluateSummary:
    rows: int = 0  # generated images in scope
    scored: int = 0  # generated-image records (re)written
    oracle_scored: int = 0
    judged: int = 0  # images the judge (eval.judge) rated anew
    masked: int = 0  # records whose masked metrics (eval.masked) were computed anew
    forwards: dict[str, int] = field(default_factory=dict)  # backbone key -> images + texts embedded


def image_missing(path: str) -> RunFolderError:
    """What evaluation raises for an image (generated, source or reference) that is not a file."""
    return RunFolderError(f"image file not found: {path} (named by a manifest row or the dataset)")


def image_stat(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def reference_paths(
    dataset_cfg: DictConfig | None, mode: str, rows: list[dict[str, Any]]
) -> dict[tuple[str, str], list[str]]:
    """(dataset, subject) -> reference image paths: every image of the subject (mode `all`, from the
    dataset loader asked for all images) or the sources the rows were made from (mode `source`)."""
    refs: dict[tuple[str, str], list[str]] = {}
    if mode == "all" and dataset_cfg is not None:
        cfg = OmegaConf.create(to_plain(dataset_cfg))
        if "images" in cfg:
            cfg.images = "all"
        for source in load_sources(cfg):
            refs.setdefault((source.dataset, source.subject), []).append(str(source.image_path))
    elif mode == "all":
        log.warning("no dataset config for this run folder: references are the sources the images were made from")
    for row in rows:  # a source is always one of its subject's references
        paths = refs.setdefault((row["dataset"], row["subject"]), [])
        if row["source_path"] not in paths:
            paths.append(row["source_path"])
    needed = {(row["dataset"], row["subject"]) for row in rows}
    return {key: sorted(paths) for key, paths in refs.items() if key in needed}


def paper_text(row: dict[str, Any]) -> bool:
    return bool(row.get("paper_clip_t_prompt"))


def dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of two unit fp32 embeddings, correctly rounded: float32 products are exact in float64 and
    fsum adds them exactly, so a score never depends on memory alignment or batch (BLAS paths do)."""
    return math.fsum((a.double() * b.double()).tolist())


def mean_dot(vectors: list[torch.Tensor], b: torch.Tensor) -> float | None:
    return sum(dot(a, b) for a in vectors) / len(vectors) if vectors else None


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Scorer:
    """Scores rows of one run folder with a set of backbones, through the folder's caches."""

    def __init__(self, run_dir: Path, backbones: list[Backbone], hashes: FileHashes):
        self.run_dir = run_dir
        self.backbones = backbones
        self.caches = [EmbeddingCache(run_dir, backbone) for backbone in backbones]
        self.hashes = hashes
        self.by_hash: dict[str, str] = {}  # sha -> a path holding those bytes

    def _keys(self, paths: list[str]) -> list[str]:
        keys = []
        for path in paths:
            key = self.hashes(path)
            self.by_hash.setdefault(key, path)
            keys.append(key)
        return keys

    def _load(self, key: str):
        return load_rgb(self.by_hash[key], AS_STORED)

    def embed(self, cache: EmbeddingCache, paths: list[str], desc: str) -> dict[str, torch.Tensor]:
        """path -> [D]."""
        keys = self._keys(paths)
        by_key = cache.images(keys, self._load, desc)
        return {path: by_key[key] for path, key in zip(paths, keys, strict=True)}

    def score_generated(self, rows: list[dict[str, Any]], refs: dict) -> list[dict[str, float | None]]:
        scores: list[dict[str, float | None]] = [{} for _ in rows]
        images = [str(self.run_dir / row["image"]) for row in rows]
        ref_paths = sorted({p for row in rows for p in refs[(row["dataset"], row["subject"])]})
        for backbone, cache in zip(self.backbones, self.caches, strict=True):
            spec = backbone.spec
            real = self.embed(cache, ref_paths, "references")
            generated = self.embed(cache, images, "generated")
            prompts = {row["prompt"] for row in rows} | {row["paper_clip_t_prompt"] for row in rows if paper_text(row)}
            texts = cache.texts(sorted(prompts)) if backbone.has_text else {}
            for out, row, image in zip(scores, rows, images, strict=True):
                g = generated[image]  # [D]
                out[spec.image_metric] = dot(g, real[row["source_path"]])
                out[f"{spec.image_metric}_all"] = mean_dot([real[p] for p in refs[(row["dataset"], row["subject"])]], g)
                if spec.text_metric:
                    out[spec.text_metric] = dot(g, texts[row["prompt"]])
                    if paper_text(row):  # the paper's CLIP-T convention, beside the fair one
                        out[spec.text_metric + PAPER_SUFFIX] = dot(g, texts[row["paper_clip_t_prompt"]])
        return scores

    def score_oracle(self, rows: list[dict[str, Any]], refs: dict) -> list[dict[str, float | None]]:
        scores: list[dict[str, float | None]] = [{} for _ in rows]
        ref_paths = sorted({p for row in rows for p in refs[(row["dataset"], row["subject"])]})
        for backbone, cache in zip(self.backbones, self.caches, strict=True):
            spec = backbone.spec
            real = self.embed(cache, ref_paths, "references")
            texts = cache.texts(sorted({row["plan_prompt"] for row in rows})) if backbone.has_text else {}
            for out, row in zip(scores, rows, strict=True):
                source = real[row["source_path"]]
                own = self.hashes(row["source_path"])
                others = [p for p in refs[(row["dataset"], row["subject"])] if self.hashes(p) != own]
                out[spec.image_metric] = None  # the source against itself: 1 by definition
                out[f"{spec.image_metric}_all"] = mean_dot([real[p] for p in others], source)
                if spec.text_metric:
                    out[spec.text_metric] = dot(source, texts[row["plan_prompt"]])
        return scores


def evaluate_run(
    run_dir: str | Path,
    eval_cfg: DictConfig | dict[str, Any],
    dataset_cfg: DictConfig | None = None,
    item_ids: set[str] | None = None,
) -> EvaluateSummary:
    """Score the finished images of a run folder (only `item_ids` when given) into scores/<eval.name>/,
    then, with `eval.masked=true`, their masked metrics (monkey.eval.masked), and when `eval.judge` names a
    judge, have it rate them (monkey.eval.judge_run)."""
    summary = score_run(run_dir, eval_cfg, dataset_cfg, item_ids)
    masked = masked_settings(to_plain(eval_cfg))
    if masked is not None and summary.rows:
        summary.masked = masked_run(run_dir, to_plain(eval_cfg), masked, item_ids)
    judge = judge_settings(to_plain(eval_cfg))
    if judge is not None and summary.rows:
        summary.judged = judge_run(run_dir, str(to_plain(eval_cfg)["name"]), judge, item_ids)
    return summary


def score_run(
    run_dir: str | Path,
    eval_cfg: DictConfig | dict[str, Any],
    dataset_cfg: DictConfig | None = None,
    item_ids: set[str] | None = None,
) -> EvaluateSummary:
    """The backbones' scores of the finished images of a run folder (only `item_ids` when given)."""
    run_dir = Path(run_dir)
    eval_cfg = OmegaConf.create(to_plain(eval_cfg))
    settings = eval_settings(eval_cfg)
    remove_stale_temp_files(run_dir)  # a killed writer's leftovers; never a live writer's
    store = RunStore(run_dir)
    rows = [
        row
        for row in store.rows()
        if row.get("status") == STATUS_OK
        and (run_dir / row["image"]).is_file()
        and (item_ids is None or row["item_id"] in item_ids)
    ]
    if any(row["method"] == ORACLE for row in rows):
        raise RunFolderError(f"{run_dir}: the method label '{ORACLE}' is reserved for the real-image reference rows")
    hashes = FileHashes(missing=image_missing)
    check_inputs(run_dir, rows, hashes)  # a source replaced since its image was made
    summary = EvaluateSummary(rows=len(rows))
    if not rows:
        log.info("evaluate: no finished images in %s", run_dir)
        return summary
    score_set = ScoreSet(run_dir, eval_cfg.name)
    eval_hash = score_set.check(settings)
    refs = reference_paths(dataset_cfg, settings["references"], rows)
    refs_keys = {key: stable_hash([hashes(p) for p in paths]) for key, paths in refs.items()}

    def identity(row: dict[str, Any], method: str) -> dict[str, Any]:
        return {
            "eval_hash": eval_hash,
            "source_sha256": hashes(row["source_path"]),
            "refs_key": refs_keys[(row["dataset"], row["subject"])],
            "prompt": row["prompt"] if method != ORACLE else row["plan_prompt"],
            "paper_clip_t_prompt": row.get("paper_clip_t_prompt") if method != ORACLE else None,
        }

    def current(record: dict[str, Any] | None, expected: dict[str, Any]) -> bool:
        return record is not None and all(record.get(k) == v for k, v in expected.items())

    todo = []
    for row in rows:
        path = run_dir / row["image"]
        expected = {**identity(row, row["method"]), "image_stat": image_stat(path)}
        if not current(score_set.read(row["method"], row["item_id"]), expected):
            todo.append(row)
    oracle_rows = list({row["item_id"]: row for row in rows}.values())
    oracle_todo = [
        row for row in oracle_rows if not current(score_set.read(ORACLE, row["item_id"]), identity(row, ORACLE))
    ]
    log.info(
        "evaluate %s: %d images, %d to score, %d oracle rows to score (scores/%s)",
        run_dir,
        len(rows),
        len(todo),
        len(oracle_todo),
        eval_cfg.name,
    )
    if not todo and not oracle_todo:
        return summary

    specs: list[BackboneSpec] = backbone_specs(to_plain(eval_cfg.backbones))
    backbones = [
        load_backbone(spec, eval_cfg.get("device", "auto"), int(eval_cfg.get("batch_size", 32))) for spec in specs
    ]
    score_set.register(settings, {b.spec.key: b.describe_transform() for b in backbones})
    backbone_weights = {b.spec.key: b.weights_identity() for b in backbones}
    before = {b.spec.key: b.counters.images + b.counters.texts for b in backbones}
    scorer = Scorer(run_dir, backbones, hashes)
    columns = {spec.key: [spec.image_metric, spec.text_metric] for spec in specs}

    def write(row: dict[str, Any], method: str, scores: dict[str, float | None], extra: dict[str, Any]) -> None:
        record = {k: row.get(k) for k in ROW_FIELDS}
        record.update(method=method, **identity(row, method), **extra)
        record.update(
            n_refs=len(refs[(row["dataset"], row["subject"])]),
            scores=scores,
            backbones={b.spec.key: b.identity for b in backbones},
            backbone_weights=backbone_weights,
            reference_sha256={path: hashes(path) for path in refs[(row["dataset"], row["subject"])]},
            metric_columns=columns,
            created=time.time(),
        )
        score_set.write(record)

    for chunk in chunks(todo, CHUNK):
        for row, scores in zip(chunk, scorer.score_generated(chunk, refs), strict=True):
            path = run_dir / row["image"]
            write(row, row["method"], scores, {"image_sha256": hashes(path), "image_stat": image_stat(path)})
            summary.scored += 1
    for chunk in chunks(oracle_todo, CHUNK):
        for row, scores in zip(chunk, scorer.score_oracle(chunk, refs), strict=True):
            write(row, ORACLE, scores, {"image": row["source_path"], "image_sha256": hashes(row["source_path"])})
            summary.oracle_scored += 1
    summary.forwards = {b.spec.key: b.counters.images + b.counters.texts - before[b.spec.key] for b in backbones}
    return summary
