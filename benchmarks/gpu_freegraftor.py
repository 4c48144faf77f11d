"""GPU check: FreeGraftor through the harness on one item, with a real checkout and real weights.

    python benchmarks/gpu_freegraftor.py --out results/benchmarks            # paths from the environment
    python benchmarks/gpu_freegraftor.py --checkout ~/FreeGraftor --python ~/FreeGraftor/.venv/bin/python \
        --flux-dev /models/FLUX.1-dev --grounding-dino /models/grounding-dino-tiny --sam /models/sam_vit_h_4b8939.pth

Without a checkout (FREEGRAFTOR_CHECKOUT / --checkout) it prints and records "skipped: no checkout"
and exits 0: the test suite never needs it. Otherwise it runs the generate stage for one item
(the first bundled DreamBooth subject, the first location, fair preset, 512 px) into a temporary
run folder and records the item's status, the upstream API and commit the driver found, its time
and the driver's peak GPU memory in `<out>/gpu_freegraftor.json` and `.md`. It exits 1 when the
item did not come out ok.
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module

from monkey.atomic import atomic_write_bytes, atomic_write_json
from monkey.errors import MonkeyError
from monkey.runner import generate_stage
from monkey.store import RunStore

KEYS = {  # argument -> (environment variable, method.environment key)
    "checkout": ("FREEGRAFTOR_CHECKOUT", "checkout"),
    "python": ("FREEGRAFTOR_PYTHON", "python"),
    "flux_dev": ("FLUX_DEV", "flux_dev"),
    "grounding_dino": ("GROUNDING_DINO", "grounding_dino"),
    "sam": ("SAM", "sam"),
}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, (variable, _) in KEYS.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}", default=os.environ.get(variable), help=f"default: ${variable}"
        )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    return parser.parse_args()


def write_record(out: Path, record: dict[str, Any]) -> None:
    atomic_write_json(out / "gpu_freegraftor.json", record)
    lines = ["# FreeGraftor through the harness (GPU check)", "", "| field | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in record.items()]
    atomic_write_bytes(out / "gpu_freegraftor.md", ("\n".join(lines) + "\n").encode())


def main() -> int:
    args = parse()
    base = {"python_version": platform.python_version(), "machine": platform.node()}
    if not args.checkout:
        record = {**base, "status": "skipped: no checkout (set FREEGRAFTOR_CHECKOUT or --checkout)"}
        print(record["status"])
        write_record(args.out, record)
        return 0
    overrides = [
        "method=freegraftor",
        "plan.limit.subjects=1",
        "plan.limit.prompts=1",
        f"generation.height={args.size}",
        f"generation.width={args.size}",
        *(f"method.environment.{key}={getattr(args, name)}" for name, (_, key) in KEYS.items()),
    ]
    with initialize_config_module(config_module="monkey.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with tempfile.TemporaryDirectory(prefix="gpu-freegraftor-") as folder:
        start = time.perf_counter()
        try:
            summary = generate_stage(cfg, Path(folder))
        except MonkeyError as err:
            record = {**base, "status": f"error: {err}"}
            print(record["status"])
            write_record(args.out, record)
            return 1
        wall = time.perf_counter() - start
        (row,) = RunStore(folder).rows("freegraftor")
    external = row.get("info", {}).get("external", {})
    record = {
        **base,
        "status": row["status"],
        "error": row.get("error"),
        "api": external.get("api"),
        "commit": external.get("commit"),
        "device": external.get("device"),
        "peak_gpu_mb": external.get("peak_gpu_mb"),
        "prompt": row["prompt"],
        "size": args.size,
        "item_s": (row.get("timings") or {}).get("item_s"),
        "wall_s_including_model_load": round(wall, 1),
        "generated": summary.generated,
    }
    print(record)
    write_record(args.out, record)
    return 0 if row["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
