"""The `runtime:` speed-up keys on MONKEY (--speedups): each against the plain run in interleaved pairs, the
first call's seconds, and how far it moves the images and masks."""

import argparse
import contextlib
import copy
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from benchtools import timed
from lcm_arch import QUICK, Shapes

from monkey.adapter.sampler import MonkeySampler
from monkey.adapter.settings import MonkeySettings
from monkey.errors import MonkeyError
from monkey.models.profiles import DTYPES  # the harness's names of the three precisions
from throughput.device_run import DeviceRun
from throughput.preset import IMAGE_BOUND, choose_preset, preset_overrides, within_bound
from throughput.timing import larger_batch, time_parts
from throughput.workload import Workload, build, log, pixels_of


# (name, keys, needs CUDA), in the order they run, most wanted first, since a device session's budget may
# end the list: cuDNN's algorithm search (cheap), CUDA graphs through compile (the likeliest large gain,
# never measured on a GPU), the cheap keys that may close the gap to the goal (flash attention inside the
# UNet; a bfloat16 VAE; a larger batch), the other compile mode, then the rest. `vae_dtype` is
# `runtime.vae_dtype`; `batch_size` is `generation.batch_size`
# (that variant's images are the first of a larger batch whose first items are the plain batch's)
def speedup_variants(larger: int) -> list[tuple[str, dict[str, Any], bool]]:
    return [
        ("cudnn_benchmark", {"cudnn_benchmark": True}, True),
        ("compile=reduce-overhead", {"compile": "reduce-overhead"}, True),  # CUDA graphs per compiled region
        ("sdpa_backend=flash", {"sdpa_backend": "flash"}, False),
        ("vae_dtype=bfloat16", {"vae_dtype": "bfloat16"}, False),
        (f"batch_size={larger}", {"batch_size": larger}, False),
        ("compile=default", {"compile": "default"}, False),
        *[(f"sdpa_backend={name}", {"sdpa_backend": name}, False) for name in ("cudnn", "efficient", "math")],
        ("channels_last", {"channels_last": True}, False),
        ("cuda_graphs", {"cuda_graphs": True}, True),
        ("compile=max-autotune-no-cudagraphs", {"compile": "max-autotune-no-cudagraphs"}, True),  # long autotuning
    ]


SPEEDUP_VARIANTS = speedup_variants(32)
COMPILE_RESERVE_S = 150.0  # a compile variant starts only with this much of the budget left (inductor builds)


@contextlib.contextmanager
def speedup_applied(pipe, keys: dict[str, Any], device: torch.device):
    """The runtime keys on a built pipeline, as monkey.models.speedups applies them (load, then around
    each call), and undone on exit; a compiled forward is kept per mode and swapped in, not rebuilt. A
    `vae_dtype` swaps in a copy of the VAE in that precision, as `runtime.vae_dtype` loads it. (The
    `batch_size` key is the caller's: it picks the workload.)"""
    import torch._dynamo

    from monkey.models import speedups

    chosen = speedups.Speedups(**{key: value for key, value in keys.items() if key in speedups.KEYS})
    speedups.refuse_cuda_graphs(chosen)
    vae = pipe.vae
    if "vae_dtype" in keys:
        pipe.vae = vae_in(pipe, DTYPES[keys["vae_dtype"]])
    if chosen.channels_last:
        for module in (pipe.unet, pipe.vae):
            module.to(memory_format=torch.channels_last)
    if chosen.compile is not None:
        compiled = COMPILED.get(chosen.compile)
        if compiled is None:
            torch._dynamo.reset()  # another mode's graphs would count against this one's recompile limit
            COMPILED.clear()
            speedups.compile_unet_forward(pipe.unet, chosen.compile)
            COMPILED[chosen.compile] = pipe.unet.forward
        else:
            pipe.unet.forward = compiled
    hooks = speedups.attach_sdpa_backend(pipe.unet, chosen.sdpa_backend)
    try:
        with speedups.sampling(chosen, device):
            yield
    finally:
        for hook in hooks:
            hook.remove()
        vars(pipe.unet).pop("forward", None)  # the class's eager forward again
        for module in (pipe.unet, pipe.vae):
            module.to(memory_format=torch.contiguous_format)
        pipe.vae = vae


COMPILED: dict[str, Any] = {}  # compile mode -> the UNet's compiled forward (its graphs stay warm)
VAE_COPIES: dict[tuple[int, torch.dtype], torch.nn.Module] = {}  # (pipeline id, dtype) -> its VAE in that dtype


