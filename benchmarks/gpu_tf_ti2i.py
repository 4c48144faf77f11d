"""TF-TI2I against plain SD3 sampling: seconds and peak memory per image, same steps and size.

Default (a GPU): the real Stable Diffusion 3.5 large transformer shape (38 joint blocks, 38 heads x 64,
caption projection 2432, query-key RMS norm, pos-embed 192) and the SD3 VAE (128/256/512/512, 16
latent channels), RANDOM weights built from their configs directly on the device in bf16 (seconds,
no download). Text encoders: tiny random CLIP-L and CLIP-G (hidden 32, projections 768 and 1280, so
pooled 2048 as the real ones) and T5 dropped (`text_encoder_3=None`: zeros of 256 tokens x 4096), so
the transformer sees the real 77 + 256 = 333 text tokens; text encoding is a negligible part of both.

    python benchmarks/gpu_tf_ti2i.py                      # GPU: 1024 px, 28 steps, bf16, ~1-2 min on an H100
    python benchmarks/gpu_tf_ti2i.py --size 512 --steps 10 --out /tmp/rec
    python benchmarks/gpu_tf_ti2i.py --quick              # CPU: the tiny SD3 twin (the tests run this)
    python benchmarks/gpu_tf_ti2i.py --device cpu --blocks 2 --size 256 --steps 4   # real shape, 2 blocks
    python benchmarks/gpu_tf_ti2i.py --batches 1,2,4,8 --batch-steps 10   # + images/s at several items per call

With `--batches` (issue 30 point 2), after the comparison: TF-TI2I with B items per call (B main and B
reference branches per CFG half; B different seeds, one subject image) at `--batch-steps` steps (default:
--steps), one warm-up call at batch 1 and one timed call per batch size: images per second and the
speed-up over batch 1. A batch that runs out of GPU memory is recorded as such and larger ones skipped;
no batch run starts after `--budget-s`.

"Plain" is `StableDiffusion3Pipeline.__call__` itself; "TF-TI2I" is baselines/tf_ti2i's loop (batch
[main, reference] per CFG half, reference VAE-encoded once and forward-noised every step, contextual
token sharing in every block) plus the same VAE decode. Both from one seed, interleaved in ABBA
order, medians. Peak memory: torch.cuda.max_memory_allocated on CUDA; on CPU the process RSS sampled
every 2 ms. Writes <out>/gpu_tf_ti2i[_quick].json and .md (default out: results/benchmarks/).
Imports only torch, diffusers, transformers, numpy, pillow and the repository's own modules.
"""

import argparse
import importlib.util
import json
import os
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
import transformers
from benchtools import PeakMemory, machine

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "backpack in the jungle"

SD35_LARGE_TRANSFORMER: dict[str, Any] = {  # stabilityai/stable-diffusion-3.5-large transformer/config.json
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "out_channels": 16,
    "num_layers": 38,
    "attention_head_dim": 64,
    "num_attention_heads": 38,
    "joint_attention_dim": 4096,
    "caption_projection_dim": 2432,
    "pooled_projection_dim": 2048,
    "pos_embed_max_size": 192,
    "dual_attention_layers": (),
    "qk_norm": "rms_norm",
}
SD3_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "latent_channels": 16,
    "sample_size": 1024,
    "scaling_factor": 1.5305,
    "shift_factor": 0.0609,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}


def import_repo() -> None:
    """Make `monkey.baselines.tf_ti2i` importable from this checkout even where the package is not
    installed (the GPU machine): register `monkey` and `monkey.baselines` from their folders."""
    try:
        import monkey.baselines.tf_ti2i.sampling  # noqa: F401

        return
    except ImportError:
        pass
    for name, folder in (("monkey", ROOT / "src" / "monkey"), ("monkey.baselines", ROOT / "baselines")):
        spec = importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def tiny_clip_pair(folder: Path) -> dict[str, Any]:
    """Tiny random CLIP-L and CLIP-G with the real projection widths (pooled 768 + 1280 = 2048)."""
    import_repo()
    from monkey.models.tiny_tokenizer import write_tiny_clip_tokenizer

    write_tiny_clip_tokenizer(folder / "tokenizer", PROMPT.split())
    tokenizer = transformers.CLIPTokenizer.from_pretrained(folder / "tokenizer")

    def encoder(projection: int) -> transformers.CLIPTextModelWithProjection:
        config = transformers.CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=3,
            max_position_embeddings=77,
            projection_dim=projection,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        return transformers.CLIPTextModelWithProjection(config)

    return {
        "text_encoder": encoder(768),
        "tokenizer": tokenizer,
        "text_encoder_2": encoder(1280),
        "tokenizer_2": tokenizer,
    }


