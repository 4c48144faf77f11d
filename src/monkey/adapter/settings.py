"""MONKEY's knobs in one frozen record, validated when a method is built, not mid-run.

Steps are 0-based indices of the pipeline's sampling loop (`for i, t in enumerate(timesteps)`).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from monkey.errors import ConfigError

PAPER_LAYER = "up_blocks.1.attentions.1.transformer_blocks.0.attn2"
COMBINE_RULES = ("mean", "union")
DEGENERATE_POLICIES = ("full", "error")
# Temperature of the recorded map: `sdpa` is softmax(Q K^T / sqrt(d)), what the UNet's attention computes
# and the paper's text writes; `none` is softmax(Q K^T), what the reference code recorded (ipattn.py).
ATTENTION_SCALES = ("sdpa", "none")
# Which cells of the normalised map a threshold keeps: `gt` (> t, this project) or `ge` (>= t, the
# reference code's `x_norm[x_norm < threshold] = 0`, which keeps the top cell even at t = 1).
THRESHOLD_RULES = ("gt", "ge")
# Precision of the recorded map's logits, softmax and head average: `float32` (this project), or `model`,
# the UNet's own dtype (fp16 on CUDA, as the reference code ran everything); explicit half types for tests.
RECORD_DTYPES = ("float32", "model", "float16", "bfloat16")
# Where the subject mask comes from (mask_sources.py): pass 1's attention map (the paper), a segmenter's
# subject mask of the pass-1 image, or the attention mask refined with SAM's automatic masks of that image.
MASK_SOURCES = ("attention", "segmenter", "refined")


def step_tuple(key: str, steps: Iterable[int]) -> tuple[int, ...]:
    """Sorted unique non-negative step indices."""
    try:
        values = sorted({int(step) for step in steps})
    except (TypeError, ValueError) as err:
        raise ConfigError(f"method.{key}={steps!r} must be a list of integers (0-based sampling-loop steps)") from err
    if any(step < 0 for step in values):
        raise ConfigError(f"method.{key}={values} has negative steps; steps are 0-based sampling-loop indices")
    return tuple(values)


def check_range(key: str, steps: tuple[int, ...], loop_steps: int, steps_key: str, num_steps: int) -> None:
    outside = [step for step in steps if step >= loop_steps]
    if outside:
        raise ConfigError(
            f"method.{key} has steps {outside} outside the range 0..{loop_steps - 1}: the sampling loop runs "
            f"{loop_steps} steps for {steps_key}={num_steps}"
        )


@dataclass(frozen=True)
class MonkeySettings:
    # mask pass (pass 1)
    layers: tuple[str, ...] = (PAPER_LAYER,)  # attn2 layers whose maps are averaged
    # image token(s) whose attention is the subject (0-based): one index, or a list whose maps are summed
    # (the plus adapters have 16 tokens); `tokens` is the tuple form
    token: int | tuple[int, ...] = 1
    capture_steps: tuple[int, ...] = (1, 2)
    initial_steps: int = 4
    initial_scale: float = 1.0  # IP-Adapter scale in pass 1
    attention_scale: str = "sdpa"  # logits of the recorded map: sdpa (x 1/sqrt(d), paper text) or none (ref. code)
    record_dtype: str = "float32"  # the recorded map's arithmetic: float32, or model (the UNet's dtype; ref. code fp16)
    # mask extraction
    mask_source: str = "attention"  # attention | segmenter | refined (the last two read the pass-1 image)
    combine: str = "mean"  # mean: average maps, then threshold (paper); union: OR of thresholded maps (reference code)
    threshold: float = 0.5
    threshold_rule: str = "gt"  # gt: keep cells > threshold; ge: keep cells >= threshold (reference code)
    soft: bool = False  # keep the normalised map as the mask instead of thresholding
    degenerate: str = "full"  # constant or NaN map: "full" mask + a manifest flag, or "error"
    # final pass (pass 2)
    final_steps: int = 8
    ip_steps: tuple[int, ...] = (2, 3, 4, 5)  # steps where the IP-Adapter acts at ip_scale; 0 elsewhere
    mask_steps: tuple[int, ...] = (2, 3, 4, 5)  # steps where its output is multiplied by the mask
    ip_scale: float = 1.0
    # the reference code's main_seg.py saves and scores, as MONKEY, the run masked and adapted on every
    # step (`final_image_all_steps=final_image_raw_mask=...`): true overrides ip_steps and mask_steps
    paper_bug_final_all_steps: bool = False
    # main_seg.py's `exclusive` refinement multiplies the attention mask with every SAM segment (empty once two
    # segments are disjoint); true computes that product, false the attention mask inside their union (refine.py)
    paper_bug_exclusive_product: bool = False
    # both passes
    guidance_scale: float = 8.5
    save_pass1_image: bool = False  # run pass 1 to the end and decode it (costs the full pass)

    def __post_init__(self) -> None:
        if isinstance(self.layers, str) or not self.layers:
            raise ConfigError(f"method.layers={self.layers!r} must be a non-empty list of attn2 layer names")
        object.__setattr__(self, "layers", tuple(dict.fromkeys(str(layer) for layer in self.layers)))
        for key in ("initial_steps", "final_steps"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"method.{key}={getattr(self, key)!r} must be at least 1")
        if not self.capture_steps:
            raise ConfigError("method.capture_steps is empty: pass 1 must record at least one step")
        for key in ("capture_steps", "ip_steps", "mask_steps"):
            object.__setattr__(self, key, step_tuple(key, getattr(self, key)))
        if self.combine not in COMBINE_RULES:
            raise ConfigError(f"method.combine={self.combine!r} is not allowed; choose one of {list(COMBINE_RULES)}")
        if self.degenerate not in DEGENERATE_POLICIES:
            raise ConfigError(
                f"method.degenerate={self.degenerate!r} is not allowed; choose one of {list(DEGENERATE_POLICIES)}"
            )
        for key, allowed in (
            ("attention_scale", ATTENTION_SCALES),
            ("threshold_rule", THRESHOLD_RULES),
            ("record_dtype", RECORD_DTYPES),
            ("mask_source", MASK_SOURCES),
        ):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"method.{key}={getattr(self, key)!r} is not allowed; choose one of {list(allowed)}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ConfigError(f"method.threshold={self.threshold!r} must lie in [0, 1] (maps are min-max normalised)")
        object.__setattr__(self, "token", token_value(self.token))

    @property
    def tokens(self) -> tuple[int, ...]:
        """The selected image tokens, whose maps are summed: (token,) for a single index."""
        return (self.token,) if isinstance(self.token, int) else self.token

    def resolved_record_dtype(self, model_dtype: torch.dtype) -> torch.dtype:
        """The torch dtype of the recorded map's arithmetic; `model` is `model_dtype` (the UNet's)."""
        return model_dtype if self.record_dtype == "model" else getattr(torch, self.record_dtype)

    @property
    def needs_pass1_image(self) -> bool:
        """Whether pass 1 must run to its end and decode its image (saved, or read by the mask source)."""
        return self.save_pass1_image or self.mask_source != "attention"

    @property
    def last_capture_step(self) -> int:
        return self.capture_steps[-1]

    def adapted(self, step: int) -> bool:
        """Whether the IP-Adapter acts (at ip_scale) on pass-2 step `step`."""
        return self.paper_bug_final_all_steps or step in self.ip_steps

    def masked(self, step: int) -> bool:
        """Whether the image tokens' output is multiplied by the mask on pass-2 step `step`."""
        return self.paper_bug_final_all_steps or step in self.mask_steps

    def check_model(
        self, attn2_layers: Sequence[str], num_image_tokens: int, initial_loop_steps: int, final_loop_steps: int
    ) -> None:
        """Checks that need the loaded pipeline: layer names, the token index, and the step ranges
        (a loop may run more steps than asked: PNDM runs N + 1 for N)."""
        check_range("capture_steps", self.capture_steps, initial_loop_steps, "initial_steps", self.initial_steps)
        check_range("ip_steps", self.ip_steps, final_loop_steps, "final_steps", self.final_steps)
        check_range("mask_steps", self.mask_steps, final_loop_steps, "final_steps", self.final_steps)
        unknown = [layer for layer in self.layers if layer not in attn2_layers]
        if unknown:
            raise ConfigError(
                f"method.layers has unknown layer(s) {unknown}; the model's attn2 layers are: {list(attn2_layers)}"
            )
        check_tokens(self.token, num_image_tokens)


