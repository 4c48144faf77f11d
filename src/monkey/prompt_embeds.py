"""Prompt embeddings computed once and handed to several calls of one pipeline (MONKEY's two passes).

Stable Diffusion and LCM pipelines return (positive, negative); SDXL's returns the pooled text
embeddings of its second encoder too, which its UNet's text-time conditioning needs. Keyword
arguments keep one call right for both signatures (SDXL's second positional parameter is `prompt_2`).
"""

import torch
from diffusers import DiffusionPipeline


def prompt_embeds(pipe: DiffusionPipeline, prompts: list[str], device: torch.device, guided: bool) -> dict:
    """The pipeline call's prompt-embedding arguments, as the pipeline itself would compute them."""
    out = pipe.encode_prompt(prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=guided)
    if len(out) == 4:  # SDXL: embeds, negative, pooled, negative pooled
        positive, negative, pooled, negative_pooled = out
        kwargs = {"prompt_embeds": positive, "pooled_prompt_embeds": pooled}
        if guided:
            kwargs.update(negative_prompt_embeds=negative, negative_pooled_prompt_embeds=negative_pooled)
        return kwargs
    positive, negative = out
    return {"prompt_embeds": positive, "negative_prompt_embeds": negative} if guided else {"prompt_embeds": positive}