def real_shape_pipeline(device: torch.device, dtype: torch.dtype, blocks: int) -> diffusers.StableDiffusion3Pipeline:
    """SD3.5 large's transformer (first `blocks` joint blocks; 38 = all) and SD3's VAE, random weights
    made directly on `device` in `dtype`."""
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            transformer = diffusers.SD3Transformer2DModel(**{**SD35_LARGE_TRANSFORMER, "num_layers": blocks})
            vae = diffusers.AutoencoderKL(**SD3_VAE)
    finally:
        torch.set_default_dtype(previous)
    with tempfile.TemporaryDirectory(prefix="tf-ti2i-bench-") as folder:
        clips = tiny_clip_pair(Path(folder))
    pipe = diffusers.StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=vae,
        text_encoder_3=None,
        tokenizer_3=None,
        **clips,
    )
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_twin_pipeline(device: torch.device) -> diffusers.StableDiffusion3Pipeline:
    import_repo()
    from monkey.models.tiny import materialize_tiny

    pipe = diffusers.StableDiffusion3Pipeline.from_pretrained(materialize_tiny("sd3").pipeline)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def measured(fn: Callable[[], Any], memory: PeakMemory) -> tuple[float, dict[str, float]]:
    """Seconds and peak memory of one call."""
    seconds = [0.0]

    def timed() -> None:
        if memory.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if memory.device.type == "cuda":
            torch.cuda.synchronize()
        seconds[0] = time.perf_counter() - start

    peak = memory.measure(timed)
    return seconds[0], peak


def run(
    pipe: diffusers.StableDiffusion3Pipeline, device: torch.device, size: int, steps: int, pairs: int
) -> dict[str, Any]:
    """Time and measure both samplers on one pipeline, interleaved in ABBA order (so a drifting
    machine load hits both alike), after a 2-step warm-up of each; returns the figures."""

    def plain(count: int = steps) -> Any:
        return pipe(
            PROMPT,
            height=size,
            width=size,
            num_inference_steps=count,
            guidance_scale=3.5,
            generator=torch.Generator("cpu").manual_seed(0),
        ).images

    def tf_ti2i(count: int = steps) -> Any:
        return tf_ti2i_call(pipe, device, size, count, 1)

    print("warm-up (2 steps each) ...", flush=True)
    tf_ti2i(min(2, steps))
    plain(min(2, steps))
    memory = PeakMemory(device)
    times: list[list[float]] = []
    peaks: dict[str, list[dict[str, float]]] = {"tf_ti2i": [], "plain": []}
    for index in range(pairs):
        order = [("tf_ti2i", tf_ti2i), ("plain", plain)]
        if index % 2:
            order.reverse()
        seconds = {}
        for name, fn in order:
            seconds[name], peak = measured(fn, memory)
            peaks[name].append(peak)
        times.append([seconds["tf_ti2i"], seconds["plain"]])
        ratio = seconds["tf_ti2i"] / seconds["plain"]
        print(
            f"  pair {index + 1}/{pairs}: tf_ti2i {times[-1][0]:.2f} s, plain {times[-1][1]:.2f} s (ratio {ratio:.3f})",
            flush=True,
        )
    peak = {name: max(values, key=lambda p: p["peak_mib"]) for name, values in peaks.items()}
    return {
        "tf_ti2i_s_median": statistics.median(a for a, _ in times),
        "plain_s_median": statistics.median(b for _, b in times),
        "time_ratio_median": statistics.median(a / b for a, b in times),
        "peak_memory": peak,
        "memory_ratio": peak["tf_ti2i"]["peak_mib"] / peak["plain"]["peak_mib"],
        "memory_above_start_ratio": peak["tf_ti2i"]["above_start_mib"] / max(peak["plain"]["above_start_mib"], 1e-9),
        "pairs_s": times,
    }


