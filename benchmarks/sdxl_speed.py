"""MONKEY against plain IP-Adapter on SDXL's architecture, on a CPU: wall time per image and peak memory.

SDXL base 1.0's UNet at its real channel widths (320/640/1280, cross-attention 2048, text-time
conditioning) with ONE transformer block per attention instead of (1, 2, 10), so it fits in about
4 GB of fp32 (the full UNet is ~10 GB); SDXL's VAE; text encoders at the real output widths with
2 layers; h94's ip-adapter_sdxl shapes (4 tokens from a 1280-d embedding, given) loaded by
`load_ip_adapter`; sdxl-turbo's scheduler, guidance 0, MONKEY as conf/method/monkey_sdxl.yaml
(4-step pass 1 stopping in the UNet after step 2's capture layer, 8-step pass 2). Random weights.

    python benchmarks/sdxl_speed.py                  # 256 px, CPU fp32, 3 interleaved pairs
    python benchmarks/sdxl_speed.py --pairs 5 --size 512

Timings interleave the methods (ABBA) and report medians; the load average is recorded, since other
processes may share the CPU. Peak memory is the resident set sampled every 2 ms (glibc's mmap
threshold fixed so freed tensors leave it). Writes results/benchmarks/sdxl_speed.json and .md.
benchmarks/gpu_sdxl.py measures the full architecture in fp16 at 1024 px on a GPU.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"
ROOT = Path(__file__).resolve().parents[1]
if MMAP_ENV not in os.environ and __name__ == "__main__":  # before torch allocates anything
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, MMAP_ENV: "131072"})

import torch  # noqa: E402
from benchtools import monkey_against_ip_adapter, provenance  # noqa: E402
from sdxl_arch import PROMPT, parameters, sdxl_pipeline, subject_embeds  # noqa: E402

from monkey.adapter.sampler import MonkeySampler, SubjectBatch  # noqa: E402
from monkey.adapter.settings import MonkeySettings  # noqa: E402
from monkey.atomic import atomic_write_bytes, atomic_write_json  # noqa: E402

DEPTH = (1, 1, 1)
LAYER = "up_blocks.0.attentions.1.transformer_blocks.0.attn2"  # conf/method/monkey_sdxl.yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=3, help="interleaved MONKEY/IP-Adapter pairs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "sdxl_speed.json")
    args = parser.parse_args()
    if args.threads:  # on a shared machine one thread avoids OpenMP spin-waits against other processes
        torch.set_num_threads(args.threads)
    device, dtype = torch.device("cpu"), torch.float32
    torch.set_flush_denormal(True)
    load_start = os.getloadavg()
    settings = MonkeySettings(layers=[LAYER], token=1, guidance_scale=0.0)
    with tempfile.TemporaryDirectory(prefix="monkey-sdxl-speed-") as folder:
        print(f"building SDXL-shaped pipeline (depth {DEPTH}) with random weights ...", flush=True)
        pipe = sdxl_pipeline(Path(folder), device, dtype, depth=DEPTH)
    sampler = MonkeySampler(pipe, settings)
    embeds = subject_embeds(False, device, dtype)  # [1, 1, 1280]
    batch = SubjectBatch([PROMPT], [0], embeds, args.size, args.size)
    head_to_head = monkey_against_ip_adapter(pipe, sampler, batch, args.pairs, device)
    figures = {
        **head_to_head,
        "unet_evaluation_ceiling": (settings.last_capture_step + 1 + settings.final_steps) / settings.final_steps,
    }
    record = {
        "benchmark": "sdxl_speed",
        **provenance(device, load_start),
        "settings": {
            "model": f"SDXL base 1.0 UNet widths, transformer blocks per level {DEPTH} (real: (1, 2, 10)), "
            "random weights; h94 ip-adapter_sdxl shapes; sdxl-turbo scheduler",
            "unet_parameters": parameters(pipe.unet),
            "size": args.size,
            "dtype": "float32",
            "pairs": args.pairs,
            "monkey": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
            "ip_adapter": {"scale": 1.0, "steps": settings.final_steps, "guidance_scale": settings.guidance_scale},
            "command": "python benchmarks/sdxl_speed.py " + " ".join(sys.argv[1:]),
        },
        "figures": figures,
    }
    atomic_write_json(args.out, record)
    atomic_write_bytes(args.out.with_suffix(".md"), markdown(record).encode())
    print(markdown(record))


def markdown(record: dict[str, Any]) -> str:
    f, m, s = record["figures"], record["machine"], record["settings"]
    peak = f["peak_memory"]
    return "\n".join(
        [
            "# MONKEY / IP-Adapter on SDXL's architecture, CPU (benchmarks/sdxl_speed.py)",
            "",
            f"{record['created']}, commit {record['git_commit']}; {m['processor']}, {m['logical_cpus']} logical "
            f"CPUs, {m['memory_gib']} GiB; torch {record['versions']['torch']}, diffusers "
            f"{record['versions']['diffusers']}. Load average at start {m['load_average_start']}, at end "
            f"{m['load_average_end']}: the machine was shared with other engineers' jobs, so absolute times are "
            "inflated; the methods were interleaved (ABBA) and the ratio is the median of per-pair ratios.",
            "",
            f"{s['model']} ({s['unet_parameters'] / 1e6:.0f} M UNet parameters), {s['size']} px, {s['dtype']}, "
            f"guidance 0, {s['pairs']} pairs, {m['torch_threads']} torch thread(s). Command: `{s['command']}`",
            "",
            "| figure | value |",
            "|---|---|",
            "| per-pair ratios | " + ", ".join(f"{a / b:.3f}" for a, b in f["pairs_s"]) + " |",
            f"| MONKEY / IP-Adapter wall time per image | {f['time_ratio_median']:.3f} "
            f"({f['monkey_s_median']:.2f} s / {f['ip_adapter_s_median']:.2f} s; ceiling by UNet evaluations "
            f"{f['unet_evaluation_ceiling']:.3f}) |",
            f"| peak resident memory MONKEY / IP-Adapter | {f['memory_ratio']:.3f} ({peak['monkey']['peak_mib']:.0f} / "
            f"{peak['ip_adapter']['peak_mib']:.0f} MiB; above the loaded model {peak['monkey']['above_start_mib']:.0f}"
            f" / {peak['ip_adapter']['above_start_mib']:.0f} MiB) |",
            "",
        ]
    )


if __name__ == "__main__":
    main()
