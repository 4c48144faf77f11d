"""TF-TI2I against plain SD3 sampling on this machine's CPU: seconds and peak memory per image.

Two cases, each TF-TI2I's loop against `StableDiffusion3Pipeline.__call__` with the same seed, steps
and size (benchmarks/gpu_tf_ti2i.py does the measuring):
- the tiny SD3 twin (conf/model/tiny_sd3), 128 px;
- the real SD3.5 large transformer shape with random weights, cut to its first `--blocks` joint
  blocks (the whole 8.1 B-parameter transformer needs 32 GB in fp32, more than this 24 GB machine;
  bf16 matmuls on CPU are not representative), with the SD3 VAE and the real 333 text tokens.

    python benchmarks/tf_ti2i_speed.py                  # a few minutes on 2 cores
    python benchmarks/tf_ti2i_speed.py --blocks 4 --size 256
    python benchmarks/tf_ti2i_speed.py --batch 4 --tiny-pairs 3   # tiny twin: 4 items in one call vs one each

Peak memory is the process's resident set sampled every 2 ms, with glibc's mmap threshold fixed so
freed tensors leave the RSS (the script re-executes itself with MALLOC_MMAP_THRESHOLD_ set), so
each sampler's own allocations show above the loaded model. Writes
results/benchmarks/tf_ti2i_speed.json and .md. With `--batch N` (issue 30 point 2) it measures instead,
on the tiny twin (`--tiny-size`, `--tiny-steps`), N items in one TF-TI2I call against the same N items
one call each, interleaved in ABBA pairs (`--tiny-pairs`), and writes tf_ti2i_speed_batch.json and .md.
"""

import argparse
import os
import sys
from pathlib import Path

MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"
if MMAP_ENV not in os.environ and __name__ == "__main__":  # before torch allocates anything
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, MMAP_ENV: "131072"})


import torch  # noqa: E402
from benchtools import batch_against_one_by_one, batch_table, provenance, write_json_and_markdown  # noqa: E402
from gpu_tf_ti2i import ROOT, measure, record_for, tf_ti2i_call, tiny_twin_pipeline, write_record  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny-size", type=int, default=128)
    parser.add_argument("--tiny-steps", type=int, default=4)
    parser.add_argument("--tiny-pairs", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=2, help="joint blocks of the real shape")
    parser.add_argument("--size", type=int, default=128, help="px of the real-shape case")
    parser.add_argument("--steps", type=int, default=2, help="steps of the real-shape case")
    parser.add_argument("--pairs", type=int, default=2, help="interleaved pairs of the real-shape case")
    parser.add_argument("--batch", type=int, default=None, help="items in one call against one call each (tiny)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = parser.parse_args()
    device = torch.device("cpu")
    if args.batch:
        return batch_comparison(args, device)
    cases = [
        measure("tiny_sd3", device, torch.float32, args.tiny_size, args.tiny_steps, args.tiny_pairs, 0)[0],
        measure("sd35_large_shape", device, torch.float32, args.size, args.steps, args.pairs, args.blocks)[0],
    ]
    note = (
        "CPU, fp32, shared with other engineers' jobs (see the load average): absolute seconds are inflated, "
        "the two samplers were interleaved (ABBA) and ratios are medians of pairs. Random weights. "
        f"{MMAP_ENV}={os.environ.get(MMAP_ENV)}."
    )
    path = write_record(record_for(cases, device, "benchmarks/tf_ti2i_speed.py", note), args.out, "tf_ti2i_speed")
    print(path.read_text())
    return 0


def batch_comparison(args, device: torch.device) -> int:
    """N items in one call against N calls of one item each, on the tiny twin; seconds per image."""
    load_start = os.getloadavg()
    pipe = tiny_twin_pipeline(device)
    size, steps, count = args.tiny_size, args.tiny_steps, args.batch

    def batched():
        return tf_ti2i_call(pipe, device, size, steps, count)

    def one_by_one():
        return [tf_ti2i_call(pipe, device, size, steps, 1) for _ in range(count)]

    figures = batch_against_one_by_one(batched, one_by_one, count, args.tiny_pairs, device)
    record = {
        "benchmark": "tf_ti2i_speed_batch",
        **provenance(device, load_start),
        "settings": {"model": "tiny_sd3", "size": size, "steps": steps, "batch": count, "pairs": args.tiny_pairs},
        **figures,
    }
    write_json_and_markdown(record, args.out / "tf_ti2i_speed_batch.json", batch_markdown)
    return 0


def batch_markdown(record: dict) -> str:
    s, machine = record["settings"], record["machine"]
    load = (
        tuple(round(x, 2) for x in machine["load_average_start"]),
        tuple(round(x, 2) for x in machine["load_average_end"]),
    )
    return "\n".join(
        [
            "# TF-TI2I: several items per call against one call each (benchmarks/tf_ti2i_speed.py --batch)",
            "",
            f"{record['created']}, commit {record['git_commit']}; {machine['processor']}, {machine['logical_cpus']} "
            f"logical CPUs, torch threads {machine['torch_threads']}, device cpu; torch {record['versions']['torch']}, "
            f"diffusers {record['versions']['diffusers']}. Load average at start {load[0]}, at end {load[1]}: a shared "
            "machine, so seconds are noisy; the two sides ran in interleaved ABBA pairs and the speed-up is the "
            "median of the pairs' ratios.",
            "",
            f"The tiny SD3 twin (random weights: the figures time the code path, not SD3.5), {s['size']} px, "
            f"{s['steps']} steps, float32, reference encoding and decode included, {s['pairs']} pairs.",
            "",
            *batch_table(record),
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
