"""Contextual token sharing: one joint-attention processor for every MM-DiT block of SD3.

In a joint-attention block the text ("contextual") tokens of a batch row attend to that row's image
tokens, so the text tokens of a reference branch absorb the reference image. TF-TI2I lets the
conditional main branch read them: its queries stay [main image tokens; main text tokens], its
keys and values become [main image tokens; main text tokens ++ the reference branches' text
tokens]. The main branch never reads a reference's image tokens, and every other row (the
unconditional half, the references) attends exactly as the stock processor does.

Two optional parts of the paper, off in its runs, are shape-generic here:
- winner-takes-all (WTA): each main image token keeps the text tokens of only the reference it
  attends to most (head-averaged attention mass); a no-op with one reference.
- reference contextual masking (RCM): a reference's text tokens attend only to the reference image
  tokens that attend most to the reference's text (head- and token-averaged, min-max normalised,
  at or above `rcm_threshold`); its image tokens attend as usual.
Token counts come from the tensors (image tokens: hidden_states.shape[1]; text tokens:
encoder_hidden_states.shape[1]), never from 1024 px or 333-token constants.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, JointAttnProcessor2_0


@dataclass(frozen=True)
class SharingPlan:
    """Which batch rows share in one transformer call."""

    pairs: tuple[tuple[int, tuple[int, ...]], ...]  # (conditional main row, its reference rows)
    masked_references: tuple[int, ...] = ()  # reference rows whose text tokens RCM masks
    winner_takes_all: bool = False
    rcm_threshold: float = 0.5


@dataclass
class SharingControl:
    """Set by the sampling loop before every transformer call; `plan=None` means plain attention."""

    plan: SharingPlan | None = None
    calls: int = field(default=0)  # joint-attention calls that shared (tests check the processor ran)


def split_heads(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, L, heads * d] -> [B, heads, L, d]"""
    batch, length, _ = tensor.shape
    return tensor.view(batch, length, heads, -1).transpose(1, 2)


