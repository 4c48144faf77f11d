"""Recording the image tokens' attention at chosen attn2 layers and steps.

`CaptureIPAttnProcessor` subclasses diffusers' IP-Adapter processor, so `set_ip_adapter_scale`,
`unload_ip_adapter` and `ip_adapter_masks` keep working on it, and returns exactly the stock output
(it calls the stock `__call__`). When its recorder is on, it additionally computes
softmax(Q K_ip^T * attn.scale) over the image tokens, averaged over heads, for the rows of the
conditional half only; a recorder made with `attention_scale="none"` drops the 1/sqrt(d) factor
(softmax(Q K_ip^T), the map the MONKEY reference code recorded). Logits, softmax and head average run
in the recorder's `dtype`: fp32 by default, or the model's fp16 as the reference code ran them (an
fp16 softmax of unscaled logits rounds differently); the stored map is fp32 either way. A recorder made with `text=True`
(attention figures; off for MONKEY, whose cost it would raise) also takes softmax(Q K_text^T *
attn.scale) over the text tokens the same way. It is installed only on the configured layers,
sharing the stock processor's `to_k_ip`/`to_v_ip` modules, and the stock processors come back on exit.
"""

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, IPAdapterAttnProcessor2_0

from monkey.adapter.masks import map_key  # the pass-1 record format lives in masks.py
from monkey.errors import ConfigError


class StopSampling(Exception):
    """Raised to end a pass early: from the step callback after pass 1's last capture step, or from
    inside the UNet once the recorder holds every map it was asked for (the layers after the last
    recorded one are not needed then). The pass's caller catches it.

    LCM pipelines have no `interrupt`, so an exception is the one way out of their loop; the pipeline's
    closing `maybe_free_model_hooks()` is skipped, which matters only with CPU-offload hooks."""


# Bump when anything about how a recorded map is computed changes (it salts the pass-1 cache key,
# together with a digest of this module's source, so maps of older code are never served).
CAPTURE_FORMAT = 2


class AttentionRecorder:
    """Collects one map per (layer, step): [items, H*W, n_image_tokens] fp32, and with `text=True`
    also `text_maps`: [items, H*W, n_text_tokens] fp32 (every position of the padded prompt).

    The sampling-loop controller tells it, before each UNet evaluation, which step runs and which
    attention-batch rows hold the conditional half; processors only ask `active` and `add`."""

    def __init__(
        self,
        layers: Sequence[str],
        steps: Sequence[int],
        timed: bool = False,
        text: bool = False,
        exit_when_done: bool = False,
        attention_scale: str = "sdpa",
        dtype: torch.dtype = torch.float32,
    ):
        if attention_scale not in ("sdpa", "none"):
            raise ConfigError(f"attention_scale={attention_scale!r} is not allowed; choose one of ['sdpa', 'none']")
        self.layers = tuple(layers)
        self.attention_scale = attention_scale  # sdpa: logits x attn.scale (1/sqrt(d)); none: raw Q K^T
        self.dtype = dtype  # of the image-token map's logits, softmax and head average (stored as fp32)
        self.steps = frozenset(steps)
        self.maps: dict[str, torch.Tensor] = {}
        self.text = text
        self.text_maps: dict[str, torch.Tensor] = {}
        self.step: int | None = None  # the step being recorded now, None when off
        self.rows = slice(None)  # attention-batch rows to record (the conditional half under CFG)
        self.timed = timed  # accumulate `seconds` (synchronising CUDA), for the benchmark
        self.seconds = 0.0
        # stop the UNet forward right after the last map of the last step (pass 1 needs nothing after it)
        self.exit_when_done = exit_when_done

    def logit_scale(self, attn: Attention) -> float:
        """The factor on Q K_ip^T before the softmax of a recorded image-token map."""
        return float(attn.scale) if self.attention_scale == "sdpa" else 1.0

    def begin_step(self, step: int | None, rows: slice) -> None:
        self.step = step if step in self.steps else None
        self.rows = rows

    def end(self) -> None:
        self.step = None

    @property
    def active(self) -> bool:
        return self.step is not None

    def add(self, layer: str, probs: torch.Tensor, text: bool = False) -> None:
        maps = self.text_maps if text else self.maps
        key = map_key(layer, self.step)
        if key in maps:
            raise RuntimeError(f"attention map {key} recorded twice: the layer ran twice in one step")
        maps[key] = probs

    def done(self) -> bool:
        """Every asked map is here, text maps included when asked."""
        if self.missing():
            return False
        return not self.text or len(self.text_maps) == len(self.maps)

    def missing(self) -> list[str]:
        expected = [map_key(layer, step) for layer in self.layers for step in sorted(self.steps)]
        return [key for key in expected if key not in self.maps]


