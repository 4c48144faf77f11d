"""MONKEY against plain IP-Adapter on the full SDXL architecture on a GPU: seconds per batch, images per
second and peak memory, per adapter, guidance mode and batch size.

The real stable-diffusion-xl-base-1.0 UNet (transformer blocks (1, 2, 10), 2.6 B parameters), SDXL's
VAE and text encoders at the real widths (2 layers each), random weights built from configs in code on
the GPU in fp16 (benchmarks/sdxl_arch.py); h94's adapters at the real shapes loaded by
`load_ip_adapter`: ip-adapter_sdxl (4 tokens, 1280-d bigG embedding) and ip-adapter-plus_sdxl_vit-h
(16 tokens, ViT-H 257 x 1280 hidden states), subject embeddings given. Modes: `turbo` (sdxl-turbo's
EulerAncestral, guidance 0: one UNet row per image) and `cfg` (the base model's Euler, guidance 5: two
rows). MONKEY runs as conf/method/monkey_sdxl.yaml (4-step pass 1 leaving the UNet at its capture
layer after step 2, 8-step pass 2); IP-Adapter runs the same 8 steps. Every batch is decoded to PIL.

    python benchmarks/gpu_sdxl.py --out results/benchmarks            # CUDA, fp16, 1024 px, <= --budget-s
    python benchmarks/gpu_sdxl.py --quick --out /tmp/x                # CPU, the tiny SDXL twin, seconds

Writes <out>/gpu_sdxl.json and <out>/gpu_sdxl.md. Rows that would start after --budget-s (default 200 s,
model construction included) are skipped and listed; a batch size that runs out of memory is listed too.
"""

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffusers
import torch
from benchtools import sync
from sdxl_arch import PROMPT, parameters, sdxl_pipeline, subject_embeds

from monkey.adapter.sampler import MonkeySampler, SubjectBatch
from monkey.adapter.settings import MonkeySettings
from monkey.atomic import atomic_write_bytes, atomic_write_json

LAYER = "up_blocks.0.attentions.1.transformer_blocks.0.attn2"  # conf/method/monkey_sdxl.yaml
MODES = {"turbo": ("sdxl_turbo", 0.0), "cfg": ("sdxl", 5.0)}
ORDER = [("base", "turbo"), ("plus", "turbo"), ("base", "cfg"), ("plus", "cfg")]  # most wanted first


