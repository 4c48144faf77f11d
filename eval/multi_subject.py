"""Scores of images holding several subjects (plan.multi.subjects >= 2, docs/multi_subject.md).

Every method is scored in the SAME regions: subject i's region in an image is where a segmenter
prompted with subject i's word finds it (`monkey.rank.subject_masks.Segmenter`; CLIPSeg by default),
never the mask a method used. Identity is the masked metrics' patch matching
(`monkey.eval.patch_tokens.subject_match`, docs/evaluation.md#masked-metrics): the mean, over the
reference photo's subject patches, of the best cosine with any generated patch of a region. The
reference's subject patches come from the same segmenter, prompted with the same word, on the photo.
Per generated image and subject i, with R_i subject i's reference patches and G_j region j's patches:
    identity   subject_match(G_i, R_i): subject i found inside its own region
    mixing     subject_match(G_j, R_i), averaged over the other subjects j whose region has a patch:
               how much of subject i shows up where subject j should be (lower is better)
    region     the region's share of the image's pixels
A score that cannot be computed is NaN, never 0, and the row's `flag` says why (FLAGS).
CLIP-T is the run's own score (`clip_t` of the score set: the whole image against its exact prompt).
"""

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monkey.eval.backbones import backbone_specs, load_backbone
from monkey.eval.masked_columns import (
    NO_PATCH_GENERATED,
    NO_PATCH_REFERENCE,
    NO_SUBJECT_GENERATED,
    NO_SUBJECT_REFERENCE,
)
from monkey.eval.patch_tokens import patch_tokens, subject_match, subject_patches
from PIL import Image

from monkey.datasets.base import Source
from monkey.errors import ConfigError
from monkey.hashing import to_plain
from monkey.images import AS_STORED, load_rgb
from monkey.store import STATUS_OK, RunStore

log = logging.getLogger(__name__)
COLUMNS = ("identity", "mixing", "clip_t")
NO_OTHER_REGION = "no_other_region"  # mixing: no other subject's region holds a patch
# flags, each naming which score is NaN: the segmenter found no subject i in the generated image
# (identity), none in subject i's reference photo (both), or found one with no patch half inside it
FLAGS = (NO_SUBJECT_GENERATED, NO_SUBJECT_REFERENCE, NO_PATCH_GENERATED, NO_PATCH_REFERENCE, NO_OTHER_REGION)


class References:
    """Each reference photo's patch tokens and subject patches, segmented and embedded once per (photo, word)."""

    def __init__(self, segmenter: Any, backbone: Any):
        self.segmenter, self.backbone = segmenter, backbone
        self.known: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor, bool]] = {}

    def __call__(self, source: Source) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """[h, w, D] unit tokens, [h, w] bool subject patches, whether the segmenter found any pixel."""
        key = (str(source.image_path), source.subject_word)
        if key not in self.known:
            photo = load_rgb(source.image_path, AS_STORED)
            mask = np.asarray(self.segmenter(photo, source), dtype=bool)  # [H, W]
            (tokens,) = patch_tokens(self.backbone, [photo])
            self.known[key] = (tokens, subject_patches(self.backbone, torch.from_numpy(mask)), bool(mask.any()))
        return self.known[key]


def subject_sources(row: dict[str, Any]) -> list[Source]:
    """The row's subjects as the segmenter's interface takes them (word and reference photo)."""
    return [
        Source(row["dataset"], subject, subject, Path(path), "", word, False)
        for subject, word, path in zip(row["subjects"], row["subject_words"], row["source_paths"], strict=True)
    ]


def nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def score_image(
    image: Image.Image, sources: list[Source], segmenter: Any, backbone: Any, references: References | None = None
) -> list[dict[str, Any]]:
    """One row per subject: its region's area, identity in its own region, mixing into the others'."""
    references = references or References(segmenter, backbone)
    regions = [np.asarray(segmenter(image, source), dtype=bool) for source in sources]  # K x [H, W]
    (tokens,) = patch_tokens(backbone, [image])  # [h, w, D]
    patches = [subject_patches(backbone, torch.from_numpy(region)) for region in regions]  # K x [h, w]
    rows = []
    for i, source in enumerate(sources):
        ref_tokens, ref_patches, ref_found = references(source)
        flags = [] if regions[i].any() else [NO_SUBJECT_GENERATED]
        if regions[i].any() and not patches[i].any():
            flags.append(NO_PATCH_GENERATED)
        if not ref_found:
            flags.append(NO_SUBJECT_REFERENCE)
        elif not ref_patches.any():
            flags.append(NO_PATCH_REFERENCE)
        others = [j for j in range(len(sources)) if j != i and patches[j].any()]
        if not others:
            flags.append(NO_OTHER_REGION)
        mixing = [subject_match(tokens, patches[j], ref_tokens, ref_patches) for j in others]
        mixing = [value for value in mixing if value is not None]  # None only without reference patches
        rows.append(
            {
                "subject_slot": i,
                "scored_subject": source.subject,
                "region": float(regions[i].mean()),
                "identity": nan_if_none(subject_match(tokens, patches[i], ref_tokens, ref_patches)),
                "mixing": float(np.mean(mixing)) if mixing else float("nan"),
                "flag": "; ".join(flags),
            }
        )
    return rows


