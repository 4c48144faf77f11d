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

The code lives in benchmarks/throughput/, one module per concern: workload.py (the model, the batch and
the three methods), timing.py (how each figure is measured), speedups.py (the `runtime:` keys), evaluation.py
(the metric backbones), runs.py (one function per record section) and records.py (json and markdown).
"""

import argparse
import sys
from pathlib import Path

import torch
from throughput import records, runs
from throughput.preset import choose_preset, preset_overrides
from throughput.speedups import COMPILE_RESERVE_S, SPEEDUP_VARIANTS, measure_speedups, speedup_variants
from throughput.timing import spec_peak
from throughput.workload import log

ROOT = Path(__file__).resolve().parents[1]
__all__ = [
    "COMPILE_RESERVE_S",
    "SPEEDUP_VARIANTS",
    "choose_preset",
    "main",
    "parse_args",
    "preset_overrides",
    "spec_peak",
    "speedup_variants",
]


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
    parser.add_argument(
        "--larger-batch",
        type=int,
        default=32,
        help="--speedups: the plain run and the batch key at this size (0: no plain run)",
    )
    parser.add_argument(
        "--no-plain-larger",
        dest="plain_larger",
        action="store_false",
        help="--speedups: no plain run of the three methods at --larger-batch (the throughput run has one)",
    )
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
        path = records.write_record(args.out, "cpu_ratio", runs.cpu_ratio(args))
    elif args.cpu_breakdown:
        path = records.write_record(args.out, "cpu_breakdown", runs.cpu_breakdown(args))
    elif args.speedups:  # a CPU's figures (--quick) and a device's are kept side by side
        path = records.write_record(args.out, "speedups_cpu" if args.quick else "speedups", measure_speedups(args))
    else:
        path = records.write_record(args.out, "throughput", runs.throughput(args))
    log(f"wrote {path} and {path.with_suffix('.md')}")
    print(path.with_suffix(".md").read_text(), flush=True)
    return path


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
