"""Throughput of batched MONKEY on the real architecture: images per second, peak memory, fraction of peak.

LCM Dreamshaper v7's architecture with random weights built from configs in code (no download): the SD1.5
UNet with time_cond_proj_dim 256, the SD VAE, a CLIP ViT-L/14 text encoder, h94's SD1.5 IP-Adapter shapes
(4 image tokens from a 1024-d embedding) loaded by `load_ip_adapter`, and the ViT-H/14 image encoder's
shape (timed once per subject, as the harness embeds each subject once). Per batch size (1/4/8/16, every
item its own subject, monkey.item_embeds): IP-Adapter at scale 1 (8 steps), MONKEY (paper settings, pass 1
leaving the UNet at the capture layer) and MONKEY with a shared pass 1 (maps from a cache: pass 2 only),
each decoded to PIL images as the harness does. Then the evaluation stage's backbones with their real shapes
(DINOv2 ViT-B/14 and DINO ViT-S/16 in timm, CLIP ViT-B/32 in open_clip, random weights, fp32 as the harness
scores): images per second through `embed_images` (preprocessing included) and through the models alone.

    python benchmarks/gpu_throughput.py                      # CUDA, 512 px, fp16; finishes within --budget-s
    python benchmarks/gpu_throughput.py --quick --out /tmp/x # CPU, tiny shapes, seconds (the tests run this)
    python benchmarks/gpu_throughput.py --cpu-record         # CPU fp32 256 px MONKEY / IP-Adapter, interleaved
    python benchmarks/gpu_throughput.py --speedups --budget-s 420   # CUDA: each runtime speed-up key on MONKEY

Each run updates its own section of results/benchmarks/gpu_throughput.json (`throughput`, `cpu_ratio` or
`speedups`)
and keeps the other, then rewrites gpu_throughput.md from both. The time budget covers model construction
and warm-up; batch sizes that would not fit are skipped and listed in the record.
"""

import argparse
import contextlib
import copy
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from benchtools import cpu_model, provenance, sync, timed
from lcm_arch import QUICK, Shapes, build_image_encoder, build_pipeline
from torch.utils.flop_counter import FlopCounterMode

