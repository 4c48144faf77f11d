"""RectifID against plain IP-Adapter on the CPU: seconds and peak memory per image, with and without
gradient checkpointing.

Random weights built from configs (no download): IP-Adapter on LCM Dreamshaper v7's SD1.5
architecture with h94's adapter shapes, as benchmarks/monkey_speed.py builds it, at the harness's
baseline settings (8 steps, guidance 8.5, subject embedding given); RectifID on PeRFlow SD1.5's
architecture (its own UNet; the VAE and text encoder are shared, same shapes) with OWL-ViT base-patch32
and DINOv2 ViT-B/14 shapes. RectifID's 50 iterations cost minutes each on a CPU, so `--iterations`
(default 2) are timed and the median iteration is extrapolated to `--target-iterations` (50) plus the
final pass; the reference crop (once per subject) is left out. Runs are interleaved (IP-Adapter,
RectifID, RectifID with checkpointing, IP-Adapter) because other processes may share the CPU; the
load average is recorded. Peak memory is the process's resident set sampled every 2 ms (glibc's mmap
threshold fixed, as in monkey_speed.py), total and above the loaded models.

    python benchmarks/rectifid_speed.py                 # 256 px, 2 timed iterations
    python benchmarks/rectifid_speed.py --iterations 3 --size 256
    python benchmarks/rectifid_speed.py --quick --batch 4 --iterations 3 --pairs 3   # batch 4 vs 4 x batch 1

Writes results/benchmarks/rectifid_speed.json and .md. With `--batch N` (issue 30 point 2) it measures
instead N items in one guided call against the same N items one call each (the same seeds, prompts and
reference), interleaved in ABBA pairs, each call `--iterations` guided iterations plus the final pass
(nothing extrapolated), and writes rectifid_speed_batch.json and .md.
"""

import argparse
import os
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from benchtools import (
    PeakMemory,
    batch_against_one_by_one,
    batch_table,
    git_commit,
    machine,
    timed,
    write_json_and_markdown,
)
from monkey_speed import MMAP_ENV, build_pipeline

if MMAP_ENV not in os.environ and __name__ == "__main__":  # before torch allocates anything
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, MMAP_ENV: "131072"})

import diffusers
import torch
from gpu_rectifid import PROMPTS, batch_inputs, guided_run
from monkey.baselines.rectifid.guidance import GuidanceSettings, PeRFlowSampler
from PIL import Image
from rectifid_arch import ROOT, identity_loss, perflow_pipeline, perflow_scheduler, sd15_unet