def tf_ti2i_call(pipe: diffusers.StableDiffusion3Pipeline, device: torch.device, size: int, steps: int, batch: int):
    """One TF-TI2I call of `batch` items (main seeds 0..B-1, one stand-in subject image VAE-encoded in the
    call, as the method encodes it once per subject and size), decoded: B PIL images."""
    import_repo()
    from monkey.baselines.tf_ti2i.sampling import References, SamplingSettings, decode, encode_reference, sample_tf_ti2i

    generator = torch.Generator("cpu").manual_seed(0)
    reference_pixels = torch.rand(1, 3, size, size, generator=generator) * 2 - 1  # a stand-in subject image
    settings = SamplingSettings(num_inference_steps=steps, guidance_scale=3.5)
    latent = encode_reference(pipe, reference_pixels, device)
    references = References(
        latents=torch.cat([latent] * batch),
        prompts=[PROMPT] * batch,
        generators=[torch.Generator("cpu").manual_seed(1 + 1000 * k) for k in range(batch)],
    )
    generators = [torch.Generator("cpu").manual_seed(k) for k in range(batch)]
    latents = sample_tf_ti2i(pipe, [PROMPT] * batch, generators, size, size, settings, references, device)
    return decode(pipe, latents)


def batch_sweep(
    pipe: diffusers.StableDiffusion3Pipeline,
    device: torch.device,
    size: int,
    steps: int,
    batches: list[int],
    budget_s: float,
    started: float,
) -> dict[str, Any]:
    """Images per second of TF-TI2I at each batch size (one timed call each after a batch-1 warm-up)."""
    memory = PeakMemory(device)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    tf_ti2i_call(pipe, device, size, min(2, steps), 1)  # warm-up
    out_of_memory = False
    for batch in batches:
        if out_of_memory or time.perf_counter() - started > budget_s:
            skipped.append({"batch": batch, "why": "out of memory" if out_of_memory else "time budget"})
            continue
        try:
            seconds, peak = measured(lambda batch=batch: tf_ti2i_call(pipe, device, size, steps, batch), memory)
        except torch.cuda.OutOfMemoryError:
            out_of_memory = True
            skipped.append({"batch": batch, "why": "out of memory"})
            torch.cuda.empty_cache()
            continue
        rows.append({"batch": batch, "seconds": seconds, "images_per_s": batch / seconds, "peak_memory": peak})
        print(f"  batch {batch}: {seconds:.2f} s, {batch / seconds:.4f} images/s", flush=True)
    base = next((row for row in rows if row["batch"] == 1), None)
    for row in rows:
        row["speedup_vs_batch_1"] = row["images_per_s"] / base["images_per_s"] if base else None
    return {"size": size, "steps": steps, "rows": rows, "skipped": skipped}


def measure(model: str, device: torch.device, dtype: torch.dtype, size: int, steps: int, pairs: int, blocks: int):
    """One benchmark case: build the pipeline, run both samplers; the record entry and the pipeline."""
    start = time.perf_counter()
    pipe = tiny_twin_pipeline(device) if model == "tiny_sd3" else real_shape_pipeline(device, dtype, blocks)
    built_s = time.perf_counter() - start
    params = sum(p.numel() for p in pipe.transformer.parameters())
    print(
        f"{model}: transformer {len(pipe.transformer.transformer_blocks)} blocks, {params / 1e9:.2f} B parameters, "
        f"built in {built_s:.1f} s on {device} ({dtype})",
        flush=True,
    )
    figures = run(pipe, device, size, steps, pairs)
    return {
        "model": model,
        "transformer_blocks": len(pipe.transformer.transformer_blocks),
        "transformer_parameters": params,
        "text_encoders": "tiny_sd3's own (CLIP-L, CLIP-G, T5)"
        if model == "tiny_sd3"
        else "tiny random CLIP-L/CLIP-G (pooled 2048), T5 dropped (zeros, 256 tokens)",
        "size": size,
        "steps": steps,
        "guidance_scale": 3.5,
        "dtype": str(dtype).removeprefix("torch."),
        "pairs": pairs,
        "build_s": built_s,
        "figures": figures,
    }, pipe


