"""GPU check of RectifID: seconds and peak memory per image, fp16, 512 px, one item, with and without
gradient checkpointing, beside the plain 4-step PeRFlow sampler.

PeRFlow SD1.5's architecture and OWL-ViT base / DINOv2 ViT-B/14 shapes, all with random weights built
from configs in code (the GPU machine has no network): the figures are the cost of the real models, the
images mean nothing. `--iterations` guided iterations are timed (default 10) and the per-iteration
median is extrapolated to the method's 50 (`--target-iterations`); the record says so.

    python benchmarks/gpu_rectifid.py                       # CUDA, fp16, 512 px, 10 iterations
    python benchmarks/gpu_rectifid.py --out /tmp/rec        # record elsewhere
    python benchmarks/gpu_rectifid.py --quick               # CPU, tiny twins, 64 px (the test runs this)

Writes <out>/gpu_rectifid.json and .md (default results/benchmarks/). Imports torch, diffusers,
transformers, numpy, pillow, safetensors, omegaconf and the project (from the source tree if not installed).
"""

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import diffusers
import torch
import transformers
from benchtools import sync
from monkey.baselines.rectifid.guidance import AnchoredGuidance, GuidanceSettings, PeRFlowSampler
from PIL import Image
from rectifid_arch import ROOT, identity_loss, perflow_pipeline


def guided_run(sampler, loss, reference, noise, embeds, settings, device) -> dict:
    """One item: per-iteration times (from the iteration hook), the final pass, the peak memory."""
    stamps: list[float] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()

    def on_iteration(k, image, result):
        sync(device)
        stamps.append(time.perf_counter())

    result = AnchoredGuidance(sampler, settings).run(noise, embeds, lambda im: loss(im, reference), on_iteration)
    with torch.no_grad():
        sampler.decode(result.latents)
    sync(device)
    end = time.perf_counter()
    times = [b - a for a, b in zip([start, *stamps[:-1]], stamps, strict=True)]
    return {
        "iteration_s": times,
        "final_pass_s": end - (stamps[-1] if stamps else start),
        "total_s": end - start,
        "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "losses": [r.loss for r in result.history],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--target-iterations", type=int, default=50)
    parser.add_argument("--size", type=int, default=None, help="default 512 (quick: 64)")
    parser.add_argument("--quick", action="store_true", help="tiny twins on the CPU (a smoke test)")
    args = parser.parse_args()
    if args.iterations < 2:
        parser.error("--iterations must be >= 2 (the first iteration is warm-up)")
    device = torch.device("cpu" if args.quick or not torch.cuda.is_available() else "cuda")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    size = args.size or (64 if args.quick else 512)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory() as tmp:
        build = time.perf_counter()
        pipe = perflow_pipeline(Path(tmp), device, dtype, quick=args.quick)
        loss = identity_loss(device, dtype, quick=args.quick)
        build_s = time.perf_counter() - build
    sampler = PeRFlowSampler(pipe, num_inference_steps=4, guidance_scale=3.0)
    photo = Image.new("RGB", (512, 512), (180, 120, 60))
    reference = loss.reference(photo, "a photo of a dog", device)
    embeds = sampler.text_embeds("a dog in the jungle", device)
    generator = torch.Generator("cpu").manual_seed(0)
    noise = torch.randn((1, 4, size // 8, size // 8), generator=generator).to(device, dtype)

    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        sampler.decode(sampler.sample(noise, embeds))  # warm-up of the plain sampler
    sync(device)
    plain_times = []
    for _ in range(3):
        start = time.perf_counter()
        with torch.no_grad():
            sampler.decode(sampler.sample(noise, embeds))
        sync(device)
        plain_times.append(time.perf_counter() - start)

    variants = {}
    for checkpointing in (False, True):
        settings = GuidanceSettings(iterations=args.iterations, gradient_checkpointing=checkpointing, autocast=True)
        run = guided_run(sampler, loss, reference, noise, embeds, settings, device)
        per_iteration = statistics.median(run["iteration_s"][1:])  # the first one warms up
        run["per_iteration_median_s"] = per_iteration
        run["extrapolated_s"] = per_iteration * args.target_iterations + run["final_pass_s"]
        variants["checkpointing" if checkpointing else "no_checkpointing"] = run
    record = {
        "benchmark": "gpu_rectifid",
        "started": started,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "platform": platform.platform(),
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
        },
        "settings": {
            "dtype": str(dtype).removeprefix("torch."),
            "size": size,
            "iterations_timed": args.iterations,
            "extrapolated_to": args.target_iterations,
            "quick": args.quick,
            "autocast": device.type == "cuda",
            "models": "tiny twins"
            if args.quick
            else "PeRFlow SD1.5 / OWL-ViT B/32 / DINOv2 ViT-B/14 shapes, random weights",
        },
        "build_s": build_s,
        "plain_sampler_s": statistics.median(plain_times),
        "variants": variants,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_rectifid.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / "gpu_rectifid.md").write_text(markdown(record))
    print(markdown(record))


def markdown(record: dict) -> str:
    s = record["settings"]
    lines = [
        "# RectifID GPU check (benchmarks/gpu_rectifid.py)",
        "",
        f"{record['started']}, {record['gpu'] or record['device']}; {s['models']}; {s['dtype']}, {s['size']} px, "
        f"one item; torch {record['versions']['torch']}, diffusers {record['versions']['diffusers']}.",
        f"{s['iterations_timed']} guided iterations timed; the median iteration (the first excluded) is extrapolated "
        f"to {s['extrapolated_to']} iterations plus the final pass.",
        "",
        "| variant | s / iteration | final pass s | s / image at "
        f"{s['extrapolated_to']} iterations (extrapolated) | peak MiB | x plain sampler |",
        "|---|---|---|---|---|---|",
        f"| plain 4-step sampler | - | {record['plain_sampler_s']:.3f} | {record['plain_sampler_s']:.3f} | - | 1.0 |",
    ]
    for name, run in record["variants"].items():
        peak = f"{run['peak_mib']:.0f}" if run["peak_mib"] is not None else "n/a (CPU)"
        ratio = run["extrapolated_s"] / record["plain_sampler_s"]
        lines.append(
            f"| {name.replace('_', ' ')} | {run['per_iteration_median_s']:.3f} | {run['final_pass_s']:.3f} | "
            f"{run['extrapolated_s']:.1f} | {peak} | {ratio:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
