"""Masked metrics (`eval.masked=true`): identity on the subject only, the background against its text.

MONKEY's claim is spatial (the subject keeps its identity, the background follows the text), while DINO,
CLIP-I and CLIP-T compare whole images. For every scored image and its source photo a segmenter
(`eval.segmenter`, a `monkey.rank.subject_masks.Segmenter` built by Hydra `_target_`, prompted with the
row's subject word) gives a subject mask; then per image (definitions in docs/evaluation.md#masked-metrics):

    <m>_subject        per image backbone: monkey.eval.patch_tokens.subject_match of the generated image's
                       subject patches against the source photo's (1:1, as <m>)
    <t>_background     per text backbone: the image with its subject filled with the mean colour of its
                       background pixels, against the row's location text without the subject
    subject_area       the fraction of the image's pixels the mask holds
    mask_iou           rows with a MONKEY `mask` artifact: IoU of that mask (> 0.5, resized nearest to the
                       image) with the segmenter's mask of the final image; other rows: empty

A score that cannot be computed is left empty and the row's `masked_flag` says why (masked_columns).
The oracle row (the source photo itself) gets subject_area and <t>_background; its identity is 1 by
definition and left empty, as <m>.

Results go to scores/<eval.name>/masked/<method>/<item_id>.json (atomic), keyed by everything that decides
them; ScoreSet.frame() adds them to the image's row while the image's bytes are the ones measured. Masks
are cached by content under <run folder>/cache/masks/<segmenter id>/, the background embeddings in the
backbone's embedding cache, so a rerun loads no model and computes nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monkey.eval.backbones import Backbone, backbone_specs, load_backbone, resolve_device
from monkey.eval.embeddings import EmbeddingCache
from monkey.eval.masked_columns import (
    BACKGROUND_SUFFIX,
    FLAG_COLUMN,
    MASK_IOU,
    NO_BACKGROUND,
    NO_BACKGROUND_TEXT,
    NO_MONKEY_MASK,
    NO_PATCH_GENERATED,
    NO_PATCH_REFERENCE,
    NO_SUBJECT_GENERATED,
    NO_SUBJECT_REFERENCE,
    SUBJECT_AREA,
    SUBJECT_SUFFIX,
    TEXT_COLUMN,
)
from monkey.eval.patch_tokens import PATCH_FRACTION, patch_tokens, subject_match, subject_patches
from monkey.eval.score_store import ORACLE, ScoreSet
from PIL import Image

from monkey.cache import ContentCache
from monkey.datasets.base import Source
from monkey.errors import ConfigError, DataError
from monkey.hashing import bytes_sha256, file_sha256, stable_hash
from monkey.images import AS_STORED, load_rgb
from monkey.prompts import SUBJECT_MARK
from monkey.rank.subject_masks import read_grey
from monkey.store import STATUS_OK, RunStore

log = logging.getLogger(__name__)

MASK_CACHE = "cache/masks"
FILL = "background_mean"  # subject pixels take the mean RGB of the image's background pixels
MONKEY_MASK_THRESHOLD = 0.5  # MONKEY's mask PNG (0-255) is subject where > 0.5 (its soft masks too)
CHUNK = 64  # records per batch of forwards
VERSION = 1  # bump when a definition changes: every masked record is then recomputed


@dataclass(frozen=True)
class MaskedSettings:
    """`eval.masked` and `eval.segmenter`, read once."""

    segmenter: dict[str, Any]  # the Hydra `_target_` block, without `device`
    device: str  # where the segmenter runs (eval.device, `auto` resolved)

    @property
    def identity(self) -> dict[str, Any]:
        """What the masks and the masked scores depend on (not where they ran)."""
        rules = {"patch_fraction": PATCH_FRACTION, "fill": FILL, "monkey_mask_threshold": MONKEY_MASK_THRESHOLD}
        return {"segmenter": self.segmenter, "rules": rules, "version": VERSION}

    def build_segmenter(self):
        """Built once per process and settings (as load_backbone keeps its models): a report over many run
        folders loads GroundingDINO and SAM once, not once per folder."""
        from hydra.utils import instantiate

        memo = stable_hash({"segmenter": self.segmenter, "device": self.device})
        if memo not in _SEGMENTERS:
            _SEGMENTERS.clear()  # one segmenter at a time
            _SEGMENTERS[memo] = instantiate({**self.segmenter, "device": self.device})
        return _SEGMENTERS[memo]


_SEGMENTERS: dict[str, Any] = {}


def masked_settings(eval_cfg: dict[str, Any]) -> MaskedSettings | None:
    """The masked metrics' settings, or None when `eval.masked` is off (absent or false)."""
    enabled = eval_cfg.get("masked", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"eval.masked={enabled!r} is not allowed; choose true or false")
    if not enabled:
        return None
    segmenter = eval_cfg.get("segmenter")
    if not isinstance(segmenter, dict) or not segmenter.get("_target_"):
        raise ConfigError(
            f"eval.segmenter={segmenter!r}: eval.masked=true needs a segmenter block with a _target_, e.g. "
            "monkey.rank.segmenters.GroundingSamSegmenter or monkey.rank.segmenters.ClipSegSegmenter"
        )
    device = str(segmenter.get("device") or eval_cfg.get("device") or "auto")
    segmenter = {k: v for k, v in segmenter.items() if k != "device"}
    return MaskedSettings(segmenter=segmenter, device=str(resolve_device(device)))


