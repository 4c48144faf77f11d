"""Per-token attention maps of one MONKEY pass 1, for the paper's Figure 1 and appendix Figures 3-6.

What makes the image: MONKEY's mask pass (pass 1) run to its end, i.e. `method.initial_steps` steps
from the item's seed with the IP-Adapter at `method.initial_scale` on every step and no mask. It is
the pass whose image-token attention MONKEY turns into its mask, so the figure shows where the
image tokens attend while they act everywhere. The maps are recorded by MONKEY's own capture
processor (`monkey.adapter.capture`) at the chosen `attn2` layers and steps: the image tokens'
softmax(Q K_ip^T * scale) exactly as MONKEY records it, and, with the recorder's `text` switch, the
text tokens' softmax(Q K_text^T * scale), head-averaged, fp32, conditional rows only. Recording
does not change the image (the stock processor's output is returned unchanged).

Steps are 0-based indices of pass 1's sampling loop, as `method.capture_steps`.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from monkey.adapter.capture import AttentionRecorder, attn2_layers, capture_processors, map_key, num_image_tokens
from monkey.adapter.control import StepController, StepPlan
from monkey.adapter.masks import to_grid
from monkey.adapter.sampler import MonkeySampler, SubjectBatch, loop_steps
from monkey.errors import ConfigError
from monkey.figures.words import Word, prompt_words


@dataclass
class AttentionMaps:
    """One prompt's pass-1 image and its recorded maps, on each layer's own grid."""

    image: Image.Image  # pass 1's image
    prompt: str
    seed: int
    layers: tuple[str, ...]
    steps: tuple[int, ...]
    words: list[Word]  # @sot, the prompt's words, @eot, with their token positions
    image_maps: dict[str, torch.Tensor]  # "<layer>@<step>" -> [h, w, T] image tokens
    text_maps: dict[str, torch.Tensor]  # "<layer>@<step>" -> [h, w, L] every text position

    @property
    def num_image_tokens(self) -> int:
        return int(next(iter(self.image_maps.values())).shape[-1])

    def word_map(self, layer: str, step: int, word: Word) -> torch.Tensor:
        """[h, w]: the attention probability a position gives to the word, i.e. the SUM over the word's
        tokens (not their mean), so a word split into several BPE tokens is comparable with a one-token
        word, and the maps of every position of the sequence sum to 1."""
        return self.text_maps[map_key(layer, step)][..., list(word.positions)].sum(dim=-1)

    def token_map(self, layer: str, step: int, token: int) -> torch.Tensor:
        """[h, w]: image token `token`'s map, as MONKEY's mask pass records it."""
        return self.image_maps[map_key(layer, step)][..., token]


def resolve_layers(requested: Sequence[str], available: Sequence[str]) -> tuple[str, ...]:
    """Full attn2 names; a prefix naming exactly one of them (`up_blocks.1.attentions.1`) is accepted."""
    if isinstance(requested, str) or not requested:
        raise ConfigError(f"layers={requested!r} must be a non-empty list of attn2 layers; allowed: {list(available)}")
    resolved = []
    for name in requested:
        matches = [layer for layer in available if layer == name or layer.startswith(f"{name}.")]
        if len(matches) != 1:
            raise ConfigError(
                f"layers: {name!r} names {'no' if not matches else len(matches)} attn2 layer(s) of the model; "
                f"allowed (or a prefix naming one of them): {list(available)}"
            )
        resolved.append(matches[0])
    return tuple(dict.fromkeys(resolved))


def resolve_steps(requested: Sequence[int], sampler: MonkeySampler) -> tuple[int, ...]:
    """Sorted unique steps inside pass 1's loop."""
    initial_steps = sampler.settings.initial_steps
    count = loop_steps(sampler.pipe, initial_steps)
    try:
        steps = sorted({int(step) for step in requested})
    except (TypeError, ValueError) as err:
        raise ConfigError(f"steps={requested!r} must be a list of integers in 0..{count - 1}") from err
    outside = [step for step in steps if not 0 <= step < count]
    if not steps or outside:
        raise ConfigError(
            f"steps={list(requested)}: allowed are 0..{count - 1}, the steps of pass 1's sampling loop "
            f"(method.initial_steps={initial_steps}); raise method.initial_steps for later steps"
        )
    return tuple(steps)


def check_tokens(requested: Sequence[int] | None, count: int) -> list[int]:
    """The image tokens to draw: all of them when None."""
    if requested is None:
        return list(range(count))
    tokens = [int(token) for token in requested]
    outside = [token for token in tokens if not 0 <= token < count]
    if outside:
        raise ConfigError(
            f"tokens={list(requested)} has {outside}; allowed: 0..{count - 1} (the IP-Adapter's image tokens)"
        )
    return tokens


@torch.no_grad()
def record_attention(
    sampler: MonkeySampler, batch: SubjectBatch, layers: Sequence[str], steps: Sequence[int]
) -> AttentionMaps:
    """Run pass 1 of one prompt to its end, recording image- and text-token maps at `layers` x `steps`."""
    if len(batch) != 1:
        raise ConfigError(f"an attention figure is drawn for one prompt, got {len(batch)}")
    pipe, settings = sampler.pipe, sampler.settings
    layers = resolve_layers(layers, attn2_layers(pipe.unet))
    steps = resolve_steps(steps, sampler)
    num_image_tokens(pipe.unet)  # a clear error when no IP-Adapter is loaded
    recorder = AttentionRecorder(layers, steps, text=True, attention_scale=settings.attention_scale)

    def plan(step: int) -> StepPlan:
        return StepPlan(ip_scale=settings.initial_scale, record=step in steps)

    text = sampler.encode_text(batch)
    with (
        capture_processors(pipe.unet, recorder),
        sampler.subjects(batch) as ip_embeds,
        StepController(pipe.unet, plan, len(batch), recorder=recorder) as control,
    ):
        images = pipe(
            **sampler.call_kwargs(batch, text),
            ip_adapter_image_embeds=ip_embeds,
            num_inference_steps=settings.initial_steps,
            output_type="pil",
            callback_on_step_end=control.after_step,
        ).images
    if recorder.missing():
        raise RuntimeError(f"pass 1 ended without recording {recorder.missing()}")
    latent_hw = sampler.latent_hw(batch)
    return AttentionMaps(
        image=images[0],
        prompt=batch.prompts[0],
        seed=batch.seeds[0],
        layers=layers,
        steps=steps,
        words=prompt_words(pipe.tokenizer, batch.prompts[0]),
        image_maps={key: to_grid(maps[0].cpu(), latent_hw) for key, maps in recorder.maps.items()},
        text_maps={key: to_grid(maps[0].cpu(), latent_hw) for key, maps in recorder.text_maps.items()},
    )
