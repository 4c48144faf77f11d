"""GPU check of RectifID: seconds and peak memory per image, fp16, 512 px, one item, with and without
gradient checkpointing, beside the plain 4-step PeRFlow sampler; then images per second with several
items per guided call (`--batches`, issue 30 point 2: the target is at least 4x batch 1's).

PeRFlow SD1.5's architecture and OWL-ViT base / DINOv2 ViT-B/14 shapes, all with random weights built
from configs in code (the GPU machine has no network): the figures are the cost of the real models, the
images mean nothing. `--iterations` guided iterations are timed (default 10) and the per-iteration
median is extrapolated to the method's 50 (`--target-iterations`); the record says so. The batch sweep
times `--batch-iterations` (default 4) per batch size and mode, the first again excluded: images per
second = B / (the extrapolated seconds of one call of B items), against batch 1 in the same mode. A
batch that runs out of GPU memory is recorded as such (and larger ones in that mode are skipped), and
no batch run starts after `--budget-s`.

    python benchmarks/gpu_rectifid.py                       # CUDA, fp16, 512 px, 10 iterations, batches 1,2,4,8
    python benchmarks/gpu_rectifid.py --out /tmp/rec        # record elsewhere
    python benchmarks/gpu_rectifid.py --quick               # CPU, tiny twins, 64 px, batches 1,2 (the test runs this)

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

PROMPTS = ("a dog in the jungle", "a dog in the snow", "a dog on the beach", "a dog in a city")


def guided_run(sampler, loss, references, noise, embeds, settings, device) -> dict:
    """One guided call of B = len(references) items (noise [B, 4, h, w], embeds the B items' text rows):
    per-iteration times (from the iteration hook), the final pass, the peak memory, and the seconds
    spent in the detector (one OWL-ViT call per item and pass, not batched)."""
    stamps: list[float] = []
    detector_s = [0.0]
    find_like = loss.detector.find_like

    def timed_find_like(image, query):
        sync(device)
        begin = time.perf_counter()
        box = find_like(image, query)
        sync(device)
        detector_s[0] += time.perf_counter() - begin
        return box

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()

    def on_iteration(k, image, result):
        sync(device)
        stamps.append(time.perf_counter())

    loss.detector.find_like = timed_find_like
    try:
        result = AnchoredGuidance(sampler, settings).run(
            noise, embeds, lambda images: loss.batch(images, references), on_iteration
        )
    finally:
        loss.detector.find_like = find_like
    with torch.no_grad():
        sampler.decode(result.latents)
    sync(device)
    end = time.perf_counter()
    times = [b - a for a, b in zip([start, *stamps[:-1]], stamps, strict=True)]
    return {
        "batch": len(references),
        "iteration_s": times,
        "final_pass_s": end - (stamps[-1] if stamps else start),
        "total_s": end - start,
        "detector_s": detector_s[0],
        "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "losses": [[r.loss for r in history] for history in result.histories],  # per item, per iteration
    }


def batch_inputs(sampler, reference, size: int, batch: int, device, dtype):
    """B items: noise from seeds 0..B-1, B prompts, the one subject's reference for each."""
    noise = torch.cat(
        [
            torch.randn((1, 4, size // 8, size // 8), generator=torch.Generator("cpu").manual_seed(k))
            for k in range(batch)
        ]
    ).to(device, dtype)
    prompts = [PROMPTS[k % len(PROMPTS)] for k in range(batch)]
    return noise, sampler.text_embeds(prompts, device), [reference] * batch


def with_extrapolation(run: dict, target_iterations: int) -> dict:
    """The median iteration (the first, a warm-up, excluded) times the method's iterations plus the final pass."""
    run["per_iteration_median_s"] = statistics.median(run["iteration_s"][1:])
    run["extrapolated_s"] = run["per_iteration_median_s"] * target_iterations + run["final_pass_s"]
    run["images_per_s"] = run["batch"] / run["extrapolated_s"]
    return run


def batch_sweep(sampler, loss, reference, size, device, dtype, args, started: float) -> tuple[dict, list[dict]]:
    """Per mode (no checkpointing, checkpointing), per batch size: one guided call, images per second
    and the speed-up over batch 1 of the same mode."""
    sweep: dict[str, list[dict]] = {}
    skipped: list[dict] = []
    for checkpointing in (False, True):
        mode = "checkpointing" if checkpointing else "no_checkpointing"
        settings = GuidanceSettings(
            iterations=args.batch_iterations, gradient_checkpointing=checkpointing, autocast=True
        )
        rows: list[dict] = []
        out_of_memory = False
        for batch in args.batches:
            if out_of_memory or time.perf_counter() - started > args.budget_s:
                skipped.append(
                    {"mode": mode, "batch": batch, "why": "out of memory" if out_of_memory else "time budget"}
                )
                continue
            noise, embeds, references = batch_inputs(sampler, reference, size, batch, device, dtype)
            try:
                run = with_extrapolation(
                    guided_run(sampler, loss, references, noise, embeds, settings, device), args.target_iterations
                )
            except torch.cuda.OutOfMemoryError:
                out_of_memory = True
                skipped.append({"mode": mode, "batch": batch, "why": "out of memory"})
                del noise, embeds
                torch.cuda.empty_cache()
                continue
            rows.append(run)
            print(f"  {mode} batch {batch}: {run['images_per_s']:.4f} images/s", flush=True)
        base = next((row for row in rows if row["batch"] == 1), None)
        for row in rows:
            row["speedup_vs_batch_1"] = row["images_per_s"] / base["images_per_s"] if base else None
        sweep[mode] = rows
    return sweep, skipped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--target-iterations", type=int, default=50)
    parser.add_argument("--size", type=int, default=None, help="default 512 (quick: 64)")
    parser.add_argument("--quick", action="store_true", help="tiny twins on the CPU (a smoke test)")
    parser.add_argument(
        "--batches", default=None, help="items per guided call, comma-separated (default 1,2,4,8; quick: 1,2)"
    )
    parser.add_argument("--batch-iterations", type=int, default=4, help="guided iterations timed per batch run")
    parser.add_argument("--budget-s", type=float, default=240.0, help="no batch run starts after this many seconds")
    args = parser.parse_args(argv)
    if args.iterations < 2 or args.batch_iterations < 2:
        parser.error("--iterations and --batch-iterations must be >= 2 (the first iteration is warm-up)")
    args.batches = [int(b) for b in (args.batches or ("1,2" if args.quick else "1,2,4,8")).split(",")]
    if any(b < 1 for b in args.batches):
        parser.error(f"--batches {args.batches}: every batch size must be >= 1")
    device = torch.device("cpu" if args.quick or not torch.cuda.is_available() else "cuda")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    size = args.size or (64 if args.quick else 512)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    clock = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        build = time.perf_counter()
        pipe = perflow_pipeline(Path(tmp), device, dtype, quick=args.quick)
        loss = identity_loss(device, dtype, quick=args.quick)
        build_s = time.perf_counter() - build
    sampler = PeRFlowSampler(pipe, num_inference_steps=4, guidance_scale=3.0)
    photo = Image.new("RGB", (512, 512), (180, 120, 60))
    reference = loss.reference(photo, "a photo of a dog", device)
    embeds = sampler.text_embeds(PROMPTS[0], device)
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
        run = guided_run(sampler, loss, [reference], noise, embeds, settings, device)
        variants["checkpointing" if checkpointing else "no_checkpointing"] = with_extrapolation(
            run, args.target_iterations
        )
    batches, skipped = batch_sweep(sampler, loss, reference, size, device, dtype, args, clock)
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
            "batch_iterations_timed": args.batch_iterations,
            "batches": args.batches,
            "budget_s": args.budget_s,
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
        "batches": batches,
        "skipped": skipped,
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
    lines += [
        "",
        f"Several items per guided call (issue 30 point 2): {s['batch_iterations_timed']} iterations timed per run "
        f"(the first excluded), extrapolated to {s['extrapolated_to']}; images/s = items / extrapolated s per call; "
        "x batch 1 in the same mode. Detector: seconds in OWL-ViT (one call per item and pass) over the timed run.",
        "",
        "| mode | items per call | s / iteration | s / call (extrapolated) | images / s | x batch 1 | detector s "
        "| peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, rows in record["batches"].items():
        for run in rows:
            peak = f"{run['peak_mib']:.0f}" if run["peak_mib"] is not None else "n/a (CPU)"
            speedup = f"{run['speedup_vs_batch_1']:.2f}" if run["speedup_vs_batch_1"] is not None else "-"
            lines.append(
                f"| {mode.replace('_', ' ')} | {run['batch']} | {run['per_iteration_median_s']:.3f} | "
                f"{run['extrapolated_s']:.1f} | {run['images_per_s']:.4f} | {speedup} | {run['detector_s']:.2f} | "
                f"{peak} |"
            )
    for skip in record["skipped"]:
        lines.append(f"| {skip['mode'].replace('_', ' ')} | {skip['batch']} | skipped: {skip['why']} | | | | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