def vae_in(pipe, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of the pipeline's VAE in `dtype`, with the harness's precision hooks for that dtype
    (monkey.models.vae_precision.keep_vae_in: inputs cast to it, latents back to the UNet's dtype)."""
    key = (id(pipe), dtype)
    if key not in VAE_COPIES:
        from monkey.models.vae_precision import keep_vae_in

        copy_ = copy.deepcopy(pipe.vae)
        for module in copy_.modules():  # the fp32 hooks of the original would cast back
            module._forward_pre_hooks.clear()
            module._forward_hooks.clear()
        keep_vae_in(copy_, dtype, pipe.unet.dtype)
        VAE_COPIES[key] = copy_
    return VAE_COPIES[key]


class KeyBench:
    """MONKEY on one warm pipeline, plain and under a variant's keys, with the plain images to compare."""

    def __init__(self, pipe, sampler: MonkeySampler, work: Workload, shapes: Shapes, device: torch.device):
        self.pipe, self.sampler, self.work, self.shapes, self.device = pipe, sampler, work, shapes, device
        self.workloads = {len(work.batch): work}
        self.plain_images, self.plain_masks = self.plain()  # the warm-up, and the reference images
        self.plain_pixels = pixels_of(self.plain_images)

    def workload(self, keys: dict[str, Any]) -> Workload:
        """The plain batch, or a larger one whose first items are the plain batch's (`batch_size`)."""
        size = keys.get("batch_size", len(self.work.batch))
        if size not in self.workloads:
            height = self.work.batch.height
            self.workloads[size] = Workload(
                self.pipe, self.sampler, self.shapes, size, height, self.device, first=self.work
            )
        return self.workloads[size]

    def plain(self) -> tuple[list[Any], torch.Tensor]:
        output = self.sampler(self.work.batch)
        return output.images, output.image_masks

    def call(self, keys: dict[str, Any], method: str = "monkey") -> Callable[[], Any]:
        """One call of `method` (monkey or ip_adapter) under the keys; MONKEY's returns images and masks."""
        work = self.workload(keys)

        def run() -> Any:
            with speedup_applied(self.pipe, keys, self.device):
                if method == "ip_adapter":
                    return work.ip_adapter()
                output = self.sampler(work.batch)
                return output.images, output.image_masks

        return run

    def measure(self, entry: dict[str, Any], pairs: int) -> dict[str, Any]:
        """The variant's first call(s), then `pairs` interleaved (plain, variant) pairs: seconds per image
        against the plain run's, and how far its first images and masks are from the plain ones."""
        keys = entry["keys"]
        call = self.call(keys)
        first = time.perf_counter()
        images, masks = call()
        entry["first_call_s"] = time.perf_counter() - first
        if "compile" in keys:  # some graphs are only built on the second call (CPU: 8.8 s of 0.9 s)
            entry["second_call_s"] = timed(call, self.device)
        plain_s: list[float] = []
        variant_s: list[float] = []
        for index in range(pairs):
            for which in ("plain", "variant") if index % 2 == 0 else ("variant", "plain"):
                if which == "plain":
                    plain_s.append(timed(self.plain, self.device))
                else:
                    variant_s.append(timed(call, self.device))
        batch, variant_batch = len(self.work.batch), len(self.workload(keys).batch)
        # per image: a larger batch's call makes more images
        ratio = statistics.median((v / variant_batch) / (p / batch) for v, p in zip(variant_s, plain_s, strict=True))
        return {
            **entry,
            "batch_size": batch,
            "variant_batch_size": variant_batch,
            "plain_s": plain_s,
            "variant_s": variant_s,
            "variant_over_plain": ratio,
            "plain_images_per_s": batch / statistics.median(plain_s),
            "variant_images_per_s": variant_batch / statistics.median(variant_s),
            **image_distance(pixels_of(images[:batch]), self.plain_pixels, masks[:batch], self.plain_masks),
        }

    def against_ip_adapter(self, keys: dict[str, Any], rounds: int) -> dict[str, Any]:
        """MONKEY and IP-Adapter both under `keys`, in alternating order: the issue's ratio in one run."""
        calls = {"monkey": self.call(keys), "ip_adapter": self.call(keys, "ip_adapter")}
        for fn in calls.values():
            fn()  # warm-up (a compiled mode builds IP-Adapter's graphs here)
        seconds: dict[str, list[float]] = {name: [] for name in calls}
        for index in range(rounds):
            for name in ("monkey", "ip_adapter") if index % 2 == 0 else ("ip_adapter", "monkey"):
                seconds[name].append(timed(calls[name], self.device))
        batch = len(self.workload(keys).batch)
        return {
            "batch_size": batch,
            "seconds": seconds,
            "monkey_images_per_s": batch / statistics.median(seconds["monkey"]),
            "ip_adapter_images_per_s": batch / statistics.median(seconds["ip_adapter"]),
            "monkey_over_ip_adapter": statistics.median(
                m / i for m, i in zip(seconds["monkey"], seconds["ip_adapter"], strict=True)
            ),
        }


def image_distance(pixels: Any, plain_pixels: Any, masks: torch.Tensor, plain_masks: torch.Tensor) -> dict[str, Any]:
    """How far a variant's images ([n, H, W, 3], 0-255) and masks are from the plain run's."""
    difference = abs(pixels - plain_pixels)
    masks, plain_masks = masks.cpu(), plain_masks.cpu()
    return {
        "max_pixel_difference": int(difference.max()),
        "mean_pixel_difference": float(difference.mean()),
        "masks_equal": bool(torch.equal(masks, plain_masks)),
        "mask_cells_differing": float((masks != plain_masks).float().mean()),
    }


def measure_speedups(args: argparse.Namespace) -> dict[str, Any]:
    """MONKEY at one batch size under each speed-up key against the plain run, in interleaved pairs
    (plain, variant, variant, plain, ...): time per image, the first call's seconds (compilation), and
    how far the images and masks move. Variants the device lacks or the budget leaves no room for are
    listed with the reason. Then the fastest keys within the image bound, together, as the GPU preset:
    measured against the plain run and, under the same keys, against IP-Adapter."""
    start = time.perf_counter()
    run = DeviceRun.from_args(args, "no CUDA device: run --speedups with --quick on a CPU")
    quick, device, dtype, vae_dtype = run.quick, run.device, run.dtype, run.vae_dtype
    shapes, size = (QUICK, 64) if quick else (Shapes(), args.size)
    batch_size = 2 if quick else args.speedups_batch
    larger_size = 4 if quick else args.larger_batch
    load_start = os.getloadavg()
    pipe = build(shapes, device, dtype, vae_dtype, "monkey-speedups-")
    sampler = MonkeySampler(pipe, MonkeySettings())
    work = Workload(pipe, sampler, shapes, batch_size, size, device)
    bench = KeyBench(pipe, sampler, work, shapes, device)
    plain_larger = larger_size and args.plain_larger  # the three methods at the larger batch, no key
    larger = larger_batch(pipe, sampler, shapes, larger_size, size, device) if plain_larger else None
    parts = time_parts(pipe, sampler, work, device, 1 if quick else 3, bf16_vae=True)  # where the time goes
    deadline = start + args.budget_s
    results: list[dict[str, Any]] = []
    for variant, keys, needs_cuda in speedup_variants(larger_size or 2 * batch_size):
        results.append(try_variant(bench, {"variant": variant, "keys": keys}, needs_cuda, deadline, args))
    preset = measure_preset(bench, results, deadline, args)
    return {
        **run.head(load_start),
        "settings": {
            **run.settings(size),
            "batch_size": batch_size,
            "pairs": args.speedup_pairs,
            "budget_s": args.budget_s,
            "shapes": asdict(shapes),
            "image_bound": IMAGE_BOUND,
        },
        "variants": results,
        "preset": preset,
        "larger_batch": larger,
        "parts": parts,
        "wall_s": time.perf_counter() - start,
    }


def try_variant(
    bench: KeyBench, entry: dict[str, Any], needs_cuda: bool, deadline: float, args: argparse.Namespace
) -> dict[str, Any]:
    """One variant measured, or the reason it was not: no CUDA device, the budget, or its error."""
    keys, variant = entry["keys"], entry["variant"]
    if needs_cuda and bench.device.type != "cuda" and "cuda_graphs" not in keys:
        return {**entry, "skipped": "needs a CUDA device"}
    left = deadline - time.perf_counter()
    needed = 0.0 if "cuda_graphs" in keys else COMPILE_RESERVE_S if "compile" in keys else 15.0  # a refusal: 0 s
    if needed and left < needed:
        log(f"speed-up {variant}: skipped, budget")
        return {**entry, "skipped": f"budget: {left:.0f} s left of {args.budget_s:.0f} s"}
    try:
        result = bench.measure(entry, args.speedup_pairs)
    except (RuntimeError, MonkeyError) as err:  # a refusal, no kernel of that backend here, out of memory
        log(f"speed-up {variant}: {err}")
        return {**entry, "error": " ".join(str(err).split())[:400]}
    finally:
        if bench.device.type == "cuda":
            torch.cuda.empty_cache()
    result["within_bound"] = within_bound(result)
    log(
        f"speed-up {variant}: {result['variant_over_plain']:.3f} x the plain time per image (first call "
        f"{result['first_call_s']:.1f} s), pixels move by up to {result['max_pixel_difference']} (mean "
        f"{result['mean_pixel_difference']:.2f}), masks equal {result['masks_equal']}"
    )
    return result


def measure_preset(
    bench: KeyBench, results: list[dict[str, Any]], deadline: float, args: argparse.Namespace
) -> dict[str, Any]:
    """The keys `choose_preset` picks, together: against the plain run (when they are more than one
    measured key) and against IP-Adapter under the same keys."""
    keys = choose_preset(results)
    preset: dict[str, Any] = {"keys": keys, "overrides": preset_overrides(keys)}
    if not keys:
        return {**preset, "skipped": "no key was faster than the plain run within the image bound"}
    if len(keys) > 1:
        combined = try_variant(bench, {"variant": "preset", "keys": keys}, False, deadline, args)
        preset["combined"] = combined
        if "variant_over_plain" not in combined:
            return {**preset, "skipped": "the combination was not measured: " + combined.get("skipped", "error")}
    if deadline - time.perf_counter() < 15.0:
        return {**preset, "skipped": "budget: no time left for the IP-Adapter comparison"}
    try:
        preset["against_ip_adapter"] = bench.against_ip_adapter(keys, max(2, args.speedup_pairs))
    except (RuntimeError, MonkeyError) as err:
        preset["against_ip_adapter"] = {"error": " ".join(str(err).split())[:400]}
    return preset
