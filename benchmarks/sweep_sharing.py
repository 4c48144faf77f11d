"""A MONKEY sweep over 4 image tokens x 4 layers with shared work, against the same 16 variants run
independently (method.share.pass1=false method.share.pass2_prefix=false). Target: at most 0.6 x.

The demo profile (tiny models, the demo's 8 subjects x 4 prompts at 128 px, batches of 4), generate
stage only, each sweep one `monkey-bench` multirun in a fresh process with its own empty pass-1 and
prefix caches (the tiny checkpoints are written once beforehand, outside the timing). The layers are
the paper's Figure 1 layers. Both runs must give byte-identical images, which the script checks.

    python benchmarks/sweep_sharing.py                   # writes results/benchmarks/sweep_sharing.{json,md}
    python benchmarks/sweep_sharing.py --subjects 2 --prompts 2 --no-record

Wall time counts the whole process (imports, Hydra, model load, 16 jobs); `generate_s` sums the
manifests' per-batch times, i.e. the method's work alone. The machine's load average is recorded,
since other processes may share the CPU.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.6
LAYERS = (
    "up_blocks.1.attentions.0.transformer_blocks.0.attn2",
    "up_blocks.1.attentions.1.transformer_blocks.0.attn2",
    "up_blocks.2.attentions.0.transformer_blocks.0.attn2",
    "mid_block.attentions.0.transformer_blocks.0.attn2",
)


def sweep_command(root: Path, cache: Path, subjects: int, prompts: int, shared: bool) -> list[str]:
    layers = ",".join(f"[{layer}]" for layer in LAYERS)
    command = [
        sys.executable,
        "-m",
        "monkey.cli",
        "experiment=ablate_token",
        f"method.layers={layers}",
        f"method.share.record_layers=[{','.join(LAYERS)}]",
        f"method.share.dir={cache}",
        "run.stages=[generate]",
        f"run.root={root}",
        f"plan.limit.subjects={subjects}",
        f"plan.limit.prompts={prompts}",
    ]
    if not shared:
        command += ["method.share.pass1=false", "method.share.pass2_prefix=false"]
    return command


def manifest_rows(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(root.rglob("manifest/*.jsonl")) for line in path.open()]


def images(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("images/**/*.png"))}


def run_sweep(workdir: Path, subjects: int, prompts: int, shared: bool) -> dict[str, Any]:
    label = "shared" if shared else "independent"
    root, cache = workdir / label / "runs", workdir / label / "cache"
    command = sweep_command(root, cache, subjects, prompts, shared)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    rows = manifest_rows(root)
    batches = {(row["method"], row["writer"], row["config_hash"], row["timings"]["batch_s"]) for row in rows}
    sources = {}
    for row in rows:
        key = f"pass1={row['info'].get('pass1')}, prefix={row['info'].get('pass2_prefix')}"
        sources[key] = sources.get(key, 0) + 1
    return {
        "wall_s": round(wall, 2),
        "generate_s": round(sum(batch[-1] for batch in batches), 2),
        "images": len(rows),
        "variants": len({row["config_hash"] for row in rows}),
        "sources": sources,
        "root": root,
    }


def write_record(record: dict[str, Any]) -> None:
    out = ROOT / "results" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep_sharing.json").write_text(json.dumps(record, indent=2) + "\n")
    shared, independent = record["shared"], record["independent"]
    lines = [
        "# Sweep sharing: 4 image tokens x 4 layers, shared work vs independent variants",
        "",
        f"Demo profile (tiny models), {record['settings']['subjects']} subjects x {record['settings']['prompts']} "
        f"prompts = {shared['images'] // shared['variants']} images per variant, {shared['variants']} variants, "
        f"generate stage, {record['machine']['device']}. Load average at start/end: {record['machine']['load']}.",
        "",
        "| run | wall (s) | generate (s) | images | pass-1 / prefix sources |",
        "|---|---|---|---|---|",
        *[
            f"| {name} | {run['wall_s']} | {run['generate_s']} | {run['images']} | "
            + "; ".join(f"{k}: {v}" for k, v in sorted(run["sources"].items()))
            + " |"
            for name, run in (("independent", independent), ("shared", shared))
        ],
        "",
        f"Wall-time ratio shared / independent: **{record['wall_ratio']:.3f}** (target <= {TARGET}: "
        f"{'pass' if record['wall_ratio'] <= TARGET else 'FAIL'}); generate-time ratio {record['generate_ratio']:.3f}. "
        f"Images byte-identical: {record['identical_images']}.",
        "",
        "Command: `python benchmarks/sweep_sharing.py`.",
        "",
    ]
    (out / "sweep_sharing.md").write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--no-record", action="store_true", help="print only; do not write results/benchmarks/")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sweep-sharing-") as tmp:
        workdir = Path(tmp)
        os.environ.setdefault("MONKEY_CACHE", str(workdir / "monkey-cache"))
        warm = [sys.executable, "-c", "from monkey.models.tiny import materialize_tiny; materialize_tiny('lcm', 0)"]
        subprocess.run(warm, check=True, capture_output=True)
        load = [round(os.getloadavg()[0], 2)]
        independent = run_sweep(workdir, args.subjects, args.prompts, shared=False)
        shared = run_sweep(workdir, args.subjects, args.prompts, shared=True)
        load.append(round(os.getloadavg()[0], 2))
        identical = images(independent.pop("root")) == images(shared.pop("root"))
    record = {
        "benchmark": "sweep_sharing",
        "settings": {"subjects": args.subjects, "prompts": args.prompts, "tokens": [0, 1, 2, 3], "layers": LAYERS},
        "machine": {
            "device": f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
            "python": platform.python_version(),
            "load": load,
        },
        "independent": independent,
        "shared": shared,
        "wall_ratio": round(shared["wall_s"] / independent["wall_s"], 4),
        "generate_ratio": round(shared["generate_s"] / independent["generate_s"], 4),
        "target": TARGET,
        "identical_images": identical,
    }
    print(json.dumps(record, indent=2))
    if not args.no_record:
        write_record(record)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
