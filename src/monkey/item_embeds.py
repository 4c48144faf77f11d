"""Several subjects in one pipeline call: each batch item gets its own IP-Adapter image embedding.

diffusers' pipelines repeat a precomputed `ip_adapter_image_embeds` once per prompt
(`prepare_ip_adapter_image_embeds` receives only the batch size), so a call cannot carry several
subjects through its arguments. A UNet forward pre-hook replaces `added_cond_kwargs["image_embeds"]`
with one embedding per attention-batch row instead: the items' own, and under classifier-free
guidance the zero embedding for the unconditional half, exactly the values the pipeline builds for a
one-subject call. A batch of one subject therefore gives the very bytes the pipeline gives alone.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers import UNet2DConditionModel

from monkey.subject_embeds import pipeline_image_embeds


def rows_for(embeds: torch.Tensor, rows: int, negative: torch.Tensor | None = None) -> torch.Tensor:
    """[rows, 1, ...] per attention-batch row from [n, 1, ...] per item: rows == n (no CFG), or
    2n as diffusers batches CFG, [unconditional (`negative` [1, 1, ...], or zeros); conditional]."""
    items = embeds.shape[0]
    if rows == items:
        return embeds
    if rows == 2 * items:
        unconditional = torch.zeros_like(embeds) if negative is None else negative.to(embeds).expand_as(embeds)
        return torch.cat([unconditional, embeds])
    raise RuntimeError(f"UNet batch of {rows} rows for {items} per-item image embeddings (expected n or 2n)")


@contextmanager
def item_image_embeds(
    unet: UNet2DConditionModel, embeds: torch.Tensor, guided: bool, negative: torch.Tensor | None = None
) -> Iterator[list[torch.Tensor]]:
    """Within the block, every UNet evaluation sees item i's embeddings `embeds[i]` ([n, K, D], or
    [n, K, S, D] for hidden states; K images per item, 1 but for several subjects) in its rows, and the
    CFG negative ([1, 1, ...], default zeros) in the unconditional ones. Yields the `ip_adapter_image_embeds`
    argument to hand the pipeline (item 0's embedding, which the pipeline repeats and the hook then replaces)."""
    if embeds.ndim not in (3, 4):  # [n, K, ...]: K images per item (several subjects, monkey.multi)
        raise ValueError(f"per-item image embeddings must be [n, K, D] or [n, K, S, D], got {tuple(embeds.shape)}")

    def before_unet(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        added = kwargs.get("added_cond_kwargs") or {}
        given = added.get("image_embeds")
        if not isinstance(given, list) or len(given) != 1:
            raise RuntimeError("per-item image embeddings need one IP-Adapter's image_embeds in the UNet call")
        sample = args[0] if args else kwargs["sample"]
        per_row = rows_for(embeds, sample.shape[0], negative).to(given[0].device, module.dtype)  # [rows, 1, ...]
        if per_row.shape != given[0].shape:
            shapes = f"{tuple(per_row.shape)} vs the pipeline's {tuple(given[0].shape)}"
            raise RuntimeError(f"per-item image embeddings {shapes}")
        kwargs["added_cond_kwargs"] = {**added, "image_embeds": [per_row]}  # a new dict: the pipeline's is reused
        return args, kwargs

    handle = unet.register_forward_pre_hook(before_unet, with_kwargs=True)
    try:
        yield pipeline_image_embeds(embeds[:1], guided, negative)
    finally:
        handle.remove()
