"""MasaCtrl's mutual self-attention as diffusers attention processors.

The UNet batch holds, per classifier-free-guidance half, [source, target_1, ..., target_k]. From the
control's start step on, in the transformer blocks from `start_layer` on, every self-attention
(`attn1`) query of a half attends to the keys and values of that half's source element. The
source therefore attends to itself (a plain forward), each target reads the source's content.

Steps come from the sampling loop (it sets `control.step`), layers from the UNet's structure
(`transformer_blocks`), never from counting attention calls, which breaks silently when a diffusers
version calls processors in another order or a pipeline adds a call.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from monkey.errors import ConfigError


@dataclass
class MutualAttentionControl:
    """State shared by the processors of one sampling call."""

    start_step: int  # first 0-based denoising step with mutual attention
    halves: int = 1  # CFG halves in the UNet batch: 2 under classifier-free guidance
    step: int | None = None  # set by the sampling loop before each UNet call; None outside it

    @property
    def active(self) -> bool:
        return self.step is not None and self.step >= self.start_step


def transformer_blocks(unet: UNet2DConditionModel) -> list[tuple[str, torch.nn.Module]]:
    """The UNet's transformer blocks in execution order: down blocks, mid block, up blocks.

    SD1.x has 16: down 0-5, mid 6, up 7-15 (`up_blocks.2` and `up_blocks.3` are 10-15). Walked from
    the block lists, not `named_modules()`, which registers up_blocks before mid_block.
    """
    parts = [(f"down_blocks.{i}", block) for i, block in enumerate(unet.down_blocks)]
    parts.append(("mid_block", unet.mid_block))
    parts += [(f"up_blocks.{i}", block) for i, block in enumerate(unet.up_blocks)]
    found = []
    for prefix, block in parts:
        for j, transformer in enumerate(getattr(block, "attentions", None) or []):
            for k, layer in enumerate(transformer.transformer_blocks):
                found.append((f"{prefix}.attentions.{j}.transformer_blocks.{k}", layer))
    return found


def source_kv(tensor: torch.Tensor, halves: int) -> torch.Tensor:
    """[B, heads, N, d] -> the same shape, every element replaced by the first of its CFG half."""
    batch = tensor.shape[0]
    if batch % halves:
        raise RuntimeError(f"mutual attention: batch {batch} does not split into {halves} CFG halves")
    per_half = tensor.view(halves, batch // halves, *tensor.shape[1:])  # [halves, branches, heads, N, d]
    return per_half[:, :1].expand_as(per_half).reshape(tensor.shape)


def mutual_attention(attn: Attention, hidden_states: torch.Tensor, halves: int) -> torch.Tensor:
    """Self-attention where queries read the source branch's keys and values. [B, N, C] -> [B, N, C]."""
    if attn.spatial_norm is not None or attn.group_norm is not None or hidden_states.ndim != 3:
        raise RuntimeError("mutual attention supports transformer-block self-attention ([B, N, C], no group norm)")
    batch, tokens, _ = hidden_states.shape
    residual = hidden_states
    query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
    head_dim = key.shape[-1] // attn.heads

    def split_heads(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view(batch, tokens, attn.heads, head_dim).transpose(1, 2)  # [B, heads, N, d]

    query, key, value = split_heads(query), split_heads(key), split_heads(value)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    # SDPA's default scale 1/sqrt(d), exactly as diffusers' AttnProcessor2_0 computes self-attention
    out = F.scaled_dot_product_attention(query, source_kv(key, halves), source_kv(value, halves))
    out = out.transpose(1, 2).reshape(batch, tokens, attn.heads * head_dim).to(query.dtype)  # [B, N, C]
    out = attn.to_out[1](attn.to_out[0](out))  # linear, dropout
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


class MutualSelfAttentionProcessor:
    """An `attn1` processor: the layer's previous processor while the control is inactive, mutual
    attention once it is active."""

    def __init__(self, control: MutualAttentionControl, previous: Any):
        self.control = control
        self.previous = previous

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        if not self.control.active or encoder_hidden_states is not None or attention_mask is not None:
            return self.previous(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        return mutual_attention(attn, hidden_states, self.control.halves)


def controlled_layers(unet: UNet2DConditionModel, start_layer: int) -> list[str]:
    """Names of the `attn1` modules from transformer block `start_layer` on."""
    blocks = transformer_blocks(unet)
    if not 0 <= start_layer < len(blocks):
        raise ConfigError(
            f"method.start_layer={start_layer} must lie in [0, {len(blocks)}): this UNet has {len(blocks)} transformer "
            f"blocks ({blocks[0][0]} ... {blocks[-1][0]})"
        )
    return [f"{name}.attn1" for name, _ in blocks[start_layer:]]


@contextmanager
def mutual_self_attention(
    unet: UNet2DConditionModel, control: MutualAttentionControl, start_layer: int
) -> Iterator[list[str]]:
    """Install the processors on the controlled layers; restore every previous processor on exit
    (the pipeline is memoised and shared by other methods and tests)."""
    layers = controlled_layers(unet, start_layer)
    saved = dict(unet.attn_processors)
    installed = dict(saved)
    for layer in layers:
        installed[f"{layer}.processor"] = MutualSelfAttentionProcessor(control, saved[f"{layer}.processor"])
    unet.set_attn_processor(installed)  # diffusers pops from the dict it is given: pass copies
    try:
        yield layers
    finally:
        control.step = None
        unet.set_attn_processor(dict(saved))
