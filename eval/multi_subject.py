"""Scores of images holding several subjects (plan.multi.subjects >= 2, docs/multi_subject.md).

Every method is scored in the SAME regions: subject i's region in an image is where a segmenter
prompted with subject i's word finds it (`monkey.rank.subject_masks.Segmenter`; CLIPSeg by default),
never the mask a method used. Per generated image and subject i:
    identity   cosine(image backbone of the image inside region i, of subject i's reference photo)
    mixing     cosine(image inside region j, subject i's reference), averaged over the other subjects j:
               how much of subject i shows up where subject j should be
    region     the region's share of the image; 0 when the segmenter finds nothing there, and then
               identity and mixing are empty (NaN) for that subject and the row says so, never 0
"Inside a region" is the region's bounding box with every pixel outside the region set to grey, the
way each generated subject is matched to its own reference. CLIP-T is the run's own score (`clip_t`
of the score set: the whole image against its exact prompt).
"""

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from monkey.eval.backbones import backbone_specs, load_backbone
from PIL import Image

from monkey.datasets.base import Source
from monkey.errors import ConfigError
from monkey.hashing import to_plain
from monkey.images import load_rgb
from monkey.store import STATUS_OK, RunStore

log = logging.getLogger(__name__)
GREY = (127, 127, 127)
COLUMNS = ("identity", "mixing", "clip_t")


def region_image(image: Image.Image, region: np.ndarray) -> Image.Image | None:
    """The image inside `region` ([H, W] bool): its bounding box, outside pixels grey; None when empty."""
    if not region.any():
        return None
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    pixels = np.asarray(image.convert("RGB")).copy()
    pixels[~region] = GREY
    box = pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return Image.fromarray(box)


def subject_sources(row: dict[str, Any]) -> list[Source]:
    """The row's subjects as the segmenter's interface takes them (word and reference photo)."""
    return [
        Source(row["dataset"], subject, subject, Path(path), "", word, False)
        for subject, word, path in zip(row["subjects"], row["subject_words"], row["source_paths"], strict=True)
    ]


def score_image(image: Image.Image, sources: list[Source], segmenter: Any, backbone: Any) -> list[dict[str, Any]]:
    """One row per subject: its region's area, identity in its own region, mixing into the others'."""
    regions = [np.asarray(segmenter(image, source), dtype=bool) for source in sources]
    crops = [region_image(image, region) for region in regions]
    references = backbone.embed_images([load_rgb(source.image_path) for source in sources])  # [K, D]
    found = [index for index, crop in enumerate(crops) if crop is not None]
    embedded = dict(zip(found, backbone.embed_images([crops[i] for i in found]), strict=True)) if found else {}
    rows = []
    for index, source in enumerate(sources):
        own = embedded.get(index)
        others = [embedded[j] for j in found if j != index]
        rows.append(
            {
                "subject_slot": index,
                "scored_subject": source.subject,
                "region": float(regions[index].mean()),
                "identity": float(own @ references[index]) if own is not None else float("nan"),
                "mixing": float(np.mean([float(o @ references[index]) for o in others])) if others else float("nan"),
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
    backbone = load_backbone(specs[key], eval_cfg.get("device", "auto"))
    segmenter = make_segmenter(settings)
    labels = scores.drop_duplicates(["run_dir", "method", "item_id"]).set_index(["run_dir", "method", "item_id"])
    out = []
    for run_dir, row in found:
        image = load_rgb(run_dir / row["image"])
        at = (str(run_dir), row["method"], row["item_id"])
        known = at in labels.index
        for scored in score_image(image, subject_sources(row), segmenter, backbone):
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
    """Per variant: images, subjects found by the segmenter, and the means of identity, mixing, CLIP-T."""
    grouped = frame.groupby("variant", sort=True)
    table = grouped[list(COLUMNS)].mean()
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
        means = " | ".join(f"{r[column]:.4f}" for column in COLUMNS)
        lines.append(f"| {r['variant']} | {r['images']} | {found} | {means} |")
    return [*lines, "", "Per image and subject: `multi_subject.csv`.", ""]


MARKDOWN_INTRO = (
    "Regions: a segmenter prompted with each subject's word, the same for every method (docs/multi_subject.md). "
    "Identity: `{backbone}` cosine of the image inside the subject's region with its reference photo; mixing: "
    "of the image inside another subject's region with it (lower is better); means over subjects found."
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
