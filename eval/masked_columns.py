"""The masked metrics' column names and flags (monkey.eval.masked computes them), kept light: the report
and the aggregation import them without loading a model library."""

SUBJECT_SUFFIX = "_subject"  # <image metric>_subject: identity on the subject's patches only
BACKGROUND_SUFFIX = "_background"  # <text metric>_background: the background alone vs the location text
SUBJECT_AREA = "subject_area"  # fraction of the generated image the subject covers
MASK_IOU = "mask_iou"  # MONKEY rows: its pass-1 mask against the segmenter's mask of the final image
FLAG_COLUMN = "masked_flag"  # why a masked score is missing ("; "-joined), empty when none is
TEXT_COLUMN = "background_text"  # the text clip_t_background compared the background with

# flags: each says which masked score is left empty and why
NO_SUBJECT_GENERATED = "no_subject_generated"  # the segmenter found no subject in the generated image
NO_SUBJECT_REFERENCE = "no_subject_reference"  # ... nor in the reference (source) photo
NO_PATCH_GENERATED = "no_subject_patch_generated"  # subject, but no patch of <key>'s grid is half subject
NO_PATCH_REFERENCE = "no_subject_patch_reference"
NO_BACKGROUND = "no_background"  # the subject covers the whole image
NO_BACKGROUND_TEXT = "no_background_text"  # the prompt entry names no location (e.g. DreamBooth's "red {subject}")
NO_MONKEY_MASK = "empty_masks"  # mask_iou: neither MONKEY's nor the segmenter's mask holds a pixel


def masked_metric_columns(backbones: dict[str, list[str | None]]) -> list[str]:
    """The masked score columns of these backbones (key -> [image metric, text metric]), in order."""
    columns = [f"{image}{SUBJECT_SUFFIX}" for image, _ in backbones.values()]
    columns += [f"{text}{BACKGROUND_SUFFIX}" for _, text in backbones.values() if text]
    return [*columns, SUBJECT_AREA, MASK_IOU]


def masked_flags_markdown(scores) -> str:
    """Under Table 1 (when eval.masked filled the columns): per variant and dataset, how many images carry
    each flag, i.e. are left out of the masked columns the flag names; "" when there is no masked column."""
    if FLAG_COLUMN not in scores:
        return ""
    rows = scores[scores[FLAG_COLUMN].notna()]
    counts: dict[tuple[str, str], dict[str, int]] = {}
    flags: list[str] = []
    for (variant, dataset), group in rows.groupby(["variant", "dataset"], sort=True):
        tally = counts.setdefault((variant, dataset), {"images": len(group)})
        for text in group[FLAG_COLUMN]:
            for flag in filter(None, (part.strip() for part in str(text).split(";"))):
                tally[flag] = tally.get(flag, 0) + 1
                flags += [flag] if flag not in flags else []
    header = ["variant", "dataset", "images", *flags]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for (variant, dataset), tally in counts.items():
        cells = [variant, dataset, str(tally["images"]), *(str(tally.get(flag, 0)) for flag in flags)]
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        "\nMasked metrics: images whose masked score could not be computed carry a `masked_flag` in `scores.csv` "
        "and are left out of that column's mean (its n); counts per flag:\n\n"
    )
    return note + "\n".join(lines) + "\n"