def markdown(record: dict[str, Any]) -> str:
    lines = [
        f"# TF-TI2I vs plain SD3 sampling ({record['script']})",
        "",
        f"{record['created']}; device {record['machine']['device']} {record['machine'].get('gpu', '')}; torch "
        f"{record['versions']['torch']}, diffusers {record['versions']['diffusers']}; load average "
        f"{record['machine']['load_average']}. {record['note']}",
        "",
        "| model (random weights) | blocks | size | steps | dtype | TF-TI2I s/image | plain s/image | time ratio "
        "| peak MiB TF-TI2I / plain | memory ratio (above loaded model) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in record["cases"]:
        f = case["figures"]
        peak = f["peak_memory"]
        lines.append(
            f"| {case['model']} | {case['transformer_blocks']} | {case['size']} | {case['steps']} | {case['dtype']} | "
            f"{f['tf_ti2i_s_median']:.3f} | {f['plain_s_median']:.3f} | {f['time_ratio_median']:.3f} | "
            f"{peak['tf_ti2i']['peak_mib']:.0f} / {peak['plain']['peak_mib']:.0f} ({f['memory_ratio']:.3f}) | "
            f"{peak['tf_ti2i']['above_start_mib']:.0f} / {peak['plain']['above_start_mib']:.0f} "
            f"({f['memory_above_start_ratio']:.3f}) |"
        )
    lines += ["", "Text encoders: " + "; ".join(f"{c['model']}: {c['text_encoders']}" for c in record["cases"]), ""]
    sweep = record.get("batches")
    if sweep:
        lines += [
            f"Several items per call (issue 30 point 2): TF-TI2I alone, {sweep['size']} px, {sweep['steps']} steps, "
            "one timed call per batch size after a warm-up; images/s = items / seconds of the call (reference "
            "encoding and decode included); x batch 1.",
            "",
            "| items per call | s / call | images / s | x batch 1 | peak MiB (above loaded model) |",
            "|---|---|---|---|---|",
        ]
        for row in sweep["rows"]:
            speedup = f"{row['speedup_vs_batch_1']:.2f}" if row["speedup_vs_batch_1"] is not None else "-"
            peak = row["peak_memory"]
            lines.append(
                f"| {row['batch']} | {row['seconds']:.3f} | {row['images_per_s']:.4f} | {speedup} | "
                f"{peak['peak_mib']:.0f} ({peak['above_start_mib']:.0f}) |"
            )
        lines += [f"| {skip['batch']} | skipped: {skip['why']} | | | |" for skip in sweep["skipped"]]
        lines.append("")
    return "\n".join(lines)


def write_record(record: dict[str, Any], out: Path, stem: str) -> Path:
    """json + md, each written to a temp file and renamed (the harness's atomic rule)."""
    out.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(record, indent=2, default=str) + "\n"), (".md", markdown(record))):
        path = out / f"{stem}{suffix}"
        temp = path.with_suffix(suffix + ".tmp")
        temp.write_text(text)
        os.replace(temp, path)
    return out / f"{stem}.md"


def record_for(cases: list[dict[str, Any]], device: torch.device, script: str, note: str) -> dict[str, Any]:
    return {
        "benchmark": "tf_ti2i_speed",
        "script": script,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(device),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
        },
        "note": note,
        "cases": cases,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the tiny SD3 twin on CPU (seconds)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=None, help="px (default 1024; --quick 64)")
    parser.add_argument("--steps", type=int, default=None, help="FlowMatch Euler steps (default 28; --quick 2)")
    parser.add_argument("--blocks", type=int, default=38, help="joint blocks of the real shape (38 = all)")
    parser.add_argument("--pairs", type=int, default=None, help="interleaved pairs (default 2; --quick 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    parser.add_argument("--batches", default=None, help="items per call of the images/s sweep, e.g. 1,2,4,8")
    parser.add_argument("--batch-steps", type=int, default=None, help="steps of the sweep's calls (default --steps)")
    parser.add_argument("--budget-s", type=float, default=400.0, help="no sweep call starts after this many seconds")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    batches = [int(b) for b in args.batches.split(",")] if args.batches else []
    if any(b < 1 for b in batches):
        parser.error(f"--batches {batches}: every batch size must be >= 1")
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    else:
        device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    size = args.size or (64 if args.quick else 1024)
    steps = args.steps or (2 if args.quick else 28)
    pairs = args.pairs or (1 if args.quick else 2)
    model = "tiny_sd3" if args.quick else "sd35_large_shape"
    case, pipe = measure(model, device, dtype, size, steps, pairs, args.blocks)
    note = "Random weights: the figures time the architecture, not image quality."
    record = record_for([case], device, "benchmarks/gpu_tf_ti2i.py", note)
    if batches:
        record["batches"] = batch_sweep(pipe, device, size, args.batch_steps or steps, batches, args.budget_s, started)
    path = write_record(record, args.out, "gpu_tf_ti2i_quick" if args.quick else "gpu_tf_ti2i")
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
