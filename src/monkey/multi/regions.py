"""N subjects' masks from their own pass-1 maps, made disjoint.

A pass-1 record of a K-subject item holds, per (layer, step), the joint image-token attention
[h, w, K*T] (monkey.adapter.capture: one softmax over every image's tokens, as the adapter attends
without masks); subject i's record is its slice of T tokens, from which MONKEY's own rule
(`monkey.adapter.masks.extract_mask`: token, layers, steps, min-max normalise, threshold) makes its
mask. Overlap rule: a cell kept by several subjects goes to the one whose normalised map is largest
there (ties: the earlier subject in the prompt), so every cell holds at most one subject's tokens.
With one subject nothing changes: the mask is MONKEY's.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from monkey.adapter.masks import ItemMask, extract_mask
from monkey.adapter.settings import MonkeySettings


def subject_record(record: Mapping[str, torch.Tensor], subject: int, tokens: int) -> dict[str, torch.Tensor]:
    """Subject `subject`'s maps, [h, w, T], from a K-subject record [h, w, K*T]."""
    return {key: maps[..., subject * tokens : (subject + 1) * tokens] for key, maps in record.items()}


def disjoint(masks: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """[K, h, w] masks (hard or soft) and their normalised maps [K, h, w] -> masks where each cell keeps
    only the subject with the largest score among those whose mask covers it (argmax: the first on ties)."""
    covered = masks > 0  # [K, h, w]
    contest = torch.where(covered, scores.float(), torch.full_like(scores.float(), -torch.inf))
    winner = contest.argmax(dim=0)  # [h, w]
    subject = torch.arange(masks.shape[0]).view(-1, 1, 1)  # [K, 1, 1]
    return masks * (winner[None] == subject).to(masks.dtype)


@dataclass
class ItemRegions:
    """One item's K subject masks after the overlap rule, with each subject's MONKEY mask before it."""

    subjects: list[ItemMask]  # per subject: MONKEY's mask of its own map (before the overlap rule)
    masks: torch.Tensor  # [K, h, w] the disjoint masks on the finest recorded grid

    def info(self) -> dict[str, object]:
        """Manifest fields: MONKEY's flags for subject 0 at the top level (one subject: exactly MONKEY's),
        and with several subjects every subject's flags, area after the rule and the overlap resolved."""
        first = self.subjects[0].info()
        if len(self.subjects) == 1:
            return first
        overlap = (torch.stack([s.mask for s in self.subjects]) > 0).sum(dim=0) > 1
        per_subject = []
        for subject, mask in zip(self.subjects, self.masks, strict=True):
            area = round(float(mask.float().mean()), 6)
            # 0 with a non-empty own mask: every cell went to another subject (its tokens act nowhere)
            per_subject.append({**subject.info(), "mask_area_disjoint": area, "lost_every_cell": area == 0})
        return {
            **first,
            "mask_degenerate": any(s.degenerate for s in self.subjects),
            "subject_masks": per_subject,
            "mask_overlap_area": round(float(overlap.float().mean()), 6),
            "overlap_rule": "largest normalised map wins",
        }


def item_regions(
    record: Mapping[str, torch.Tensor], settings: MonkeySettings, subjects: int, tokens: int, label: str = ""
) -> ItemRegions:
    """The K disjoint masks of one item from its joint record."""
    masks = [
        extract_mask(subject_record(record, index, tokens), settings, f"{label} subject {index}" if label else "")
        for index in range(subjects)
    ]
    if subjects == 1:
        return ItemRegions(masks, masks[0].mask[None])
    stacked = torch.stack([mask.mask for mask in masks])  # [K, h, w]
    scores = torch.stack([mask.attention for mask in masks])  # [K, h, w] min-max normalised maps
    return ItemRegions(masks, disjoint(stacked, scores))


def region_stack(regions: Sequence[ItemRegions]) -> torch.Tensor:
    """[n, K, h, w] of every item's disjoint masks."""
    return torch.stack([item.masks for item in regions])