from monkey.adapter.sampler import MonkeySampler, SubjectBatch
from monkey.adapter.settings import MonkeySettings
from monkey.atomic import atomic_write_bytes
from monkey.errors import MonkeyError
from monkey.item_embeds import item_image_embeds

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = ["dog", "cat", "bear plushie", "backpack", "vase", "teapot", "sneaker", "robot toy"]
LOCATIONS = ["in the jungle", "in the snow", "on the beach", "on a cobblestone street", "on top of pink fabric"]
WORDS = " ".join(SUBJECTS + LOCATIONS).split()  # what the benchmark's tokenizer knows
TARGETS = {"monkey_images_per_s": 12.0, "monkey_over_ip_adapter": 1.30}
# Dense fp16/bf16 tensor-core peaks from NVIDIA's data sheets (without sparsity), TFLOP/s, by device name.
SPEC_PEAKS = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---- models -------------------------------------------------------------------------------------------
@torch.no_grad()
def time_image_encoder(encoder: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> float:
    """Seconds per call embedding 8 subject images (the harness embeds each subject once)."""
    pixels = torch.randn(8, 3, 224, 224, device=device, dtype=dtype)
    encoder(pixel_values=pixels)
    return statistics.median(timed(lambda: encoder(pixel_values=pixels), device) for _ in range(3))


# ---- measuring ----------------------------------------------------------------------------------------
def peak_memory_mib(fn: Callable[[], Any], device: torch.device) -> float | None:
    """CUDA allocator peak of one call (None on CPU: the RSS of a shared process says little)."""
    if device.type != "cuda":
        fn()
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def flops_of(fn: Callable[[], Any]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, seconds: float = 1.5) -> float | None:
    """A large dense matmul's rate: what this device reaches in practice (CUDA only)."""
    if device.type != "cuda":
        return None
    n = 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ b
        count += 10
        sync(device)
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e12


def spec_peak(name: str) -> float | None:
    for key, value in SPEC_PEAKS.items():  # "H100 PCIe" before "H100"
        if key in name:
            return value
    return None


# ---- the generation stage -----------------------------------------------------------------------------
class Workload:
    """One batch of B items, each its own subject, and the three ways to make its images."""

    def __init__(self, pipe, sampler: MonkeySampler, shapes: Shapes, batch_size: int, size: int, device):
        self.pipe, self.sampler = pipe, sampler
        generator = torch.Generator().manual_seed(batch_size)
        embeds = torch.randn(batch_size, 1, shapes.image_embed_dim, generator=generator)  # [B, 1, D]
        self.embeds = embeds.to(device, pipe.unet.dtype)
        prompts = [f"{SUBJECTS[i % len(SUBJECTS)]} {LOCATIONS[i % len(LOCATIONS)]}" for i in range(batch_size)]
        self.batch = SubjectBatch(prompts, list(range(batch_size)), self.embeds, size, size)
        self.records = sampler.record(self.batch).records  # what a shared pass 1 finds in its cache (untimed)

    def ip_adapter(self) -> Any:
        s = self.sampler.settings
        self.pipe.set_ip_adapter_scale(1.0)
        with item_image_embeds(self.pipe.unet, self.embeds, guided=False) as ip_embeds:
            return self.pipe(
                prompt=self.batch.prompts,
                height=self.batch.height,
                width=self.batch.width,
                num_inference_steps=s.final_steps,
                guidance_scale=s.guidance_scale,
                generator=self.batch.generators(),
                ip_adapter_image_embeds=ip_embeds,
                output_type="pil",
            ).images

    def monkey(self) -> Any:
        return self.sampler(self.batch).images

    def monkey_shared_pass1(self) -> Any:
        return self.sampler(self.batch, records=self.records).images

    def methods(self) -> dict[str, Callable[[], Any]]:
        return {"ip_adapter": self.ip_adapter, "monkey": self.monkey, "monkey_shared_pass1": self.monkey_shared_pass1}


@torch.no_grad()
def batch_independence(pipe, sampler: MonkeySampler, shapes: Shapes, size: int, device) -> dict[str, Any]:
    """Item 0 of a 4-subject batch against the same item alone, in this run's precision: how far the
    neighbours move its final latents (float rounding only, when the per-item embeddings are right)."""
    mixed = Workload(pipe, sampler, shapes, 4, size, device)
    alone = SubjectBatch(mixed.batch.prompts[:1], mixed.batch.seeds[:1], mixed.embeds[:1], size, size)
    together = sampler(mixed.batch, output_type="latent")
    single = sampler(alone, output_type="latent")
    other = SubjectBatch(mixed.batch.prompts[:1], mixed.batch.seeds[:1], mixed.embeds[1:2], size, size)
    swapped = sampler(other, output_type="latent")  # the same prompt and seed with another subject
    return {
        "max_abs_latent_difference": float((together.images[0] - single.images[0]).abs().max()),
        "mask_equal": bool(torch.equal(together.image_masks[0], single.image_masks[0])),
        "another_subject_max_abs_latent_difference": float((swapped.images[0] - single.images[0]).abs().max()),
        "latent_abs_max": float(single.images[0].abs().max()),
    }


def unet_evaluations(pipe, fn: Callable[[], Any]) -> int:
    """UNet evaluations started during `fn` (an early-exited one counts as started)."""
    count = [0]
    handle = pipe.unet.register_forward_pre_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    try:
        fn()
    finally:
        handle.remove()
    return count[0]


def measure_batch(work: Workload, rounds: int, device: torch.device) -> dict[str, Any]:
    methods = work.methods()
    peaks = {name: peak_memory_mib(fn, device) for name, fn in methods.items()}  # also the warm-up
    times: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for index in range(rounds):  # rotate the order, so drifting load or clocks hit every method alike
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            times[name].append(timed(methods[name], device))
    batch = len(work.batch)
    result: dict[str, Any] = {"batch_size": batch, "rounds": rounds}
    for name in names:
        median = statistics.median(times[name])
        result[name] = {
            "seconds": times[name],
            "median_s": median,
            "images_per_s": batch / median,
            "peak_memory_mib": peaks[name],
        }
    result["monkey_over_ip_adapter"] = statistics.median(
        m / i for m, i in zip(times["monkey"], times["ip_adapter"], strict=True)
    )
    result["shared_over_ip_adapter"] = statistics.median(
        m / i for m, i in zip(times["monkey_shared_pass1"], times["ip_adapter"], strict=True)
    )
    return result


def flop_profile(pipe, sampler: MonkeySampler, shapes: Shapes, size: int, device) -> dict[str, Any]:
    """FLOPs per image (batch 1) of each way, and of one UNet evaluation whole and cut at the capture layer."""
    work = Workload(pipe, sampler, shapes, 1, size, device)
    text = sampler.encode_text(work.batch)
    unet_full = flops_of(
        lambda: pipe(
            **sampler.call_kwargs(work.batch, text),
            ip_adapter_image_embeds=[work.embeds],
            num_inference_steps=1,
            output_type="latent",
        )
    )
    text_flops = flops_of(lambda: sampler.encode_text(work.batch))
    cut = MonkeySampler(pipe, MonkeySettings(capture_steps=(0,), initial_steps=sampler.settings.initial_steps))
    unet_cut = flops_of(lambda: cut.record(work.batch, text))
    per_image = {name: flops_of(fn) for name, fn in work.methods().items()}
    evaluations = unet_evaluations(pipe, work.monkey)
    s = sampler.settings
    cut_fraction = unet_cut / unet_full
    return {
        "unet_evaluation_flops": unet_full,
        "unet_evaluation_cut_at_capture_layer_flops": unet_cut,
        "cut_fraction": cut_fraction,
        "text_encoder_flops": text_flops,
        "per_image_flops": per_image,
        "monkey_unet_evaluations_started": evaluations,
        "monkey_unet_evaluation_equivalents": s.last_capture_step + cut_fraction + s.final_steps,
        "note": "FLOPs counted by torch.utils.flop_counter (matmuls, convolutions, attention); UNet FLOPs of a "
        "1-step call include nothing else but the scheduler step",
    }


# ---- the speed-up keys (--speedups) --------------------------------------------------------------------
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


def pixels_of(images: list[Any]) -> Any:
    import numpy as np

    return np.stack([np.asarray(image, dtype=np.int16) for image in images])  # [n, H, W, 3], 0..255


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
    with tempfile.TemporaryDirectory(prefix="monkey-speedups-") as folder:
        pipe = build_pipeline(Path(folder), shapes, device, dtype, vae_dtype, WORDS)
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


def larger_batch(pipe, sampler: MonkeySampler, shapes: Shapes, batch_size: int, size: int, device) -> dict[str, Any]:
    """The three methods without speed-up keys at a batch above the throughput run's largest (16 there):
    a warm-up with the peak memory, then 2 rotating rounds. Whether a fuller GPU alone reaches the goal."""
    try:
        result = measure_batch(Workload(pipe, sampler, shapes, batch_size, size, device), 2, device)
    except torch.OutOfMemoryError as err:
        log(f"batch {batch_size}: out of memory")
        return {"batch_size": batch_size, "error": " ".join(str(err).split())[:300]}
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the compile variants after it start from the batch-16 footprint
    log(
        f"batch {batch_size}: IP-Adapter {result['ip_adapter']['images_per_s']:.2f} img/s, MONKEY "
        f"{result['monkey']['images_per_s']:.2f} img/s; peak {result['monkey']['peak_memory_mib']} MiB"
    )
    return result


# ---- the evaluation stage -----------------------------------------------------------------------------
def eval_backbones(quick: bool, device: torch.device) -> list[Any]:
    """The harness's backbone classes around the real architectures with random weights (tiny in --quick)."""
    import open_clip
    import timm
    from monkey.eval.backbones import BackboneSpec, OpenClipBackbone, TimmBackbone, load_backbone

    tiny_vit = {"embed_dim": 32, "depth": 2, "num_heads": 2}
    backbones = []
    for key, name in (("dino", "vit_base_patch14_dinov2.lvd142m"), ("dino_v1", "vit_small_patch16_224.dino")):
        spec = BackboneSpec(key=key, kind="timm", model_name=name, image_metric=key)
        with torch.device(device):
            model = timm.create_model(
                name, pretrained=False, num_classes=0, img_size=224, **(tiny_vit if quick else {})
            )
        backbones.append(TimmBackbone(spec, model, device, 32))
    clip = BackboneSpec(
        key="clip",
        kind="open_clip",
        model_name="ViT-B-32",
        image_metric="clip_i",
        text_metric="clip_t",
        force_quick_gelu=True,
    )
    if quick:
        tiny = {
            "embed_dim": 16,
            "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "patch_size": 32, "head_width": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
        }
        backbones.append(load_backbone(replace(clip, tiny=tiny), str(device), 32))
    else:
        model, _, transform = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None, force_quick_gelu=True)
        backbones.append(OpenClipBackbone(clip, model, device, 32, transform, open_clip.get_tokenizer("ViT-B-32")))
    return backbones


