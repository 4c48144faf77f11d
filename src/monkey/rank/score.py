"""IoU of every recorded (layer, step, token) map with the subject's mask, and their ranking.

Each map becomes a mask exactly as MONKEY makes one from a single map: min-max normalised over its
layer's grid, thresholded (`gt`: > t, `ge`: >= t), then brought to the scoring grid by nearest
neighbour. The subject mask is brought to the same grid by area average, kept where >= 0.5. A
constant map gives no mask (IoU 0, counted as degenerate). The ranking is the mean IoU over items.
"""

from collections.abc import Mapping

import pandas as pd
import torch
import torch.nn.functional as F

from monkey.adapter.masks import keep, min_max, parse_map_key, resize


def mask_on_grid(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[H, W] bool -> [h, w] bool: area average >= 0.5 (the cell is mostly subject)."""
    area = F.adaptive_avg_pool2d(mask.float()[None, None], grid)[0, 0]
    return area >= 0.5


def token_masks(
    maps: torch.Tensor, threshold: float, rule: str, grid: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """[h, w, T] maps -> ([T, gh, gw] bool masks on `grid`, [T] bool degenerate)."""
    flat = maps.float().permute(2, 0, 1).flatten(1)  # [T, h*w]
    normalised, degenerate = zip(*(min_max(token_map) for token_map in flat), strict=True)  # MONKEY's own rule
    degenerate = torch.tensor(degenerate)  # [T]
    kept = keep(torch.stack(normalised), threshold, rule) & ~degenerate[:, None]  # [T, h*w]
    kept = kept.reshape(maps.shape[2], maps.shape[0], maps.shape[1])
    return resize(kept.float(), grid).bool(), degenerate


def iou(masks: torch.Tensor, subject: torch.Tensor) -> torch.Tensor:
    """[T, h, w] bool vs [h, w] bool -> [T] intersection over union (0 when both are empty)."""
    intersection = (masks & subject).flatten(1).sum(1).float()
    union = (masks | subject).flatten(1).sum(1).float()
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.zeros_like(union))


def score_record(
    record: Mapping[str, torch.Tensor], subject: torch.Tensor, threshold: float, rule: str, item: str = ""
) -> pd.DataFrame:
    """One item's rows (item, layer, step, token, iou, degenerate) for every map of its record;
    `subject` is its mask already on the scoring grid [h, w] bool."""
    grid = tuple(subject.shape)
    rows = []
    for key, maps in record.items():
        layer, step = parse_map_key(key)
        masks, degenerate = token_masks(maps, threshold, rule, grid)
        for token, (value, bad) in enumerate(zip(iou(masks, subject).tolist(), degenerate.tolist(), strict=True)):
            rows.append({"item": item, "layer": layer, "step": step, "token": token, "iou": value, "degenerate": bad})
    return pd.DataFrame(rows)


def rank(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and min IoU over items per (layer, token, step), best first, with its 1-based rank and
    `layer_index` (the layer's place in the model). Ties keep the model's layer order, then token, step."""
    order = {layer: index for index, layer in enumerate(dict.fromkeys(scores["layer"]))}
    grouped = scores.groupby(["layer", "token", "step"], sort=False)
    table = grouped.agg(
        mean_iou=("iou", "mean"),
        std_iou=("iou", "std"),
        min_iou=("iou", "min"),
        items=("iou", "size"),
        degenerate=("degenerate", "sum"),
    ).reset_index()
    table["std_iou"] = table["std_iou"].fillna(0.0)
    table["layer_index"] = table["layer"].map(order)
    table = table.sort_values(
        ["mean_iou", "layer_index", "token", "step"], ascending=[False, True, True, True], kind="stable"
    )
    table = table.reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table
