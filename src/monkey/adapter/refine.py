"""The reference code's `seg_mask`: MONKEY's attention mask refined with SAM's automatic masks of the
pass-1 image (main_seg.py:313-333 @3dbb7ce, `--segmentation_attention_method`).

- `overlap` (its default): the union of the whole segments whose area lies at least `overlap_frac`
  inside the attention mask (`(segment * mask).sum() >= overlap_frac * segment.sum()`, frac 0.8);
  no segment qualifies (or SAM finds none): an empty mask.
- `exclusive`: what the code computes starts from a full mask and multiplies in `segment * mask` for
  every segment, i.e. the attention mask intersected with *every* segment. SAM's automatic masks
  are mostly disjoint parts of the image, and two disjoint segments already empty it; an image SAM
  finds no segment in gets the full mask. We take that product for a bug (the overlap branch accumulates with a max)
  and by default compute the attention mask inside the union of the segments; the flag
  `paper_bug_exclusive_product` computes the product as the code does.

Masks are [H, W] at the pass-1 image's size: the attention mask as the IP-Adapter receives it (nearest
upsampling; values in [0, 1], {0, 1} unless `soft`), segments as bool maps.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from monkey.errors import ConfigError

REFINE_RULES = ("overlap", "exclusive")


@dataclass(frozen=True)
class RefineRule:
    """`method.refine`'s arithmetic: which rule and its overlap fraction, with the paper-bug flag
    `method.paper_bug_exclusive_product` (a top-level knob, beside `paper_bug_final_all_steps`)."""

    rule: str = "overlap"
    overlap_frac: float = 0.8  # main_seg.py's --overlap_frac default
    paper_bug_exclusive_product: bool = False

    def __post_init__(self) -> None:
        if self.rule not in REFINE_RULES:
            raise ConfigError(f"method.refine.rule={self.rule!r} is not allowed; choose one of {list(REFINE_RULES)}")
        if not 0.0 <= float(self.overlap_frac) <= 1.0:
            raise ConfigError(f"method.refine.overlap_frac={self.overlap_frac!r} must lie in [0, 1]")


@dataclass
class Refined:
    mask: torch.Tensor  # [H, W] float
    segments: int  # SAM's automatic masks of the image
    kept: int  # those that shaped the result (overlap: taken whole; exclusive: all of them)


def refine_mask(attention: torch.Tensor, segments: Sequence[torch.Tensor], rule: RefineRule) -> Refined:
    """[H, W] attention mask and SAM's [H, W] bool segments -> the refined [H, W] mask."""
    mask = attention.float()
    for segment in segments:
        if tuple(segment.shape) != tuple(mask.shape):
            raise ValueError(f"a SAM segment is {tuple(segment.shape)}, the attention mask {tuple(mask.shape)}")
    pieces = [segment.to(torch.float32) for segment in segments]
    if rule.rule == "overlap":
        out = torch.zeros_like(mask)
        kept = 0
        for piece in pieces:
            if float((piece * mask).sum()) >= rule.overlap_frac * float(piece.sum()):
                out = torch.maximum(out, piece)
                kept += 1
        return Refined(out, len(pieces), kept)
    if rule.paper_bug_exclusive_product:
        out = torch.ones_like(mask)
        for piece in pieces:
            out = out * (piece * mask)
        return Refined(out, len(pieces), len(pieces))
    out = torch.zeros_like(mask)
    for piece in pieces:
        out = torch.maximum(out, piece * mask)
    return Refined(out, len(pieces), len(pieces))