def measure_eval(quick: bool, device: torch.device, images: list[Any], rounds: int) -> dict[str, Any]:
    backbones = eval_backbones(quick, device)
    pixels = {b.spec.key: torch.stack([b.preprocess(image) for image in images]).to(device) for b in backbones}

    def models_only() -> None:
        with torch.no_grad():
            for backbone in backbones:
                backbone.encode_pixels(pixels[backbone.spec.key])

    def end_to_end() -> None:
        for backbone in backbones:
            backbone.embed_images(images)

    models_only(), end_to_end()  # warm-up
    model_s = statistics.median(timed(models_only, device) for _ in range(rounds))
    total_s = statistics.median(timed(end_to_end, device) for _ in range(rounds))
    return {
        "backbones": [f"{b.spec.key}: {b.spec.model_name}" for b in backbones],
        "images": len(images),
        "batch_size": 32,
        "dtype": "float32 (as the harness scores)",
        "embed_images_per_s": len(images) / total_s,
        "models_only_images_per_s": len(images) / model_s,
        "note": "embed_images includes the harness's CPU preprocessing (resize, crop, normalise) of 512 px PIL "
        "images; one image is embedded by all three backbones",
    }


# ---- runs ---------------------------------------------------------------------------------------------
def throughput(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    quick = args.quick
    device = torch.device("cpu" if quick else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --quick (CPU, tiny shapes) or --cpu-record")
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]
    if quick:
        dtype = torch.float32
    vae_dtype = torch.float32 if dtype == torch.float16 else dtype
    shapes = QUICK if quick else Shapes()
    size = 64 if quick else args.size
    sizes = [1, 2] if quick else args.batch_sizes
    rounds = 1 if quick else args.rounds
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    log(f"device {name}; building the {'tiny' if quick else 'LCM Dreamshaper v7'} architecture ({dtype}) ...")
    with tempfile.TemporaryDirectory(prefix="monkey-gpu-throughput-") as folder:
        pipe = build_pipeline(Path(folder), shapes, device, dtype, vae_dtype, WORDS)
    sampler = MonkeySampler(pipe, MonkeySettings())
    log(f"built in {time.perf_counter() - start:.1f} s")

    encoder_s = time_image_encoder(build_image_encoder(shapes, device, dtype), device, dtype)
    flops = flop_profile(pipe, sampler, shapes, size, device)
    log(
        f"UNet evaluation {flops['unet_evaluation_flops'] / 1e12:.3f} TFLOP; MONKEY "
        f"{flops['monkey_unet_evaluation_equivalents']:.3f} evaluation equivalents per image"
    )
    measured_peak = matmul_peak_tflops(device, dtype)
    sheet_peak = spec_peak(name)

    results, skipped, previous = [], [], None
    for batch_size in sizes:
        elapsed = time.perf_counter() - start
        if previous is not None:
            per_call = sum(previous[m]["median_s"] for m in ("ip_adapter", "monkey", "monkey_shared_pass1"))
            estimate = 1.3 * per_call * (rounds + 1) * batch_size / previous["batch_size"] + 5
            if elapsed + estimate + args.reserve_s > args.budget_s:
                skipped.append(
                    {
                        "batch_size": batch_size,
                        "reason": f"budget: {elapsed:.0f} s spent, about "
                        f"{estimate:.0f} s needed, {args.budget_s:.0f} s allowed",
                    }
                )
                log(f"skipping batch size {batch_size}: {skipped[-1]['reason']}")
                continue
        work = Workload(pipe, sampler, shapes, batch_size, size, device)
        result = measure_batch(work, rounds, device)
        per_image = flops["per_image_flops"]
        for method in ("ip_adapter", "monkey", "monkey_shared_pass1"):
            achieved = per_image[method] * result[method]["images_per_s"] / 1e12
            result[method]["achieved_tflops"] = achieved
            result[method]["fraction_of_sheet_peak"] = achieved / sheet_peak if sheet_peak else None
            result[method]["fraction_of_measured_matmul_peak"] = achieved / measured_peak if measured_peak else None
        results.append(result)
        previous = result
        log(
            f"batch {batch_size}: IP-Adapter {result['ip_adapter']['images_per_s']:.2f} img/s, MONKEY "
            f"{result['monkey']['images_per_s']:.2f} img/s, shared pass 1 "
            f"{result['monkey_shared_pass1']['images_per_s']:.2f} img/s; MONKEY / IP-Adapter "
            f"{result['monkey_over_ip_adapter']:.3f}; peak {result['monkey']['peak_memory_mib']} MiB"
        )
    independence = batch_independence(pipe, sampler, shapes, size, device)
    log(f"batch independence: {independence}")
    del pipe, sampler
    if device.type == "cuda":
        torch.cuda.empty_cache()

    evaluation = None
    if time.perf_counter() - start + 20 < args.budget_s or quick:
        from PIL import Image

        generator = torch.Generator().manual_seed(3)
        count = 8 if quick else 64
        pictures = [
            Image.fromarray((torch.rand(512, 512, 3, generator=generator) * 255).byte().numpy()) for _ in range(count)
        ]
        evaluation = measure_eval(quick, device, pictures, 1 if quick else 3)
        log(
            f"evaluation: {evaluation['embed_images_per_s']:.1f} img/s end to end, "
            f"{evaluation['models_only_images_per_s']:.1f} img/s models only"
        )
    else:
        skipped.append({"stage": "evaluation", "reason": "budget"})

    best = max(results, key=lambda r: r["monkey"]["images_per_s"]) if results else None
    verdict = None
    if best is not None:
        verdict = {
            "best_batch_size": best["batch_size"],
            "monkey_images_per_s": {
                "target": TARGETS["monkey_images_per_s"],
                "value": best["monkey"]["images_per_s"],
                "pass": best["monkey"]["images_per_s"] >= TARGETS["monkey_images_per_s"],
            },
            "monkey_over_ip_adapter": {
                "target": TARGETS["monkey_over_ip_adapter"],
                "value": best["monkey_over_ip_adapter"],
                "pass": best["monkey_over_ip_adapter"] <= TARGETS["monkey_over_ip_adapter"],
            },
            "dreambooth_grid_3160_images_minutes": 3160 / best["monkey"]["images_per_s"] / 60,
        }
    return {
        **provenance(device),
        "quick": quick,
        "device": str(device),
        "device_name": name,
        "settings": {
            "size": size,
            "dtype": str(dtype).removeprefix("torch."),
            "vae_dtype": str(vae_dtype).removeprefix("torch."),
            "batch_sizes": sizes,
            "rounds": rounds,
            "budget_s": args.budget_s,
            "shapes": asdict(shapes),
            "monkey": {k: getattr(MonkeySettings(), k) for k in MonkeySettings.__dataclass_fields__},
            "ip_adapter": {"scale": 1.0, "steps": MonkeySettings().final_steps},
        },
        "peak": {
            "sheet_tflops": sheet_peak,
            "sheet_note": "NVIDIA data-sheet dense fp16/bf16 tensor-core peak without sparsity, by device name",
            "measured_matmul_tflops": measured_peak,
            "measured_note": "8192^3 matmuls in the run's dtype for 1.5 s",
        },
        "image_encoder_subjects_per_s": 8 / encoder_s,
        "flops": flops,
        "batches": results,
        "batch_independence": independence,
        "skipped": skipped,
        "evaluation": evaluation,
        "targets": verdict,
        "wall_s": time.perf_counter() - start,
    }


def cpu_ratio(args: argparse.Namespace) -> dict[str, Any]:
    """CPU fp32, real shapes, batch 1: MONKEY (early exit), MONKEY without it and IP-Adapter, interleaved."""
    device = torch.device("cpu")
    torch.set_flush_denormal(True)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="monkey-cpu-ratio-") as folder:
        pipe = build_pipeline(Path(folder), Shapes(), device, torch.float32, torch.float32, WORDS)
    sampler = MonkeySampler(pipe, MonkeySettings())
    whole = MonkeySampler(pipe, MonkeySettings(), early_exit=False)
    work = Workload(pipe, sampler, Shapes(), 1, args.cpu_size, device)
    methods = {
        "ip_adapter": work.ip_adapter,
        "monkey": work.monkey,
        "monkey_no_early_exit": lambda: whole(work.batch).images,
    }
    for fn in methods.values():
        fn()  # warm-up
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(args.pairs):
        order = names[index % 3 :] + names[: index % 3]
        for name in order:
            times[name].append(timed(methods[name], device))
        log(f"round {index + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names))
    ratio = statistics.median(m / i for m, i in zip(times["monkey"], times["ip_adapter"], strict=True))
    ratio_whole = statistics.median(
        m / i for m, i in zip(times["monkey_no_early_exit"], times["ip_adapter"], strict=True)
    )
    return {
        **provenance(device, load_start),
        "settings": {"size": args.cpu_size, "dtype": "float32", "batch_size": 1, "rounds": args.pairs},
        "seconds": times,
        "median_s": {name: statistics.median(values) for name, values in times.items()},
        "monkey_over_ip_adapter": ratio,
        "monkey_no_early_exit_over_ip_adapter": ratio_whole,
        "target": {"value": 1.30, "pass": ratio <= 1.30},
    }


def time_parts(
    pipe, sampler: MonkeySampler, work: Workload, device: torch.device, rounds: int, bf16_vae: bool
) -> dict[str, Any]:
    """MONKEY's parts, each timed on its own in rotating rounds: prompt encoding, pass 1 (to the capture
    layer), the mask maths, pass 2 to latents, the VAE decode with PIL; beside them IP-Adapter's whole call.
    With `bf16_vae` also the decode by a bfloat16 copy of the VAE (`runtime.vae_dtype=bfloat16`), to show
    what the fp32 VAE under an fp16 UNet costs and how far it moves the pixels. Pass 1 is also given in
    pass-2 steps."""
    batch, text = work.batch, sampler.encode_text(work.batch)
    records = sampler.record(batch, text).records
    masks = sampler.masks(records, batch)[1]
    latents = sampler.final(batch, masks, text, output_type="latent") / pipe.vae.config.scaling_factor

    def decode(vae: torch.nn.Module) -> Any:
        return pipe.image_processor.postprocess(vae.decode(latents.to(vae.dtype)).sample.float(), output_type="pil")

    parts: dict[str, Callable[[], Any]] = {
        "text_encoder": lambda: sampler.encode_text(batch),
        "pass1_to_capture_layer": lambda: sampler.record(batch, text),
        "mask_maths": lambda: sampler.masks(records, batch),
        "pass2_to_latents": lambda: sampler.final(batch, masks, text, output_type="latent"),
        "vae_decode_and_pil": lambda: decode(pipe.vae),
        "ip_adapter_call": work.ip_adapter,
    }
    bf16_pixel_difference = None
    if bf16_vae:
        vae_bf16 = copy.deepcopy(pipe.vae).to(torch.bfloat16)
        for module in vae_bf16.modules():  # the copy's precision hooks would cast back to fp32
            module._forward_pre_hooks.clear()
            module._forward_hooks.clear()
        parts["vae_decode_bf16_and_pil"] = lambda: decode(vae_bf16)
        with torch.no_grad():
            bf16_pixel_difference = int(abs(pixels_of(decode(vae_bf16)) - pixels_of(decode(pipe.vae))).max())
    names = list(parts)
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.no_grad():
        for name in names[4:]:
            parts[name]()  # warm-up of what the sampler calls above did not run
        for index in range(rounds):
            order = names[index % len(names) :] + names[: index % len(names)]
            for name in order:
                times[name].append(timed(parts[name], device))
            log(f"round {index + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names))
    median = {name: statistics.median(values) for name, values in times.items()}
    monkey = sum(median[n] for n in names[:5])
    return {
        "batch_size": len(batch),
        "rounds": rounds,
        "seconds": times,
        "median_s": median,
        "monkey_sum_of_parts_s": monkey,
        "monkey_sum_over_ip_adapter": monkey / median["ip_adapter_call"],
        # in pass 2's evaluations (a 1-step call is no unit: its timing stood apart from the loop's steps)
        "pass1_in_unet_evaluations": median["pass1_to_capture_layer"]
        / (median["pass2_to_latents"] / sampler.settings.final_steps),
        "mask_maths_share_of_monkey": median["mask_maths"] / monkey,
        "vae_share_of_monkey": median["vae_decode_and_pil"] / monkey,
        "vae_bf16_max_pixel_difference": bf16_pixel_difference,  # 0-255 levels against the fp32 VAE's images
    }


def cpu_breakdown(args: argparse.Namespace) -> dict[str, Any]:
    """Where MONKEY's time goes on a CPU (fp32, real shapes, batch 1): `time_parts`."""
    device = torch.device("cpu")
    torch.set_flush_denormal(True)
    load_start = os.getloadavg()
    shapes, size = (QUICK, 64) if args.quick else (Shapes(), args.cpu_size)  # --quick: tiny, for a smoke run
    with tempfile.TemporaryDirectory(prefix="monkey-cpu-breakdown-") as folder:
        pipe = build_pipeline(Path(folder), shapes, device, torch.float32, torch.float32, WORDS)
    sampler = MonkeySampler(pipe, MonkeySettings())
    work = Workload(pipe, sampler, shapes, 1, size, device)
    parts = time_parts(pipe, sampler, work, device, args.pairs, bf16_vae=False)  # a CPU has no fast bf16 convs
    return {
        **provenance(device, load_start),
        "settings": {"size": size, "dtype": "float32", "batch_size": 1, "rounds": args.pairs, "quick": args.quick},
        **{key: value for key, value in parts.items() if key not in ("batch_size", "rounds")},
    }


# ---- the record ---------------------------------------------------------------------------------------
def markdown(record: dict[str, Any]) -> str:
    lines = ["# Batched MONKEY throughput (benchmarks/gpu_throughput.py)", ""]
    run = record.get("throughput")
    if run is None:
        lines += ["No device run recorded yet: `python benchmarks/gpu_throughput.py` on a CUDA machine.", ""]
    else:
        s, peak, f = run["settings"], run["peak"], run["flops"]
        lines += [
            f"## {'Quick (CPU, tiny shapes)' if run['quick'] else 'Device'} run: {run['device_name']}",
            "",
            f"{run['created']}, commit {run['git_commit']}; torch {run['versions']['torch']} (CUDA "
            f"{run['versions']['cuda']}), diffusers {run['versions']['diffusers']}. LCM Dreamshaper v7 architecture, "
            f"random weights, {s['size']} px, UNet {s['dtype']}, VAE {s['vae_dtype']}; every item its own subject. "
            f"Median of {s['rounds']} rounds in rotating order; wall time of the whole script "
            f"{run['wall_s']:.0f} s (budget {s['budget_s']:.0f} s).",
            "",
            f"Peak assumed: {peak['sheet_tflops']} TFLOP/s (data sheet, dense fp16/bf16); measured 8192^3 matmul "
            f"{_fmt(peak['measured_matmul_tflops'], '.0f')} TFLOP/s. One UNet evaluation: "
            f"{f['unet_evaluation_flops'] / 1e12:.3f} TFLOP per image; cut at the capture layer: "
            f"{f['cut_fraction']:.3f} of it, so MONKEY costs {f['monkey_unet_evaluation_equivalents']:.3f} UNet "
            f"evaluations per image (11 without the early exit).",
            "",
            "| batch | IP-Adapter img/s | MONKEY img/s | MONKEY, shared pass 1 img/s | MONKEY / IP-Adapter | "
            "peak MiB (IP / MONKEY / shared) | MONKEY TFLOP/s | of sheet peak |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for b in run["batches"]:
            ip, mk, sh = b["ip_adapter"], b["monkey"], b["monkey_shared_pass1"]
            lines.append(
                f"| {b['batch_size']} | {ip['images_per_s']:.2f} | {mk['images_per_s']:.2f} | "
                f"{sh['images_per_s']:.2f} | {b['monkey_over_ip_adapter']:.3f} | "
                f"{_fmt(ip['peak_memory_mib'], '.0f')} / "
                f"{_fmt(mk['peak_memory_mib'], '.0f')} / {_fmt(sh['peak_memory_mib'], '.0f')} | "
                f"{mk['achieved_tflops']:.1f} | {_fmt(mk['fraction_of_sheet_peak'], '.1%')} |"
            )
        for skip in run["skipped"]:
            lines.append(f"\nSkipped: {skip}")
        if run.get("speedups"):
            lines += ["", "Speed-ups (images per second, IP-Adapter / MONKEY; one warm-up and 2 timed calls each):", ""]
            lines += ["| variant | batch | IP-Adapter | MONKEY |", "|---|---|---|---|"]
            for v in run["speedups"]:
                if "monkey_images_per_s" in v:
                    lines.append(
                        f"| {v['variant']} | {v['batch_size']} | {v['ip_adapter_images_per_s']:.2f} | "
                        f"{v['monkey_images_per_s']:.2f} |"
                    )
                else:
                    lines.append(f"| {v['variant']} | - | {v.get('error') or v.get('skipped')} | |")
        if run["evaluation"]:
            e = run["evaluation"]
            lines += [
                "",
                f"Evaluation stage ({', '.join(e['backbones'])}; {e['dtype']}): "
                f"{e['embed_images_per_s']:.1f} images/s through embed_images (CPU preprocessing included), "
                f"{e['models_only_images_per_s']:.1f} images/s through the models alone.",
            ]
        lines += ["", f"Subject embeddings (ViT-H/14 shape): {run['image_encoder_subjects_per_s']:.1f} per second."]
        if run.get("batch_independence"):
            ind = run["batch_independence"]
            lines += [
                "",
                f"Batch independence ({s['dtype']}): item 0 of a 4-subject MONKEY batch against the same item alone "
                f"moves its final latents by at most {ind['max_abs_latent_difference']:.2e} (latents up to "
                f"{ind['latent_abs_max']:.2f}; another subject moves them by "
                f"{ind['another_subject_max_abs_latent_difference']:.2e}); mask equal: {ind['mask_equal']}.",
            ]
        if run["targets"]:
            t = run["targets"]
            lines += [
                "",
                f"Targets (best batch {t['best_batch_size']}): MONKEY {t['monkey_images_per_s']['value']:.2f} img/s "
                f"(>= {t['monkey_images_per_s']['target']}: {_mark(t['monkey_images_per_s']['pass'])}), MONKEY / "
                f"IP-Adapter {t['monkey_over_ip_adapter']['value']:.3f} (<= {t['monkey_over_ip_adapter']['target']}: "
                f"{_mark(t['monkey_over_ip_adapter']['pass'])}); the 3,160-image DreamBooth grid in "
                f"{t['dreambooth_grid_3160_images_minutes']:.1f} min.",
            ]
        lines.append("")
    cpu = record.get("cpu_ratio")
    if cpu is not None:
        m, med = cpu["machine"], cpu["median_s"]
        lines += [
            "## CPU: MONKEY / IP-Adapter with the early exit",
            "",
            f"{cpu['created']}, commit {cpu['git_commit']}; {m['processor']}, {m['logical_cpus']} logical CPUs, "
            f"{load_span(m)} (a machine shared with other jobs: absolute "
            f"times are inflated; the three ran in rotating order). Real architecture, random weights, "
            f"{cpu['settings']['size']} px, fp32, batch 1, {cpu['settings']['rounds']} rounds, medians.",
            "",
            "| figure | value |",
            "|---|---|",
            f"| MONKEY / IP-Adapter (early exit) | {cpu['monkey_over_ip_adapter']:.3f} (target <= 1.30: "
            f"{_mark(cpu['target']['pass'])}) |",
            f"| MONKEY without the early exit / IP-Adapter | {cpu['monkey_no_early_exit_over_ip_adapter']:.3f} |",
            f"| seconds per image: IP-Adapter, MONKEY, MONKEY without early exit | {med['ip_adapter']:.2f}, "
            f"{med['monkey']:.2f}, {med['monkey_no_early_exit']:.2f} |",
            f"| each round's MONKEY / IP-Adapter (with; without the early exit), the noise to read the medians by "
            f"| {round_ratios(cpu['seconds'], 'monkey')}; {round_ratios(cpu['seconds'], 'monkey_no_early_exit')} |",
            "",
        ]
    breakdown = record.get("cpu_breakdown")
    if breakdown is not None:
        m = breakdown["machine"]
        lines += [
            "## CPU: where MONKEY's time goes",
            "",
            f"{breakdown['created']}, commit {breakdown['git_commit']}; {load_span(m)} (shared machine). "
            f"{'Tiny shapes' if breakdown['settings'].get('quick') else 'Real architecture'}, "
            f"{breakdown['settings']['size']} px, fp32, batch 1, medians of {breakdown['settings']['rounds']} "
            "rotating rounds, each part timed alone.",
            "",
            *parts_lines(breakdown),
            "",
        ]
    if record.get("provenance"):  # how the device run above was made, written beside it by whoever ran it
        lines += [f"Provenance: {record['provenance']}", ""]
    lines += speedups_markdown(record.get("speedups")) + speedups_markdown(record.get("speedups_cpu"))
    return "\n".join(lines)


def speedups_markdown(run: dict[str, Any] | None) -> list[str]:
    if run is None:
        return []
    s, m = run["settings"], run["machine"]
    lines = [
        f"## Speed-up keys on MONKEY ({'CPU, tiny shapes' if run['quick'] else run['device_name']})",
        "",
        f"{run['created']}, commit {run['git_commit']}; torch {run['versions']['torch']}. {s['size']} px, UNet "
        f"{s['dtype']}, batch {s['batch_size']}, {s['pairs']} interleaved (plain, variant) pairs per key; "
        f"{load_span(m)}; wall time {run['wall_s']:.0f} s "
        f"(budget {s['budget_s']:.0f} s). Time ratio < 1 is faster; pixel difference in 0-255 levels against the "
        "plain run's images.",
        "",
        "| runtime key | time / plain (median of pairs) | img/s plain -> key | first (/ second) call s | "
        "max pixel diff | masks equal |",
        "|---|---|---|---|---|---|",
    ]
    for v in run["variants"]:
        if "variant_over_plain" in v:
            lines.append(
                f"| {v['variant']} | {v['variant_over_plain']:.3f} | {v['plain_images_per_s']:.2f} -> "
                f"{v['variant_images_per_s']:.2f} | {v['first_call_s']:.1f}"
                f"{' / ' + format(v['second_call_s'], '.1f') if 'second_call_s' in v else ''} | "
                f"{v['max_pixel_difference']} | "
                f"{v['masks_equal']} |"
            )
        else:
            lines.append(f"| {v['variant']} | {v.get('error') or 'skipped: ' + v['skipped']} | | | | |")
    if run.get("parts") is not None:
        parts = run["parts"]
        lines += [
            "",
            f"Where the plain batch-{parts['batch_size']} call's time goes (each part alone, medians of "
            f"{parts['rounds']} rotating rounds):",
            "",
            *parts_lines(parts),
        ]
    larger = run.get("larger_batch")
    if larger is not None and "error" in larger:
        lines += ["", f"No key, batch {larger['batch_size']}: {larger['error']}"]
    elif larger is not None:
        ip, mk, sh = larger["ip_adapter"], larger["monkey"], larger["monkey_shared_pass1"]
        goal = TARGETS["monkey_images_per_s"]
        lines += [
            "",
            f"No key, batch {larger['batch_size']} (median of {larger['rounds']} rotating rounds): IP-Adapter "
            f"{ip['images_per_s']:.2f} img/s, MONKEY {mk['images_per_s']:.2f} img/s (>= {goal}: "
            f"{_mark(mk['images_per_s'] >= goal)}), MONKEY with a shared pass 1 {sh['images_per_s']:.2f} img/s; "
            f"MONKEY / IP-Adapter {larger['monkey_over_ip_adapter']:.3f}; peak MiB (IP / MONKEY / shared) "
            f"{_fmt(ip['peak_memory_mib'], '.0f')} / {_fmt(mk['peak_memory_mib'], '.0f')} / "
            f"{_fmt(sh['peak_memory_mib'], '.0f')}.",
        ]
    return [*lines, ""]


def parts_lines(parts: dict[str, Any]) -> list[str]:
    """`time_parts`' figures: a summary sentence and the table of medians."""
    bf16 = parts.get("vae_bf16_max_pixel_difference")
    summary = (
        f"MONKEY as the sum of its parts / IP-Adapter {parts['monkey_sum_over_ip_adapter']:.3f}; pass 1 costs "
        f"{parts['pass1_in_unet_evaluations']:.2f} of pass 2's steps; the mask maths "
        f"{parts['mask_maths_share_of_monkey']:.2%} of MONKEY's time"
    )
    if "vae_share_of_monkey" in parts:
        summary += f", the VAE decode {parts['vae_share_of_monkey']:.1%}"
    if bf16 is not None:
        summary += f"; a bfloat16 VAE moves the pixels by up to {bf16} of 255"
    rows = [f"| {name.replace('_', ' ')} | {seconds:.4f} |" for name, seconds in parts["median_s"].items()]
    return [summary + ".", "", "| part | seconds |", "|---|---|", *rows]


def load_span(machine: dict[str, Any]) -> str:
    """The load average at a run's start and end (a shared machine inflates its times)."""
    start, end = (tuple(round(x, 2) for x in machine[key]) for key in ("load_average_start", "load_average_end"))
    return f"load average {start} at start, {end} at end"


def round_ratios(seconds: dict[str, list[float]], method: str) -> str:
    return ", ".join(f"{m / i:.3f}" for m, i in zip(seconds[method], seconds["ip_adapter"], strict=True))


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _mark(ok: bool) -> str:
    return "pass" if ok else "MISS"


def write_record(out: Path, section: str, data: dict[str, Any]) -> Path:
    """Update one section of the json record, keep the others, rewrite the markdown from all of them."""
    path = out / "gpu_throughput.json"
    record = json.loads(path.read_text()) if path.is_file() else {"benchmark": "gpu_throughput"}
    record[section] = data
    atomic_write_bytes(path, (json.dumps(record, indent=2, default=str) + "\n").encode())
    atomic_write_bytes(out / "gpu_throughput.md", markdown(record).encode())
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks", help="folder of the record")
    parser.add_argument("--quick", action="store_true", help="CPU, tiny shapes, batch sizes 1 and 2 (for the tests)")
    parser.add_argument("--cpu-record", action="store_true", help="CPU fp32 MONKEY / IP-Adapter, real shapes")
    parser.add_argument("--cpu-breakdown", action="store_true", help="CPU fp32: where MONKEY's time goes, real shapes")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per batch size (after one warm-up)")
    parser.add_argument("--budget-s", type=float, default=270.0, help="finish within this many seconds")
    parser.add_argument("--reserve-s", type=float, default=40.0, help="kept for the evaluation stage and writing")
    parser.add_argument(
        "--speedups", action="store_true", help="only the runtime speed-up keys on MONKEY at one batch size"
    )
    parser.add_argument("--speedups-batch", type=int, default=16, help="--speedups: the batch size")
    parser.add_argument("--larger-batch", type=int, default=32, help="--speedups: the plain run at this batch too")
    parser.add_argument("--speedup-pairs", type=int, default=4, help="--speedups: interleaved (plain, variant) pairs")
    parser.add_argument("--cpu-size", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=3, help="--cpu-record: rounds of the three methods")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (--quick: 1, which avoids stalls on a loaded machine)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    threads = args.threads or (1 if args.quick else None)
    if threads:
        torch.set_num_threads(threads)
    if args.cpu_record:
        path = write_record(args.out, "cpu_ratio", cpu_ratio(args))
    elif args.cpu_breakdown:
        path = write_record(args.out, "cpu_breakdown", cpu_breakdown(args))
    elif args.speedups:  # a CPU's figures (--quick) and a device's are kept side by side
        path = write_record(args.out, "speedups_cpu" if args.quick else "speedups", measure_speedups(args))
    else:
        path = write_record(args.out, "throughput", throughput(args))
    log(f"wrote {path} and {path.with_suffix('.md')}")
    print(path.with_suffix(".md").read_text(), flush=True)
    return path


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
