"""MONKEY as a harness Method: conf/method/monkey.yaml's knobs in, images plus masks out."""

from collections.abc import Sequence
from typing import Any

from monkey.adapter.artifacts import item_artifacts
from monkey.adapter.mask_sources import RefineSettings, build_mask_source
from monkey.adapter.sampler import MonkeySampler, SubjectBatch
from monkey.adapter.settings import MonkeySettings
from monkey.adapter.sharing import SharedWork, ShareSettings
from monkey.controlnet.method_control import ARTIFACT, MethodControl
from monkey.errors import ConfigError
from monkey.methods.base import GenerationRequest, GenerationResult, Method, batch_image_size
from monkey.models.profiles import Runtime, load_runtime_pipeline
from monkey.subject_embeds import SubjectEmbedder


class MonkeyMethod(Method):
    sampler_class: type[MonkeySampler] = MonkeySampler  # a subclass's own passes (monkey.multi)

    def __init__(
        self,
        name: str,
        runtime: Runtime,
        share: dict[str, Any] | None = None,
        control: dict[str, Any] | None = None,
        segmenter: dict[str, Any] | None = None,
        refine: dict[str, Any] | None = None,
        **knobs: Any,
    ):
        super().__init__(name, runtime)
        self.settings = MonkeySettings(**knobs)
        if refine is not None:  # a bad block fails here, whichever source the run uses
            RefineSettings.from_config(refine, self.settings.paper_bug_exclusive_product)
        try:
            share_settings = ShareSettings(**(share or {}))
        except TypeError as err:
            allowed = list(ShareSettings.__dataclass_fields__)
            raise ConfigError(f"method.share has an unknown key ({err}); allowed: {allowed}") from err
        shared = SharedWork.for_runtime(share_settings, runtime) if share_settings.enabled else None
        self.pipe = load_runtime_pipeline(runtime)
        mask_source = build_mask_source(self.settings, segmenter, refine, str(runtime.device))
        self.sampler = self.sampler_class(self.pipe, self.settings, shared, mask_source=mask_source)
        self.embedder = SubjectEmbedder(self.pipe)
        self.control = MethodControl.optional(control, runtime)  # method.control: a ControlNet (docs/controlnet.md)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """One pipeline call per pass for the whole batch, whatever its subjects (each item keeps its
        own subject embedding, monkey.item_embeds)."""
        requests = list(requests)
        height, width = batch_image_size(requests, "MONKEY")
        control = self.control.for_call(requests) if self.control is not None else None
        batch = SubjectBatch(
            prompts=[r.prompt for r in requests],
            seeds=[r.seed for r in requests],
            image_embeds=self.embedder.batch([r.item.source for r in requests]),  # [n, 1, D] or [n, 1, S, D]
            height=height,
            width=width,
            negative_embeds=self.embedder.negative_embeds(),
            control=control.batch if control is not None else None,
        )
        labels, sources = [r.item.item_id for r in requests], [r.item.source for r in requests]
        output = self.sampler(batch, labels=labels, sources=sources)
        latent_hw = self.sampler.latent_hw(batch)
        pass1_images = output.pass1_images or None  # saved whenever made (save_pass1_image, image mask sources)
        results = []
        for index, image in enumerate(output.images):
            item_mask = output.masks[index]
            artifacts = item_artifacts(
                image,
                item_mask,
                output.image_masks[index],
                latent_hw,
                self.settings.soft,
                pass1_images[index] if pass1_images else None,
            )
            info = {**item_mask.info(), **output.sharing}
            if control is not None:
                info.update(control.rows[index])
                artifacts[ARTIFACT] = control.images[index]
            results.append(GenerationResult(image=image, artifacts=artifacts, info=info))
        return results