def make_segmenter(settings: dict[str, Any]) -> Any:
    """The configured segmenter: CLIPSeg by name or folder, or (tiny: true) the tiny random CLIPSeg written
    by code (monkey.models.tiny_segmenters), both behind the Segmenter interface."""
    from monkey.rank.segmenters import ClipSegSegmenter

    tiny = bool(settings.get("tiny"))
    return ClipSegSegmenter(model=settings["segmenter"], threshold=settings["threshold"], tiny=tiny)


def multi_rows(run_dirs: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    return [
        (run_dir, row)
        for run_dir in run_dirs
        for row in RunStore(run_dir).rows()
        if row.get("status") == STATUS_OK and len(row.get("subjects") or []) > 1
    ]


def score_multi_subject(run_dirs: list[Path], scores: pd.DataFrame, eval_cfg: Any) -> pd.DataFrame:
    """Per (image, subject) rows of every multi-subject image in `run_dirs`; empty when there is none."""
    found = multi_rows(run_dirs)
    if not found:
        return pd.DataFrame()
    settings = to_plain(eval_cfg.get("multi_subject") or {})
    specs = {spec.key: spec for spec in backbone_specs(to_plain(eval_cfg.backbones))}
    key = settings.get("backbone", "dino")
    if key not in specs:
        raise ConfigError(f"eval.multi_subject.backbone={key!r} is not one of eval.backbones {sorted(specs)}")
    backbone = load_backbone(specs[key], eval_cfg.get("device", "auto"), int(eval_cfg.get("batch_size", 32)))
    segmenter = make_segmenter(settings)
    references = References(segmenter, backbone)
    labels = scores.drop_duplicates(["run_dir", "method", "item_id"]).set_index(["run_dir", "method", "item_id"])
    out = []
    for run_dir, row in found:
        image = load_rgb(run_dir / row["image"], AS_STORED)
        at = (str(run_dir), row["method"], row["item_id"])
        known = at in labels.index
        for scored in score_image(image, subject_sources(row), segmenter, backbone, references):
            out.append(
                {
                    "variant": labels.loc[at, "variant"] if known else row["method"],
                    "method": row["method"],
                    "item_id": row["item_id"],
                    "image": row["image"],
                    "run_dir": str(run_dir),
                    **scored,
                    "clip_t": float(labels.loc[at, "clip_t"]) if known and "clip_t" in labels else float("nan"),
                }
            )
    return pd.DataFrame(out)


def multi_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per variant: images, subjects found by the segmenter, the means of identity, mixing, CLIP-T (NaN
    left out) and how many subject rows each mean holds (`<column>_n`)."""
    grouped = frame.groupby("variant", sort=True)
    table = grouped[list(COLUMNS)].mean()
    for column in COLUMNS:
        table[f"{column}_n"] = grouped[column].count()
    table.insert(0, "images", grouped["item_id"].nunique())
    table.insert(1, "subjects_found", grouped["region"].apply(lambda r: int((r > 0).sum())))
    table.insert(2, "subjects", grouped.size())
    return table.reset_index()


def multi_section(table: pd.DataFrame, backbone: str) -> list[str]:
    """The report's section (markdown lines)."""
    head = "| variant | images | subjects found | identity (own region) | mixing (A in B's region) | CLIP-T |"
    lines = ["## Several subjects in one image", "", MARKDOWN_INTRO.format(backbone=backbone), "", head]
    lines.append("|---|---|---|---|---|---|")
    for _, r in table.iterrows():
        found = f"{r['subjects_found']}/{r['subjects']}"
        means = " | ".join(f"{r[column]:.4f} (n={r[f'{column}_n']})" for column in COLUMNS)
        lines.append(f"| {r['variant']} | {r['images']} | {found} | {means} |")
    return [*lines, "", "Per image and subject, with the `flag` of every empty score: `multi_subject.csv`.", ""]


MARKDOWN_INTRO = (
    "Regions: a segmenter prompted with each subject's word, the same for every method (docs/multi_subject.md). "
    "Identity: `{backbone}` patch matching (as the masked metrics' `<m>_subject`) of the subject's reference "
    "photo's subject patches against the image's patches inside the subject's region; mixing: against the "
    "patches inside another subject's region (lower is better). Means over the subject rows scored (n); a "
    "row without region or subject patches is flagged and left out, never 0."
)


def write_multi_subject(run_dirs: list[Path], scores: pd.DataFrame, out_dir: Path, eval_cfg: Any) -> list[str]:
    """multi_subject.csv / .md in the report folder; the report's section, or [] without such images."""
    from monkey.eval.report import write_frame, write_text

    frame = score_multi_subject(run_dirs, scores, eval_cfg)
    if frame.empty:
        return []
    table = multi_table(frame)
    write_frame(out_dir / "multi_subject.csv", frame)
    section = multi_section(table, (to_plain(eval_cfg.get("multi_subject") or {})).get("backbone", "dino"))
    write_text(out_dir / "multi_subject.md", "\n".join(section))
    log.info("report: %d multi-subject images scored per subject region", frame["item_id"].nunique())
    return section