def background_text(location: str) -> str:
    """The prompt entry without its subject: DreamBooth's `red {subject}` entries put subject words before
    the mark, so only the words after it describe the background (often none)."""
    before, mark, after = location.partition(SUBJECT_MARK)
    return " ".join((after if mark else before).split())


def fill_subject(image: Image.Image, mask: np.ndarray) -> Image.Image | None:
    """The image with its subject pixels ([H, W] bool) set to the mean RGB of its background pixels, or
    None when nothing is background."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)  # [H, W, 3]
    if mask.all():
        return None
    mean = pixels[~mask].mean(axis=0)  # [3]
    out = pixels.copy()
    out[mask] = mean
    return Image.fromarray(np.round(out).astype(np.uint8))


def read_monkey_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """MONKEY's saved image-size mask (greyscale PNG) as [H, W] bool at `size` (W, H), resized nearest."""
    mask = read_grey(path, "MONKEY's mask")
    if mask.size != size:
        mask = mask.resize(size, Image.NEAREST)
    return np.asarray(mask, dtype=np.float64) / 255.0 > MONKEY_MASK_THRESHOLD


def iou(a: np.ndarray, b: np.ndarray) -> float | None:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else None


class SubjectMasks:
    """Subject masks by (image content, subject word), made by the segmenter once (loaded on first need)."""

    def __init__(self, run_dir: Path, settings: MaskedSettings):
        self.settings = settings
        self.disk = ContentCache(run_dir / MASK_CACHE, f"segmenter-{stable_hash(settings.identity, 12)}")
        self.segmenter = None
        self.made = 0

    def key(self, sha: str, word: str) -> str:
        return stable_hash([sha, word])

    def __call__(self, path: Path, sha: str, source: Source) -> np.ndarray:
        """[H, W] bool at the image's stored size."""
        key = self.key(sha, source.subject_word)
        stored = self.disk.get_tensors(key)
        if stored is not None:
            return stored["mask"].numpy().astype(bool)
        if self.segmenter is None:
            log.info("loading segmenter %s", self.settings.segmenter.get("_target_"))
            self.segmenter = self.settings.build_segmenter()
        image = load_rgb(path, AS_STORED)
        mask = np.asarray(self.segmenter(image, source), dtype=bool)
        if mask.shape != (image.height, image.width):
            raise DataError(
                f"eval.segmenter returned a {mask.shape} mask for {path}, whose image is {image.height}x{image.width}"
            )
        self.made += 1
        self.disk.put_tensors(key, {"mask": torch.from_numpy(mask.astype(np.uint8))})
        return mask


def row_source(record: dict[str, Any], row: dict[str, Any]) -> Source:
    """The record's subject as a Source (what a segmenter is prompted with)."""
    return Source(
        dataset=record["dataset"],
        subject=record["subject"],
        image_id=str(record.get("image_id") or ""),
        image_path=Path(record["source_path"]),
        class_name=str(record.get("class_name") or ""),
        subject_word=str(row.get("subject_word") or record.get("class_name") or record["subject"]),
        live=bool(record.get("live")),
    )