PROMPT = "dog on top of a wooden floor"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=None, help="default 256 (quick: 64)")
    parser.add_argument("--quick", action="store_true", help="tiny twins (a smoke test of the script)")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--target-iterations", type=int, default=50)
    parser.add_argument("--batch", type=int, default=None, help="items per guided call against one call each")
    parser.add_argument("--pairs", type=int, default=3, help="ABBA pairs of the --batch comparison")
    parser.add_argument("--out", type=Path, default=None, help="default results/benchmarks/rectifid_speed[_batch].json")
    args = parser.parse_args()
    args.size = args.size or (64 if args.quick else 256)
    stem = "rectifid_speed_batch" if args.batch else "rectifid_speed"
    args.out = args.out or ROOT / "results" / "benchmarks" / f"{stem}.json"
    device, dtype = torch.device("cpu"), torch.float32
    torch.set_flush_denormal(True)
    load_start = os.getloadavg()
    if args.batch:
        batch_comparison(args, device, dtype, load_start)
        return
    if args.quick:
        ip_pipe, pipe, image_embed_dim = tiny_pipelines(device, dtype)
    else:
        with tempfile.TemporaryDirectory(prefix="rectifid-speed-") as folder:
            print("building the IP-Adapter (LCM SD1.5) and PeRFlow SD1.5 pipelines, random weights ...", flush=True)
            ip_pipe = build_pipeline(Path(folder), device, dtype)
        torch.manual_seed(0)
        pipe = diffusers.StableDiffusionPipeline(
            vae=ip_pipe.vae,
            text_encoder=ip_pipe.text_encoder,
            tokenizer=ip_pipe.tokenizer,
            unet=sd15_unet().to(device, dtype),
            scheduler=perflow_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        image_embed_dim = 1024
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
    loss = identity_loss(device, dtype, quick=args.quick)
    sampler = PeRFlowSampler(pipe, num_inference_steps=4, guidance_scale=3.0)
    reference = loss.reference(Image.new("RGB", (512, 512), (180, 120, 60)), "a photo of a dog", device)
    embeds = sampler.text_embeds(PROMPT, device)
    noise = torch.randn((1, 4, args.size // 8, args.size // 8), generator=torch.Generator().manual_seed(0))
    subject = torch.randn(1, 1, image_embed_dim, generator=torch.Generator().manual_seed(2))

    def ip_adapter():
        ip_pipe.set_ip_adapter_scale(1.0)
        return ip_pipe(
            prompt=[PROMPT],
            height=args.size,
            width=args.size,
            num_inference_steps=8,
            guidance_scale=8.5,
            generator=[torch.Generator().manual_seed(0)],
            ip_adapter_image_embeds=[subject],
            output_type="pil",
        )

    print("warm-up ...", flush=True)
    ip_adapter()
    with torch.no_grad():
        sampler.decode(sampler.sample(noise, embeds))
    memory = PeakMemory(device)
    ip_runs, rectifid = [], {}

    def measure_ip() -> None:
        seconds = []
        peak = memory.measure(lambda: seconds.append(timed(ip_adapter, device)))
        ip_runs.append({"seconds": seconds[0], **peak})
        print(f"  IP-Adapter: {seconds[0]:.1f} s, peak {peak['peak_mib']:.0f} MiB", flush=True)

    measure_ip()
    for checkpointing in (False, True):
        name = "checkpointing" if checkpointing else "no_checkpointing"
        settings = GuidanceSettings(iterations=args.iterations, gradient_checkpointing=checkpointing)
        result = {}
        peak = memory.measure(
            lambda settings=settings, result=result: result.update(
                guided_run(sampler, loss, [reference], noise, embeds, settings, device)
            )
        )
        per_iteration = statistics.median(result["iteration_s"])
        result |= peak
        result["per_iteration_median_s"] = per_iteration
        result["extrapolated_s"] = per_iteration * args.target_iterations + result["final_pass_s"]
        rectifid[name] = result
        print(f"  RectifID {name}: {per_iteration:.1f} s / iteration, peak {peak['peak_mib']:.0f} MiB", flush=True)
    measure_ip()
    ip_seconds = statistics.median(r["seconds"] for r in ip_runs)
    ip_peak = max(r["peak_mib"] for r in ip_runs)
    ip_above = max(r["above_start_mib"] for r in ip_runs)
    for result in rectifid.values():
        result["time_ratio"] = result["extrapolated_s"] / ip_seconds
        result["peak_ratio"] = result["peak_mib"] / ip_peak
        result["above_start_ratio"] = result["above_start_mib"] / ip_above
    record = {
        **record_head("rectifid_speed", device, load_start),
        "settings": {
            "size": args.size,
            "quick": args.quick,
            "dtype": "float32",
            "iterations_timed": args.iterations,
            "extrapolated_to": args.target_iterations,
            "ip_adapter": {"steps": 8, "guidance_scale": 8.5, "architecture": "LCM Dreamshaper v7 (SD1.5)"},
            "rectifid": {
                "steps": 4,
                "guidance_scale": 3.0,
                "architecture": "PeRFlow SD1.5",
                "detector": "OWL-ViT B/32",
                "embedder": "DINOv2 ViT-B/14",
            },
        },
        "ip_adapter": {"runs": ip_runs, "median_s": ip_seconds, "peak_mib": ip_peak, "above_start_mib": ip_above},
        "rectifid": rectifid,
    }
    write_json_and_markdown(record, args.out, markdown)


def batch_comparison(args, device: torch.device, dtype: torch.dtype, load_start) -> None:
    """N items in one guided call against the same N items one call each, ABBA pairs; seconds per image."""
    with tempfile.TemporaryDirectory(prefix="rectifid-speed-") as folder:
        pipe = perflow_pipeline(Path(folder), device, dtype, quick=args.quick)
    loss = identity_loss(device, dtype, quick=args.quick)
    sampler = PeRFlowSampler(pipe, num_inference_steps=4, guidance_scale=3.0)
    reference = loss.reference(Image.new("RGB", (512, 512), (180, 120, 60)), "a photo of a dog", device)
    noise, embeds, references = batch_inputs(sampler, reference, args.size, args.batch, device, dtype)
    prompts = [PROMPTS[k % len(PROMPTS)] for k in range(args.batch)]  # batch_inputs' prompts, item by item
    alone_inputs = [(noise[k : k + 1], sampler.text_embeds(prompts[k], device), [reference]) for k in range(args.batch)]
    settings = GuidanceSettings(iterations=args.iterations)

    def batched():
        return guided_run(sampler, loss, references, noise, embeds, settings, device)

    def one_by_one():
        return [guided_run(sampler, loss, refs, n, e, settings, device) for n, e, refs in alone_inputs]

    figures = batch_against_one_by_one(batched, one_by_one, args.batch, args.pairs, device)
    record = {
        **record_head("rectifid_speed_batch", device, load_start),
        "settings": {
            "size": args.size,
            "quick": args.quick,
            "dtype": "float32",
            "batch": args.batch,
            "iterations": args.iterations,
            "pairs": args.pairs,
            "models": "tiny twins" if args.quick else "PeRFlow SD1.5 / OWL-ViT B/32 / DINOv2 ViT-B/14 shapes",
        },
        **figures,
    }
    write_json_and_markdown(record, args.out, batch_markdown)


def record_head(benchmark: str, device: torch.device, load_start: tuple[float, float, float]) -> dict:
    """What both of this script's records begin with: the benchmark, when, the commit, the machine, the
    versions and the load average when the timing began and now (the keys its two renderers read)."""
    return {
        "benchmark": benchmark,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": machine(device),
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
        "load_average": {"start": load_start, "end": os.getloadavg()},
    }


def batch_markdown(record: dict) -> str:
    s, load = record["settings"], record["load_average"]
    return "\n".join(
        [
            "# RectifID: several items per guided call against one call each (benchmarks/rectifid_speed.py --batch)",
            "",
            f"{record['date']}, commit {record['commit']}; {record['machine']['processor']}, "
            f"{record['machine']['logical_cpus']} logical CPUs, torch threads {record['machine']['torch_threads']}, "
            f"device cpu; torch {record['versions']['torch']}, diffusers {record['versions']['diffusers']}. "
            f"Load average at start {tuple(round(x, 2) for x in load['start'])}, at end "
            f"{tuple(round(x, 2) for x in load['end'])}: a shared machine, so seconds are noisy; the two sides ran "
            "in interleaved ABBA pairs and the speed-up is the median of the pairs' ratios.",
            "",
            (
                "QUICK MODE: tiny twins, the figures time the harness's code path, not the real models. "
                if s["quick"]
                else ""
            )
            + f"{s['models']}, {s['size']} px, float32, {s['iterations']} guided iterations plus the final pass "
            f"per call (nothing extrapolated), {s['pairs']} pairs.",
            "",
            *batch_table(record),
        ]
    )


def tiny_pipelines(device: torch.device, dtype: torch.dtype):
    """The test suite's tiny LCM + IP-Adapter and tiny PeRFlow pipelines (--quick)."""
    from monkey.models.tiny import IMAGE_EMBED_DIM, materialize_tiny

    paths = materialize_tiny("lcm")
    ip_pipe = diffusers.LatentConsistencyModelPipeline.from_pretrained(
        paths.pipeline, safety_checker=None, requires_safety_checker=False
    )
    ip_pipe.load_ip_adapter(
        str(paths.ip_adapter), subfolder="models", weight_name="ip-adapter_sd15.safetensors", image_encoder_folder=None
    )
    ip_pipe.to(device, dtype)
    ip_pipe.set_progress_bar_config(disable=True)
    return ip_pipe, perflow_pipeline(Path("."), device, dtype, quick=True), IMAGE_EMBED_DIM


def markdown(record: dict) -> str:
    s, ip = record["settings"], record["ip_adapter"]
    load = record["load_average"]
    lines = [
        "# RectifID speed and memory against IP-Adapter (benchmarks/rectifid_speed.py)",
        "",
        f"{record['date']}, commit {record['commit']}; {record['machine']['processor']}, "
        f"{record['machine']['logical_cpus']} logical CPUs, device cpu; torch {record['versions']['torch']}, "
        f"diffusers {record['versions']['diffusers']}. "
        f"Load average at start {tuple(round(x, 2) for x in load['start'])}, "
        f"at end {tuple(round(x, 2) for x in load['end'])}: other processes shared the CPU, absolute times are "
        "inflated; the runs were interleaved (IP-Adapter, RectifID, RectifID with checkpointing, IP-Adapter).",
        "",
        ("QUICK MODE: tiny twins, the figures mean nothing. " if s["quick"] else "")
        + f"Random weights, {s['size']} px, float32. IP-Adapter: {s['ip_adapter']['architecture']}, 8 steps. RectifID: "
        f"PeRFlow SD1.5, 4 steps, CFG 3, OWL-ViT B/32 + DINOv2 ViT-B/14. {s['iterations_timed']} guided iterations "
        f"timed; the median iteration is extrapolated to {s['extrapolated_to']} iterations plus the final pass "
        "(the per-subject reference crop left out).",
        "",
        "| run | s / iteration | s / image | x IP-Adapter time | peak RSS MiB (x IP-Adapter) "
        "| above loaded models MiB (x) |",
        "|---|---|---|---|---|---|",
        f"| IP-Adapter | - | {ip['median_s']:.1f} | 1.0 | {ip['peak_mib']:.0f} (1.0) "
        f"| {ip['above_start_mib']:.0f} (1.0) |",
    ]
    for name, run in record["rectifid"].items():
        lines.append(
            f"| RectifID, {name.replace('_', ' ')} | {run['per_iteration_median_s']:.1f} | "
            f"{run['extrapolated_s']:.0f} (extrapolated) | {run['time_ratio']:.0f} | "
            f"{run['peak_mib']:.0f} ({run['peak_ratio']:.2f}) | "
            f"{run['above_start_mib']:.0f} ({run['above_start_ratio']:.1f}) |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