def token_value(token: object) -> int | tuple[int, ...]:
    """`method.token` as an int, or a tuple of distinct ints for a list (in the given order)."""
    items = [token] if isinstance(token, int) else token
    if isinstance(token, str | bytes | float | bool) or not isinstance(items, Iterable):
        raise ConfigError(f"method.token={token!r} must be a 0-based image-token index or a list of them")
    values = list(items)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"method.token={token!r} must be a 0-based image-token index or a non-empty list of them")
    if any(v < 0 for v in values):
        raise ConfigError(f"method.token={token!r} has negative indices; image tokens are 0-based")
    if len(set(values)) != len(values):
        raise ConfigError(f"method.token={token!r} lists a token twice; list each token once")
    return values[0] if isinstance(token, int) else tuple(values)


def check_tokens(token: int | tuple[int, ...], num_image_tokens: int) -> None:
    """Token indices must exist in the loaded adapter, and a list must leave at least one token out:
    the image-token softmax sums to 1 over all tokens, so their summed map is constant (no mask)."""
    tokens = (token,) if isinstance(token, int) else token
    shown = token if isinstance(token, int) else list(token)
    outside = [t for t in tokens if t >= num_image_tokens]
    if outside:
        raise ConfigError(
            f"method.token={shown} is outside 0..{num_image_tokens - 1} "
            f"(the IP-Adapter has {num_image_tokens} image tokens)"
        )
    if len(tokens) == num_image_tokens and num_image_tokens > 1:
        raise ConfigError(
            f"method.token={shown} lists all {num_image_tokens} image tokens: their attention sums to 1 at "
            "every position, so the summed map is constant; leave at least one token out"
        )