def monkey_mask_path(run_dir: Path, row: dict[str, Any]) -> Path | None:
    relpath = (row.get("artifacts") or {}).get("mask")
    return run_dir / relpath if relpath else None


class MaskedScorer:
    """The masked scores of score records, through the masks' and embeddings' caches."""

    def __init__(self, run_dir: Path, backbones: list[Backbone], masks: SubjectMasks):
        self.run_dir = run_dir
        self.backbones = backbones
        self.masks = masks
        self.caches = {b.spec.key: EmbeddingCache(run_dir, b) for b in backbones if b.has_text}
        self.tokens: dict[tuple[str, str], torch.Tensor] = {}  # (backbone, sha) -> [h, w, D]: references, kept

    def image_path(self, record: dict[str, Any]) -> Path:
        return Path(record["source_path"]) if record["method"] == ORACLE else self.run_dir / record["image"]

    def score(self, records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per record: {"scores": {...}, "flags": [...], "text": str}."""
        sources = [row_source(record, row) for record, row in zip(records, rows, strict=True)]
        pairs = list(zip(records, sources, strict=True))
        generated = [self.masks(self.image_path(r), r["image_sha256"], s) for r, s in pairs]  # [H, W] bool each
        reference = [self.masks(Path(r["source_path"]), r["source_sha256"], s) for r, s in pairs]
        out = []
        for record, mask, ref in zip(records, generated, reference, strict=True):
            flags = [] if mask.any() else [NO_SUBJECT_GENERATED]
            if record["method"] != ORACLE and not ref.any():
                flags.append(NO_SUBJECT_REFERENCE)
            out.append({"scores": {SUBJECT_AREA: float(mask.mean())}, "flags": flags, "text": ""})
        identity = [i for i, r in enumerate(records) if r["method"] != ORACLE]
        for backbone in self.backbones:
            self.subject_scores(backbone, records, generated, reference, identity, out)
            if backbone.has_text:
                self.background_scores(backbone, records, generated, out)
        for record, row, mask, result in zip(records, rows, generated, out, strict=True):
            path = monkey_mask_path(self.run_dir, row) if record["method"] != ORACLE else None
            if path is not None:
                value = iou(read_monkey_mask(path, (mask.shape[1], mask.shape[0])), mask)
                result["scores"][MASK_IOU] = value
                if value is None:
                    result["flags"].append(NO_MONKEY_MASK)
        return out

    def tokens_of(self, backbone: Backbone, paths: list[Path], shas: list[str], keep: bool) -> list[torch.Tensor]:
        """[h, w, D] patch tokens per image, each content embedded once; `keep`: remembered (references)."""
        key = backbone.spec.key
        missing = {sha: path for sha, path in zip(shas, paths, strict=True) if (key, sha) not in self.tokens}
        fresh = patch_tokens(backbone, [load_rgb(path, AS_STORED) for path in missing.values()]) if missing else []
        found = dict(zip(missing, fresh, strict=True))
        if keep:
            self.tokens.update({(key, sha): tokens for sha, tokens in found.items()})
        return [self.tokens[(key, sha)] if (key, sha) in self.tokens else found[sha] for sha in shas]

    def subject_scores(self, backbone, records, generated, reference, identity, out) -> None:
        column = f"{backbone.spec.image_metric}{SUBJECT_SUFFIX}"
        todo = [i for i in identity if generated[i].any() and reference[i].any()]
        for i in identity:
            out[i]["scores"][column] = None
        if not todo:
            return
        refs = self.tokens_of(
            backbone, [Path(records[i]["source_path"]) for i in todo], [records[i]["source_sha256"] for i in todo], True
        )
        gens = self.tokens_of(
            backbone, [self.image_path(records[i]) for i in todo], [records[i]["image_sha256"] for i in todo], False
        )
        for i, gen, ref in zip(todo, gens, refs, strict=True):
            gen_patches = subject_patches(backbone, torch.from_numpy(generated[i]))
            ref_patches = subject_patches(backbone, torch.from_numpy(reference[i]))
            if not gen_patches.any():
                out[i]["flags"].append(f"{NO_PATCH_GENERATED}:{backbone.spec.key}")
            if not ref_patches.any():
                out[i]["flags"].append(f"{NO_PATCH_REFERENCE}:{backbone.spec.key}")
            out[i]["scores"][column] = subject_match(gen, gen_patches, ref, ref_patches)

    def background_scores(self, backbone, records, generated, out) -> None:
        column = f"{backbone.spec.text_metric}{BACKGROUND_SUFFIX}"
        cache = self.caches[backbone.spec.key]
        keys: dict[int, str] = {}
        loads: dict[str, tuple[Path, np.ndarray]] = {}
        for i, record in enumerate(records):
            out[i]["text"] = text = background_text(str(record.get("location") or ""))
            out[i]["scores"][column] = None
            if not text:
                out[i]["flags"].append(NO_BACKGROUND_TEXT)
            elif generated[i].all():
                out[i]["flags"].append(NO_BACKGROUND)
            else:
                mask_digest = bytes_sha256(np.packbits(generated[i]).tobytes() + str(generated[i].shape).encode())
                keys[i] = stable_hash(["background", FILL, record["image_sha256"], mask_digest])
                loads[keys[i]] = (self.image_path(record), generated[i])
        if not keys:
            return

        def load(key: str) -> Image.Image:
            path, mask = loads[key]
            return fill_subject(load_rgb(path, AS_STORED), mask)

        images = cache.images(list(dict.fromkeys(keys.values())), load, "backgrounds")
        texts = cache.texts(sorted({out[i]["text"] for i in keys}))
        for i, key in keys.items():
            out[i]["scores"][column] = float((images[key].double() * texts[out[i]["text"]].double()).sum())


def record_key(record: dict[str, Any], row: dict[str, Any], run_dir: Path, identity: dict, backbones: dict) -> str:
    """What decides a record's masked scores: image, source, subject word, text, MONKEY's mask, settings."""
    path = monkey_mask_path(run_dir, row) if record["method"] != ORACLE else None
    return stable_hash(
        {
            "image": record.get("image_sha256"),
            "source": record.get("source_sha256"),
            "word": row.get("subject_word"),
            "location": record.get("location"),
            "monkey_mask": file_sha256(path) if path is not None and path.is_file() else None,
            "settings": identity,
            "backbones": backbones,
        }
    )


def masked_run(
    run_dir: str | Path, eval_cfg: dict[str, Any], settings: MaskedSettings, item_ids: set[str] | None = None
) -> int:
    """Masked scores of every scored image of `run_dir` (only `item_ids` when given); returns records written."""
    run_dir = Path(run_dir)
    score_set = ScoreSet(run_dir, str(eval_cfg["name"]))
    records = [r for r in score_set.records() if item_ids is None or r["item_id"] in item_ids]
    manifest = {(r["method"], r["item_id"]): r for r in RunStore(run_dir).rows() if r.get("status") == STATUS_OK}
    any_of_item = {item_id: row for (_, item_id), row in manifest.items()}
    specs = backbone_specs(eval_cfg["backbones"])
    identities = {spec.key: spec.identity for spec in specs}
    todo: list[tuple[dict[str, Any], dict[str, Any], str]] = []
    for record in records:
        row = manifest.get((record["method"], record["item_id"])) or any_of_item.get(record["item_id"], {})
        key = record_key(record, row, run_dir, settings.identity, identities)
        done = score_set.read_masked(record["method"], record["item_id"])
        if done is None or done.get("key") != key or done.get("image_sha256") != record.get("image_sha256"):
            todo.append((record, row, key))
    log.info("masked metrics %s: %d records, %d to score", run_dir, len(records), len(todo))
    if not todo:
        return 0
    device, batch = str(eval_cfg.get("device", "auto")), int(eval_cfg.get("batch_size", 32))
    backbones = [load_backbone(spec, device, batch) for spec in specs]
    scorer = MaskedScorer(run_dir, backbones, SubjectMasks(run_dir, settings))
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start : start + CHUNK]
        results = scorer.score([r for r, _, _ in chunk], [row for _, row, _ in chunk])
        for (record, _, key), result in zip(chunk, results, strict=True):
            score_set.write_masked(
                {
                    "method": record["method"],
                    "item_id": record["item_id"],
                    "image_sha256": record["image_sha256"],
                    "key": key,
                    "segmenter": settings.segmenter,
                    "scores": result["scores"],
                    FLAG_COLUMN: "; ".join(result["flags"]),
                    TEXT_COLUMN: result["text"],
                    "created": time.time(),
                }
            )
    return len(todo)
