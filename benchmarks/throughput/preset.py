"""The GPU preset: which measured speed-up keys to keep, and the command-line overrides that apply them.

A key is kept only when it is faster than the plain run by more than `MIN_GAIN` and its images stay
within `IMAGE_BOUND` of the plain run's. The bound is on the mean pixel change and on the share of
mask cells that flip, not on the largest pixel change: in half precision another kernel's rounding
can move a few pixels of a diffusion trajectory by many levels while the image stays the same
picture (the batch-independence figure of the throughput record shows the scale). Of the keys of one
axis (one compile mode, one SDPA backend, one batch size) the fastest is kept.
"""

from typing import Any

IMAGE_BOUND = {"mean_pixel_difference": 2.0, "mask_cells_differing": 0.01}  # 0-255 levels; share of cells
MIN_GAIN = 0.02  # faster than the plain run by more than this share of its time per image
# The config key each benchmark key is set by (monkey-bench overrides)
OVERRIDE_KEYS = {
    "compile": "runtime.compile",
    "sdpa_backend": "runtime.sdpa_backend",
    "channels_last": "runtime.channels_last",
    "cudnn_benchmark": "runtime.cudnn_benchmark",
    "vae_dtype": "runtime.vae_dtype",
    "batch_size": "generation.batch_size",
}


def within_bound(result: dict[str, Any], bound: dict[str, float] = IMAGE_BOUND) -> bool:
    """Whether a measured variant's images and masks stay within `bound` of the plain run's."""
    return all(result[name] <= limit for name, limit in bound.items())


def choose_preset(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The keys of the preset: per axis (a benchmark key), the fastest measured variant that gains more
    than MIN_GAIN within the image bound. Variants that were skipped, failed or combine keys count not."""
    best: dict[str, tuple[float, Any]] = {}
    for result in results:
        keys = result["keys"]
        if "variant_over_plain" not in result or len(keys) != 1 or not result.get("within_bound"):
            continue
        ratio = result["variant_over_plain"]
        if ratio >= 1 - MIN_GAIN:
            continue
        ((axis, value),) = keys.items()
        if axis not in best or ratio < best[axis][0]:
            best[axis] = (ratio, value)
    return {axis: best[axis][1] for axis in OVERRIDE_KEYS if axis in best}


def preset_overrides(keys: dict[str, Any]) -> str:
    """`keys` as monkey-bench overrides, e.g. `runtime.cudnn_benchmark=true generation.batch_size=32`."""
    return " ".join(f"{OVERRIDE_KEYS[key]}={str(value).lower()}" for key, value in keys.items())
