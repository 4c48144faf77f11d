"""The `runtime:` speed-up keys on MONKEY (--speedups): each against the plain run in interleaved pairs, the
first call's seconds, and how far it moves the images and masks."""

import argparse
import contextlib
import functools
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from benchtools import cpu_model, provenance, timed
from lcm_arch import QUICK, Shapes

from monkey.adapter.sampler import MonkeySampler
from monkey.adapter.settings import MonkeySettings
from monkey.errors import MonkeyError
from throughput.timing import larger_batch, time_parts
from throughput.workload import Workload, build, log, pixels_of

# (name, runtime keys, needs CUDA), cheapest first: the budget drops the compile variants before the rest
# In the order they run, most wanted first, since a device session's budget may end the list: two cheap
# keys that may close the gap to the goal (cuDNN's algorithm search; flash attention, which had no kernel
# while the backend also held for the fp32 VAE), then the compile modes (never measured on a GPU), then
# the rest
SPEEDUP_VARIANTS: list[tuple[str, dict[str, Any], bool]] = [
    ("cudnn_benchmark", {"cudnn_benchmark": True}, True),
    ("sdpa_backend=flash", {"sdpa_backend": "flash"}, False),
    ("compile=reduce-overhead", {"compile": "reduce-overhead"}, True),  # CUDA graphs per compiled region
    ("compile=default", {"compile": "default"}, False),
    *[(f"sdpa_backend={name}", {"sdpa_backend": name}, False) for name in ("cudnn", "efficient", "math")],
    ("channels_last", {"channels_last": True}, False),
    ("cuda_graphs", {"cuda_graphs": True}, True),
    ("compile=max-autotune-no-cudagraphs", {"compile": "max-autotune-no-cudagraphs"}, True),  # long autotuning
]
COMPILE_RESERVE_S = 150.0  # a compile variant starts only with this much of the budget left (inductor builds)


@contextlib.contextmanager
def speedup_applied(pipe, keys: dict[str, Any], device: torch.device):
    """The runtime keys on a built pipeline, as monkey.models.speedups applies them (load, then around
    each call), and undone on exit; a compiled forward is kept per mode and swapped in, not rebuilt."""
    import torch._dynamo

    from monkey.models import speedups

    chosen = speedups.Speedups(**keys)
    speedups.refuse_cuda_graphs(chosen)
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


COMPILED: dict[str, Any] = {}  # compile mode -> the UNet's compiled forward (its graphs stay warm)


def speedup_applied_call(pipe, keys: dict[str, Any], device: torch.device, fn: Callable[[], Any]) -> Any:
    with speedup_applied(pipe, keys, device):
        return fn()


def measure_speedups(args: argparse.Namespace) -> dict[str, Any]:
    """MONKEY at one batch size under each `runtime:` speed-up key against the plain run, in interleaved
    pairs (plain, variant, variant, plain, ...): time per call, the first call's seconds (compilation),
    and how far the images and masks move. Variants the device lacks or the budget leaves no room for are
    listed with the reason."""
    start = time.perf_counter()
    quick = args.quick
    device = torch.device("cpu" if quick else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run --speedups with --quick on a CPU")
    dtype = (
        torch.float32
        if quick
        else {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(args.dtype, torch.float32)
    )
    vae_dtype = torch.float32 if dtype == torch.float16 else dtype
    shapes, size = (QUICK, 64) if quick else (Shapes(), args.size)
    batch_size = 2 if quick else args.speedups_batch
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    load_start = os.getloadavg()
    pipe = build(shapes, device, dtype, vae_dtype, "monkey-speedups-")
    sampler = MonkeySampler(pipe, MonkeySettings())
    work = Workload(pipe, sampler, shapes, batch_size, size, device)

    def monkey() -> Any:
        output = sampler(work.batch)
        return output.images, output.image_masks

    plain_images, plain_masks = monkey()  # warm-up, and the reference images
    plain_pixels = pixels_of(plain_images)
    larger = larger_batch(pipe, sampler, shapes, 4 if quick else args.larger_batch, size, device)
    parts = time_parts(pipe, sampler, work, device, 1 if quick else 3, bf16_vae=True)  # where the time goes
    deadline = start + args.budget_s
    results: list[dict[str, Any]] = []
    for variant, keys, needs_cuda in SPEEDUP_VARIANTS:
        left = deadline - time.perf_counter()
        entry: dict[str, Any] = {"variant": variant, "keys": keys}
        if needs_cuda and device.type != "cuda" and variant != "cuda_graphs":
            results.append({**entry, "skipped": "needs a CUDA device"})
            continue
        needed = 0.0 if "cuda_graphs" in keys else COMPILE_RESERVE_S if "compile" in keys else 15.0  # a refusal: 0 s
        if needed and left < needed:
            results.append({**entry, "skipped": f"budget: {left:.0f} s left of {args.budget_s:.0f} s"})
            log(f"speed-up {variant}: skipped, {results[-1]['skipped']}")
            continue
        variant_call = functools.partial(speedup_applied_call, pipe, keys, device, monkey)
        try:
            first = time.perf_counter()
            with speedup_applied(pipe, keys, device):
                images, masks = monkey()
            entry["first_call_s"] = time.perf_counter() - first
            if "compile" in keys:  # some graphs are only built on the second call (CPU: 8.8 s of 0.9 s)
                entry["second_call_s"] = timed(variant_call, device)
        except (RuntimeError, MonkeyError) as err:  # a refusal, or no kernel of that backend here
            results.append({**entry, "error": " ".join(str(err).split())[:400]})
            log(f"speed-up {variant}: {results[-1]['error']}")
            continue
        plain_s: list[float] = []
        variant_s: list[float] = []
        for index in range(args.speedup_pairs):
            for which in ("plain", "variant") if index % 2 == 0 else ("variant", "plain"):
                if which == "plain":
                    plain_s.append(timed(monkey, device))
                else:
                    variant_s.append(timed(variant_call, device))
        ratio = statistics.median(v / p for v, p in zip(variant_s, plain_s, strict=True))
        results.append(
            {
                **entry,
                "batch_size": batch_size,
                "plain_s": plain_s,
                "variant_s": variant_s,
                "variant_over_plain": ratio,
                "plain_images_per_s": batch_size / statistics.median(plain_s),
                "variant_images_per_s": batch_size / statistics.median(variant_s),
                "max_pixel_difference": int(abs(pixels_of(images) - plain_pixels).max()),
                "masks_equal": bool(torch.equal(masks.cpu(), plain_masks.cpu())),
            }
        )
        log(
            f"speed-up {variant}: {ratio:.3f} x the plain time (first call {entry['first_call_s']:.1f} s), "
            f"pixels move by up to {results[-1]['max_pixel_difference']}, masks equal {results[-1]['masks_equal']}"
        )
    return {
        **provenance(device, load_start),
        "quick": quick,
        "device": str(device),
        "device_name": name,
        "settings": {
            "size": size,
            "dtype": str(dtype).removeprefix("torch."),
            "vae_dtype": str(vae_dtype).removeprefix("torch."),
            "batch_size": batch_size,
            "pairs": args.speedup_pairs,
            "budget_s": args.budget_s,
            "shapes": asdict(shapes),
        },
        "variants": results,
        "larger_batch": larger,
        "parts": parts,
        "wall_s": time.perf_counter() - start,
    }