def head_mean_probabilities(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) averaged over heads, in fp32, one head at a time (memory: one
    [Lq, Lk] map). query [H, Lq, d], key [H, Lk, d] -> [Lq, Lk]."""
    scale = query.shape[-1] ** -0.5
    total = torch.zeros(query.shape[1], key.shape[1], dtype=torch.float32, device=query.device)
    for head in range(query.shape[0]):
        total += torch.softmax((query[head].float() @ key[head].float().T) * scale, dim=-1)
    return total / query.shape[0]


def winner_takes_all_mask(
    query: torch.Tensor, key: torch.Tensor, image_tokens: int, own_tokens: int, reference_tokens: Sequence[int]
) -> torch.Tensor:
    """Additive mask [Lq, Lk] hiding, from each image-token query, the text tokens of every reference
    but the one it attends to most. Keys are [image; own text; reference 1 text; ...]."""
    mask = torch.zeros(query.shape[1], key.shape[1], dtype=query.dtype, device=query.device)
    if len(reference_tokens) < 2:
        return mask
    probabilities = head_mean_probabilities(query, key)[:image_tokens]  # [N, Lk]
    bounds, start = [], image_tokens + own_tokens
    for count in reference_tokens:
        bounds.append((start, start + count))
        start += count
    mass = torch.stack([probabilities[:, a:b].sum(-1) for a, b in bounds], dim=-1)  # [N, K]
    winner = mass.argmax(-1)  # [N]
    for index, (a, b) in enumerate(bounds):
        mask[:image_tokens, a:b] = torch.where(winner == index, 0.0, float("-inf"))[:, None].to(mask.dtype)
    return mask


def reference_masking_mask(query: torch.Tensor, key: torch.Tensor, image_tokens: int, threshold: float) -> torch.Tensor:
    """Additive mask [L, L] for one reference row (keys [image; text]): its text-token queries see only
    the image tokens whose head- and text-averaged attention to the text is salient."""
    probabilities = head_mean_probabilities(query, key)  # [N + T, N + T]
    saliency = probabilities[:image_tokens, image_tokens:].mean(-1)  # [N]
    low, high = saliency.min(), saliency.max()
    keep = torch.ones_like(saliency, dtype=torch.bool) if high <= low else (saliency - low) / (high - low) >= threshold
    mask = torch.zeros(key.shape[1], key.shape[1], dtype=query.dtype, device=query.device)
    mask[image_tokens:, :image_tokens] = torch.where(keep, 0.0, float("-inf")).to(mask.dtype)[None, :]
    return mask


class ContextualSharingProcessor:
    """Stock joint attention for every row, except the rows `control.plan` names."""

    def __init__(self, control: SharingControl):
        self.control = control
        self.stock = JointAttnProcessor2_0()

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        plan = self.control.plan
        if plan is None or encoder_hidden_states is None:  # dual-attention image-only layers stay stock
            return self.stock(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        self.control.calls += 1
        batch, image_tokens, _ = hidden_states.shape  # [B, N, C]
        text_tokens = encoder_hidden_states.shape[1]  # T
        heads = attn.heads
        query = split_heads(attn.to_q(hidden_states), heads)  # [B, H, N, d]
        key = split_heads(attn.to_k(hidden_states), heads)
        value = split_heads(attn.to_v(hidden_states), heads)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        text_query = split_heads(attn.add_q_proj(encoder_hidden_states), heads)  # [B, H, T, d]
        text_key = split_heads(attn.add_k_proj(encoder_hidden_states), heads)
        text_value = split_heads(attn.add_v_proj(encoder_hidden_states), heads)
        if attn.norm_added_q is not None:
            text_query = attn.norm_added_q(text_query)
        if attn.norm_added_k is not None:
            text_key = attn.norm_added_k(text_key)
        query = torch.cat([query, text_query], dim=2)  # [B, H, N + T, d]
        key = torch.cat([key, text_key], dim=2)
        value = torch.cat([value, text_value], dim=2)

        out = torch.empty_like(query)  # [B, H, N + T, d]
        special = {main for main, _ in plan.pairs} | set(plan.masked_references)
        plain = [row for row in range(batch) if row not in special]
        if plain:
            out[plain] = F.scaled_dot_product_attention(query[plain], key[plain], value[plain])
        for row in plan.masked_references:
            mask = reference_masking_mask(query[row], key[row], image_tokens, plan.rcm_threshold)
            out[row] = F.scaled_dot_product_attention(query[row], key[row], value[row], attn_mask=mask)
        for main, references in plan.pairs:
            refs = list(references)
            # [H, N + T + K*T, d]: the main row's own keys, then each reference's text keys
            shared_key = torch.cat([key[main], *text_key[refs].unbind(0)], dim=1)
            shared_value = torch.cat([value[main], *text_value[refs].unbind(0)], dim=1)
            mask = None
            if plan.winner_takes_all:
                counts = [text_tokens] * len(refs)
                mask = winner_takes_all_mask(query[main], shared_key, image_tokens, text_tokens, counts)
            out[main] = F.scaled_dot_product_attention(query[main], shared_key, shared_value, attn_mask=mask)

        out = out.transpose(1, 2).reshape(batch, -1, heads * out.shape[-1]).to(query.dtype)  # [B, N + T, C]
        image_out, text_out = out[:, :image_tokens], out[:, image_tokens:]
        if not attn.context_pre_only:
            text_out = attn.to_add_out(text_out)
        image_out = attn.to_out[1](attn.to_out[0](image_out))
        return image_out, text_out


def joint_attention_layers(transformer: torch.nn.Module) -> list[tuple[str, Attention]]:
    """Every block's joint (image + text) attention, `transformer_blocks.<i>.attn`, in block order."""
    blocks = transformer.transformer_blocks
    return [(f"transformer_blocks.{index}.attn", block.attn) for index, block in enumerate(blocks)]


@contextmanager
def contextual_sharing(transformer: torch.nn.Module, control: SharingControl) -> Iterator[None]:
    """Install the sharing processor on every joint-attention layer; put the previous ones back after,
    also after an error."""
    layers = joint_attention_layers(transformer)
    previous = [attn.processor for _, attn in layers]
    processor = ContextualSharingProcessor(control)
    try:
        for _, attn in layers:
            attn.set_processor(processor)
        yield
    finally:
        for (_, attn), old in zip(layers, previous, strict=True):
            attn.set_processor(old)