def query_input(attn: Attention, hidden_states: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
    """The tensor the stock processor feeds to `attn.to_q`, prepared the same way: [B, HW, C]."""
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    if hidden_states.ndim == 4:
        batch, channels, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    return hidden_states


class CaptureIPAttnProcessor(IPAdapterAttnProcessor2_0):
    """The stock IP-Adapter processor plus an optional record of its image-token attention."""

    def __init__(self, stock: IPAdapterAttnProcessor2_0, layer: str, recorder: AttentionRecorder):
        super().__init__(stock.hidden_size, stock.cross_attention_dim, list(stock.num_tokens), list(stock.scale))
        # carry the stock weights by sharing the very modules: no copy, same device and dtype
        self.to_k_ip = stock.to_k_ip
        self.to_v_ip = stock.to_v_ip
        self.layer = layer
        self.recorder = recorder

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        scale: float = 1.0,
        ip_adapter_masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        output = super().__call__(
            attn, hidden_states, encoder_hidden_states, attention_mask, temb, scale, ip_adapter_masks
        )
        if self.recorder.active:
            start = time.perf_counter() if self.recorder.timed else 0.0  # no clock call under torch.compile
            self.recorder.add(self.layer, self.image_token_probs(attn, hidden_states, encoder_hidden_states, temb))
            if self.recorder.text:
                probs = self.text_token_probs(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
                self.recorder.add(self.layer, probs, text=True)
            if self.recorder.timed:
                if hidden_states.is_cuda:
                    torch.cuda.synchronize(hidden_states.device)
                self.recorder.seconds += time.perf_counter() - start
            if self.recorder.exit_when_done and self.recorder.done():
                raise StopSampling  # out of the UNet forward: the rest of this evaluation is not needed
        return output

    def recorded_query(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        temb: torch.Tensor | None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """`attn.to_q` of the recorded rows, input prepared as the stock processor does, in `dtype`: [b, HW, C]."""
        rows = self.recorder.rows
        temb_rows = temb[rows] if temb is not None else None
        return attn.to_q(query_input(attn, hidden_states[rows], temb_rows)).to(dtype)

    @torch.no_grad()
    def image_token_probs(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: tuple[torch.Tensor, list[torch.Tensor]],
        temb: torch.Tensor | None,
    ) -> torch.Tensor:
        """softmax(Q K_ip^T * scale) over the first adapter's image tokens, head-averaged, as fp32: [b, HW, T];
        scale is attn.scale (1/sqrt(d)) or 1 (the recorder's `attention_scale`); the arithmetic runs in
        the recorder's dtype. With K images per item (several subjects, monkey.multi) the keys are every
        image's tokens in order, one softmax over all K*T as the stock processor attends without masks:
        [b, HW, K*T], image i's tokens at i*T..(i+1)*T-1."""
        if not isinstance(encoder_hidden_states, tuple):
            raise RuntimeError(f"{self.layer}: expected (text, image) hidden states from an IP-Adapter UNet")
        rows = self.recorder.rows
        ip_tokens = encoder_hidden_states[1][0][rows]  # [b, num_images, T, D]
        dtype = self.recorder.dtype
        query = self.recorded_query(attn, hidden_states, temb, dtype)  # [b, HW, C]
        key = self.to_k_ip[0](ip_tokens.flatten(1, 2)).to(dtype)  # [b, K*T, C]
        batch, heads = query.shape[0], attn.heads
        head_dim = query.shape[-1] // heads
        query = query.view(batch, -1, heads, head_dim).transpose(1, 2)  # [b, heads, HW, d]
        key = key.view(batch, -1, heads, head_dim).transpose(1, 2)  # [b, heads, T, d]
        scores = (query @ key.transpose(-1, -2)) * self.recorder.logit_scale(attn)  # [b, heads, HW, T]
        return scores.softmax(dim=-1).mean(dim=1).float()  # [b, HW, T]

    @torch.no_grad()
    def text_token_probs(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: tuple[torch.Tensor, list[torch.Tensor]],
        attention_mask: torch.Tensor | None,
        temb: torch.Tensor | None,
    ) -> torch.Tensor:
        """softmax(Q K_text^T * attn.scale) over the text tokens, head-averaged, in fp32: [b, HW, L].

        The text keys are made as the stock processor makes them (`norm_cross`, the attention mask),
        through diffusers' own `get_attention_scores` on fp32 inputs."""
        rows = self.recorder.rows
        text = encoder_hidden_states[0][rows]  # [b, L, D]
        if attn.norm_cross:
            text = attn.norm_encoder_hidden_states(text)
        query = attn.head_to_batch_dim(self.recorded_query(attn, hidden_states, temb))  # [b * heads, HW, d]
        key = attn.head_to_batch_dim(attn.to_k(text).float())  # [b * heads, L, d]
        batch = text.shape[0]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask[rows], text.shape[1], batch).float()
        probs = attn.get_attention_scores(query, key, attention_mask)  # [b * heads, HW, L]
        return probs.view(batch, attn.heads, *probs.shape[1:]).mean(dim=1)  # [b, HW, L]


def attn2_layers(unet: UNet2DConditionModel) -> list[str]:
    """Names of the cross-attention modules that carry an IP-Adapter processor."""
    return [
        name.removesuffix(".processor")
        for name, processor in unet.attn_processors.items()
        if name.endswith("attn2.processor") and isinstance(processor, IPAdapterAttnProcessor2_0)
    ]


def num_image_tokens(unet: UNet2DConditionModel) -> int:
    processors = [p for p in unet.attn_processors.values() if isinstance(p, IPAdapterAttnProcessor2_0)]
    if not processors:
        raise ConfigError("the pipeline has no IP-Adapter loaded (model.ip_adapter is required for MONKEY)")
    return int(processors[0].num_tokens[0])


@contextmanager
def capture_processors(unet: UNet2DConditionModel, recorder: AttentionRecorder) -> Iterator[None]:
    """Install recording processors on the recorder's layers only; put the stock ones back on exit."""
    stock: dict[str, IPAdapterAttnProcessor2_0] = {}
    try:
        for layer in recorder.layers:
            attn = unet.get_submodule(layer)
            if not isinstance(attn.processor, IPAdapterAttnProcessor2_0):
                raise ConfigError(
                    f"layer {layer} has processor {type(attn.processor).__name__}, not diffusers' "
                    "IPAdapterAttnProcessor2_0 (load the IP-Adapter with load_ip_adapter on torch >= 2)"
                )
            stock[layer] = attn.processor
            attn.set_processor(CaptureIPAttnProcessor(attn.processor, layer, recorder))
        yield
    finally:
        for layer, processor in stock.items():
            unet.get_submodule(layer).set_processor(processor)
