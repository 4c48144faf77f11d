"""From recorded attention maps to one subject mask per item.

A pass-1 record is a plain tensor dict per item, `"<layer>@<step>" -> [h, w, T]` (the layer's grid,
all T image tokens), so a cached record serves every token, threshold or combine rule. Extraction:
select the token; bring every layer to the finest recorded grid; average the layers; combine the
steps (`mean`: average, normalise, threshold, as the paper; `union`: normalise and threshold each
step, then OR, as the reference code's clipped sum); min-max normalise; threshold (`threshold_rule`:
> t, or >= t as the reference code) or keep soft. A map that is constant, not finite, or keeps no cell
(e.g. t = 1 with `gt`) is degenerate and follows `degenerate` (a full mask, flagged, or an error).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from monkey.adapter.settings import MonkeySettings
from monkey.errors import MonkeyError

# A map whose max - min is below this (probabilities in [0, 1]) carries no spatial information.
DEGENERATE_SPAN = 1e-6


def map_key(layer: str, step: int) -> str:
    """Key of one recorded map in a pass-1 record (a plain, serialisable tensor dict). Defined here, not in
    capture.py, so mask extraction imports without diffusers."""
    return f"{layer}@{step}"


def parse_map_key(key: str) -> tuple[str, int]:
    """(layer, step) of a key written by `map_key`."""
    layer, _, step = key.rpartition("@")
    return layer, int(step)


class DegenerateMaskError(MonkeyError):
    """The recorded map is constant or not finite and method.degenerate=error."""


def layer_grid(num_queries: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) grid of a layer with `num_queries` positions: the latent grid halved, rounding up as
    the UNet's stride-2 convolutions do, until the sizes match. Works for non-square images."""
    height, width = latent_hw
    while height * width > num_queries and (height > 1 or width > 1):
        height, width = -(-height // 2), -(-width // 2)
    if height * width != num_queries:
        raise ValueError(f"{num_queries} attention positions match no downsampling of the {latent_hw} latent grid")
    return height, width


def to_grid(flat: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
    """[HW, T] -> [h, w, T] on the layer's grid."""
    height, width = layer_grid(flat.shape[0], latent_hw)
    return flat.reshape(height, width, flat.shape[1])


def resize(maps: torch.Tensor, size: tuple[int, int], soft: bool = False) -> torch.Tensor:
    """[..., h, w] -> [..., H, W]; nearest keeps hard masks binary and coarse cells whole."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    if soft:
        out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    else:
        out = F.interpolate(flat, size=size, mode="nearest")
    return out.reshape(*lead, *size)


def step_maps(
    record: Mapping[str, torch.Tensor], layers: tuple[str, ...], steps: tuple[int, ...], token: int | Sequence[int]
) -> torch.Tensor:
    """The selected token's map per step (several tokens: their maps summed), layers averaged on the
    finest of their grids: [S, h, w]."""
    tokens = [token] if isinstance(token, int) else list(token)
    missing = [map_key(layer, step) for layer in layers for step in steps if map_key(layer, step) not in record]
    if missing:
        raise KeyError(f"pass-1 record lacks maps {missing}; it holds {sorted(record)}")
    grids = {layer: tuple(record[map_key(layer, steps[0])].shape[:2]) for layer in layers}
    finest = max(grids.values(), key=lambda hw: hw[0] * hw[1])
    per_step = []
    for step in steps:
        layer_maps = [resize(record[map_key(layer, step)][..., tokens].float().sum(-1), finest) for layer in layers]
        per_step.append(torch.stack(layer_maps).mean(dim=0))
    return torch.stack(per_step)  # [S, h, w]


def min_max(values: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Normalise to [0, 1]; a constant or non-finite map is degenerate and comes back as zeros."""
    if not bool(torch.isfinite(values).all()):
        return torch.zeros_like(values), True
    low, high = values.min(), values.max()
    span = float(high - low)
    if span <= DEGENERATE_SPAN:
        return torch.zeros_like(values), True
    return (values - low) / span, False


def keep(values: torch.Tensor, threshold: float, rule: str) -> torch.Tensor:
    """The cells a threshold keeps, as a bool map: `gt` keeps > t, `ge` keeps >= t."""
    return values >= threshold if rule == "ge" else values > threshold


@dataclass
class ItemMask:
    mask: torch.Tensor  # [h, w] in [0, 1] on the finest recorded grid; {0, 1} unless soft
    attention: torch.Tensor  # [h, w] the combined normalised map before thresholding
    degenerate: bool  # the map was constant or not finite, or the threshold kept no cell
    fallback: str | None  # what replaced a degenerate mask ("full"), else None
    reason: str | None = None  # why it is degenerate: "constant" (or not finite) or "empty"
    source_info: dict[str, object] = field(default_factory=dict)  # a mask source's own fields (mask_sources.py)

    def info(self) -> dict[str, object]:
        info: dict[str, object] = {
            "mask_degenerate": self.degenerate,
            "mask_fallback": self.fallback,
            "mask_area": round(float(self.mask.float().mean()), 6),
            **self.source_info,
        }
        if self.reason is not None:
            info["mask_degenerate_reason"] = self.reason
        return info


def extract_mask(record: Mapping[str, torch.Tensor], settings: MonkeySettings, label: str = "") -> ItemMask:
    maps = step_maps(record, settings.layers, settings.capture_steps, settings.token)  # [S, h, w]
    t, rule = settings.threshold, settings.threshold_rule
    if settings.combine == "mean":
        attention, degenerate = min_max(maps.mean(dim=0))
        mask = attention if settings.soft else keep(attention, t, rule).float()
    else:  # union
        normalised = [min_max(step_map) for step_map in maps]
        degenerate = any(bad for _, bad in normalised)
        stacked = torch.stack([values for values, _ in normalised])  # [S, h, w]
        attention = stacked.max(dim=0).values
        mask = attention if settings.soft else keep(stacked, t, rule).any(dim=0).float()
    reason = "constant" if degenerate else None
    if not degenerate and not bool(mask.any()):
        degenerate, reason = True, "empty"
    if not degenerate:
        return ItemMask(mask=mask, attention=attention, degenerate=False, fallback=None)
    if settings.degenerate == "error":
        what = "is constant or not finite" if reason == "constant" else f"keeps no cell at threshold {t} ({rule})"
        raise DegenerateMaskError(
            f"{label or 'item'}: the attention map of token {settings.token} at layers {list(settings.layers)}, "
            f"steps {list(settings.capture_steps)} {what}, so it gives no mask "
            "(method.degenerate=full uses the full mask instead and flags the item in the manifest)"
        )
    return ItemMask(mask=torch.ones_like(mask), attention=attention, degenerate=True, fallback="full", reason=reason)
