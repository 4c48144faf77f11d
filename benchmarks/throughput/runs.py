"""The benchmark's runs, one per record section: the device throughput run, the CPU ratio and the CPU
breakdown (the speed-up keys are in throughput.speedups)."""

import argparse
import os
import statistics
import time
from dataclasses import asdict
from typing import Any

import torch
from benchtools import provenance, timed
from lcm_arch import QUICK, Shapes, build_image_encoder

from monkey.adapter.sampler import MonkeySampler
from monkey.adapter.settings import MonkeySettings
from throughput.device_run import DeviceRun
from throughput.evaluation import measure_eval
from throughput.timing import flop_profile, matmul_peak_tflops, measure_batch, spec_peak, time_parts
from throughput.workload import TARGETS, Workload, batch_independence, build, log, time_image_encoder


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    run = DeviceRun.from_args(args, "no CUDA device: run with --quick (CPU, tiny shapes) or --cpu-record")
    quick, device, dtype, vae_dtype, name = run.quick, run.device, run.dtype, run.vae_dtype, run.name
    shapes = QUICK if quick else Shapes()
    size = 64 if quick else args.size
    sizes = [1, 2] if quick else args.batch_sizes
    rounds = 1 if quick else args.rounds
    log(f"device {name}; building the {'tiny' if quick else 'LCM Dreamshaper v7'} architecture ({dtype}) ...")
    pipe = build(shapes, device, dtype, vae_dtype, "monkey-gpu-throughput-")
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
        **run.head(),
        "settings": {
            **run.settings(size),
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
    pipe = build(Shapes(), device, torch.float32, torch.float32, "monkey-cpu-ratio-")
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


def cpu_breakdown(args: argparse.Namespace) -> dict[str, Any]:
    """Where MONKEY's time goes on a CPU (fp32, real shapes, batch 1): `time_parts`."""
    device = torch.device("cpu")
    torch.set_flush_denormal(True)
    load_start = os.getloadavg()
    shapes, size = (QUICK, 64) if args.quick else (Shapes(), args.cpu_size)  # --quick: tiny, for a smoke run
    pipe = build(shapes, device, torch.float32, torch.float32, "monkey-cpu-breakdown-")
    sampler = MonkeySampler(pipe, MonkeySettings())
    work = Workload(pipe, sampler, shapes, 1, size, device)
    parts = time_parts(pipe, sampler, work, device, args.pairs, bf16_vae=False)  # a CPU has no fast bf16 convs
    return {
        **provenance(device, load_start),
        "settings": {"size": size, "dtype": "float32", "batch_size": 1, "rounds": args.pairs, "quick": args.quick},
        **{key: value for key, value in parts.items() if key not in ("batch_size", "rounds")},
    }
