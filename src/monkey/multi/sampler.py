"""MONKEY's two passes with K subject images through one IP-Adapter.

Pass 1 is MONKEY's, with the K images given to the adapter together and no masks (diffusers then
attends over all K*T image tokens jointly); the recorder keeps that joint attention [HW, K*T], and
each subject's mask comes from its own T tokens (monkey.multi.regions), made disjoint. Pass 2 is
MONKEY's with one mask per image: on `mask_steps` diffusers' masked multi-image path attends to each
image on its own and adds its output only inside that image's mask (`ip_adapter_masks`
[rows, K, H, W]). Everything else (steps, scales, seeds, caches) is MonkeySampler's. With K = 1 the
masks are MONKEY's [n, H, W] stack, so the calls are MONKEY's own.
"""

from collections.abc import Sequence
from typing import Any

import torch

from monkey.adapter.capture import num_image_tokens
from monkey.adapter.masks import resize
from monkey.adapter.sampler import MonkeySampler, Record, SubjectBatch
from monkey.datasets.base import Source
from monkey.multi.regions import ItemRegions, item_regions


class MultiSubjectSampler(MonkeySampler):
    def subjects_per_item(self, batch: SubjectBatch) -> int:
        return int(batch.image_embeds.shape[1])  # [n, K, D] or [n, K, S, D]

    def masks(  # type: ignore[override]
        self,
        records: Sequence[Record],
        batch: SubjectBatch,
        labels: Sequence[str] | None = None,
        pass1_images: Sequence[Any] | None = None,
        sources: Sequence[Source] | None = None,
    ) -> tuple[list[ItemRegions], torch.Tensor]:
        """Per-item regions and the masks for the adapter at image size: [n, H, W] for one subject
        (MONKEY's), [n, K, H, W] for K. Attention masks only: `pass1_images` and `sources` feed MONKEY's image
        mask sources, which monkey_multi refuses (MonkeyMultiMethod)."""
        labels = labels or [f"item {index}" for index in range(len(records))]
        count, tokens = self.subjects_per_item(batch), num_image_tokens(self.pipe.unet)
        regions = [
            item_regions(record, self.settings, count, tokens, label)
            for record, label in zip(records, labels, strict=True)
        ]
        size = (batch.height, batch.width)
        image_masks = torch.stack([resize(item.masks, size, soft=self.settings.soft) for item in regions])
        return regions, image_masks[:, 0] if count == 1 else image_masks