def quick_pipeline(adapter: str, scheduler: str) -> diffusers.StableDiffusionXLPipeline:
    """The project's tiny SDXL twin through the harness's loader (CPU tests of this script)."""
    from hydra import compose, initialize_config_module

    from monkey.models.profiles import load_pipeline, profile_from_config

    profile = {"base": "tiny_sdxl", "plus": "tiny_sdxl_plus"}[adapter]
    with initialize_config_module(config_module="monkey.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"model={profile}"])
    pipe = load_pipeline(profile_from_config(cfg.model), torch.device("cpu"), torch.float32)
    config = diffusers.__dict__[
        {"sdxl_turbo": "EulerAncestralDiscreteScheduler", "sdxl": "EulerDiscreteScheduler"}[scheduler]
    ]
    pipe.scheduler = config.from_config(pipe.scheduler.config)
    return pipe


def quick_embeds(pipe: Any, items: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    from monkey.subject_embeds import uses_hidden_states

    image = torch.zeros(1, 3, 32, 32)
    if uses_hidden_states(pipe):
        hidden = pipe.image_encoder(image, output_hidden_states=True).hidden_states[-2]  # [1, S, D]
        return hidden[None].expand(items, -1, -1, -1), None
    return pipe.image_encoder(image).image_embeds[None].expand(items, -1, -1), None


def measure(fn: Callable[[], Any], device: torch.device, repeats: int) -> dict[str, float]:
    """Median seconds of `repeats` calls after one warm-up, and the peak memory of those calls."""
    fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"s_median": statistics.median(seconds), "s_all": seconds, "peak_gib": peak}


def run_row(
    pipe: Any, embeds: torch.Tensor, guidance: float, size: int, batch_size: int, device: torch.device, repeats: int
) -> dict[str, Any]:
    settings = MonkeySettings(layers=[LAYER], token=1, guidance_scale=guidance)
    sampler = MonkeySampler(pipe, settings)
    prompts, seeds = [PROMPT] * batch_size, list(range(batch_size))
    batch = SubjectBatch(prompts, seeds, embeds[:batch_size], size, size)

    def ip_adapter() -> Any:
        pipe.set_ip_adapter_scale(1.0)
        with sampler.subjects(batch) as ip_embeds:
            return pipe(
                prompt=prompts,
                height=size,
                width=size,
                num_inference_steps=settings.final_steps,
                guidance_scale=guidance,
                generator=batch.generators(),
                ip_adapter_image_embeds=ip_embeds,
                output_type="pil",
            ).images

    def monkey() -> Any:
        return sampler(batch).images

    ip = measure(ip_adapter, device, repeats)
    mk = measure(monkey, device, repeats)
    return {
        "batch_size": batch_size,
        "ip_adapter": ip,
        "monkey": mk,
        "monkey_over_ip_adapter": mk["s_median"] / ip["s_median"],
        "monkey_images_per_s": batch_size / mk["s_median"],
        "ip_adapter_images_per_s": batch_size / ip["s_median"],
    }


def main(argv: list[str] | None = None) -> Path:
    """`--quick` runs on one CPU thread: the tiny twin's many small ops spend far longer in OpenMP
    barriers than in arithmetic when other processes share the cores (measured 5 s vs 316 s)."""
    threads = torch.get_num_threads()
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        torch.set_num_threads(1)
    try:
        return run(argv)
    finally:
        torch.set_num_threads(threads)


def run(argv: list[str] | None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_sdxl.json and gpu_sdxl.md")
    parser.add_argument("--quick", action="store_true", help="CPU, the tiny SDXL twin at 64 px (for tests)")
    parser.add_argument("--size", type=int, default=None, help="default 1024 (quick: 64)")
    parser.add_argument("--batch-sizes", default=None, help="comma list; default 1,2,4 (quick: 1,2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per row; default 3 (quick: 1)")
    parser.add_argument("--budget-s", type=float, default=200.0)
    parser.add_argument("--rows", default=",".join(f"{a}/{m}" for a, m in ORDER), help="adapter/mode list, in order")
    args = parser.parse_args(argv)
    order = [tuple(row.split("/")) for row in args.rows.split(",")]
    unknown = [row for row in order if row not in ORDER]
    if unknown:
        parser.error(f"--rows has {unknown}; allowed: {['/'.join(row) for row in ORDER]}")
    started = time.perf_counter()
    device = torch.device("cpu" if args.quick or not torch.cuda.is_available() else "cuda")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    size = args.size or (64 if args.quick else 1024)
    batch_sizes = [int(b) for b in (args.batch_sizes or ("1,2" if args.quick else "1,2,4")).split(",")]
    repeats = args.repeats or (1 if args.quick else 3)
    rows, skipped, builds = [], [], {}
    for adapter, mode in order:
        scheduler, guidance = MODES[mode]
        if time.perf_counter() - started > args.budget_s:
            skipped.append({"adapter": adapter, "mode": mode, "why": "time budget"})
            continue
        build_start = time.perf_counter()
        if args.quick:
            pipe = quick_pipeline(adapter, scheduler)
            embeds, _ = quick_embeds(pipe, max(batch_sizes))
        else:
            with tempfile.TemporaryDirectory(prefix="gpu-sdxl-") as folder:
                pipe = sdxl_pipeline(Path(folder), device, dtype, plus=adapter == "plus", scheduler=scheduler)
            embeds = subject_embeds(adapter == "plus", device, dtype, max(batch_sizes))
        builds[f"{adapter}/{mode}"] = {
            "seconds": time.perf_counter() - build_start,
            "unet_parameters": parameters(pipe.unet),
        }
        for batch_size in batch_sizes:
            if time.perf_counter() - started > args.budget_s:
                skipped.append({"adapter": adapter, "mode": mode, "batch_size": batch_size, "why": "time budget"})
                continue
            try:
                row = run_row(pipe, embeds, guidance, size, batch_size, device, repeats)
            except torch.OutOfMemoryError:
                skipped.append({"adapter": adapter, "mode": mode, "batch_size": batch_size, "why": "out of memory"})
                torch.cuda.empty_cache()
                continue
            rows.append({"adapter": adapter, "mode": mode, "guidance_scale": guidance, **row})
            print(
                f"{adapter}/{mode} batch {batch_size}: MONKEY {row['monkey']['s_median']:.3f} s, IP-Adapter "
                f"{row['ip_adapter']['s_median']:.3f} s (x{row['monkey_over_ip_adapter']:.3f})",
                flush=True,
            )
        del pipe
        if device.type == "cuda":
            torch.cuda.empty_cache()
    record = {
        "benchmark": "gpu_sdxl",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
        "settings": {
            "quick": args.quick,
            "size": size,
            "dtype": str(dtype).removeprefix("torch."),
            "batch_sizes": batch_sizes,
            "repeats": repeats,
            "budget_s": args.budget_s,
            "monkey": "conf/method/monkey_sdxl.yaml (4 + 8 steps, capture step 1-2, mask steps 2-5)",
            "command": "python benchmarks/gpu_sdxl.py " + " ".join(sys.argv[1:] if argv is None else argv),
        },
        "builds": builds,
        "rows": rows,
        "skipped": skipped,
        "total_s": time.perf_counter() - started,
    }
    atomic_write_json(args.out / "gpu_sdxl.json", record)
    atomic_write_bytes(args.out / "gpu_sdxl.md", markdown(record).encode())
    print(json.dumps({"rows": len(rows), "skipped": len(skipped), "total_s": record["total_s"]}))
    return args.out / "gpu_sdxl.json"


def markdown(record: dict[str, Any]) -> str:
    s = record["settings"]
    lines = [
        "# MONKEY / IP-Adapter on the SDXL architecture (benchmarks/gpu_sdxl.py)",
        "",
        f"{record['created']}, {record['device']}, torch {record['versions']['torch']}, diffusers "
        f"{record['versions']['diffusers']}; {s['size']} px, {s['dtype']}, median of {s['repeats']} calls after a "
        f"warm-up; random weights. Command: `{s['command']}`",
        "",
        "| adapter | mode | batch | IP-Adapter s | MONKEY s | MONKEY / IP-Adapter | MONKEY img/s | peak GiB (MONKEY) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        lines.append(
            f"| {r['adapter']} | {r['mode']} | {r['batch_size']} | {r['ip_adapter']['s_median']:.3f} | "
            f"{r['monkey']['s_median']:.3f} | {r['monkey_over_ip_adapter']:.3f} | {r['monkey_images_per_s']:.2f} | "
            f"{r['monkey']['peak_gib']:.2f} |"
        )
    if record["skipped"]:
        lines += ["", "Skipped: " + "; ".join(json.dumps(x) for x in record["skipped"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
