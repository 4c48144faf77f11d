"""The demo's wall time under `runtime.threads` settings, on the machine as it is and under a parallel
load (issue 27: on a loaded 2-core machine a default run crawled until OMP_NUM_THREADS=1).

Each setting runs `monkey-bench` (the demo experiment: every method, generate + evaluate + report) in
a fresh run root, without OMP_NUM_THREADS in its environment, so torch's own default (one thread per
core) is what `runtime.threads=<cores>` reproduces. The loaded case starts `--load` busy processes
(pure Python spin loops, one core each) beside it. The record keeps the load average before and
after every run: on a shared machine "load 0" may not be reachable, and the record says what it was.
Images of every setting are compared byte for byte with the first finished run's (thread counts change
float rounding: see docs/shared-machines.md).

    python benchmarks/threads_demo.py                          # writes results/benchmarks/threads_demo.{json,md}
    python benchmarks/threads_demo.py --subjects 2 --prompts 2 --no-record
"""

import argparse
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from benchtools import ROOT, provenance

from monkey.atomic import atomic_write_bytes, atomic_write_json
from monkey.threads import physical_cores


def spin(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


def run_demo(threads: str, run_root: Path, subjects: int, prompts: int, timeout_s: float) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    command = [
        sys.executable, "-m", "monkey.cli", f"run.root={run_root}", f"runtime.threads={threads}",
        f"plan.limit.subjects={subjects}", f"plan.limit.prompts={prompts}", "hydra.job_logging.root.level=WARNING",
    ]  # fmt: skip
    load_before = os.getloadavg()
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:  # stopped: the record says so, with the images made by then
        done = None
    seconds = time.perf_counter() - start
    if done is not None and done.returncode != 0:
        raise SystemExit(f"monkey-bench runtime.threads={threads} failed:\n{done.stderr[-3000:]}")
    return {
        "threads": threads,
        "finished": done is not None,
        "seconds": round(seconds, 1),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "images": image_digests(run_root),
    }


def image_digests(run_root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run_root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_root.rglob("*.png"))
        if "report" not in p.parts
    }


def measure(
    settings: list[str], load: int, subjects: int, prompts: int, spare: Path, timeout_s: float
) -> list[dict[str, Any]]:
    results = []
    for threads in settings:
        workers = []
        if load:
            stop_at = time.time() + 3600
            workers = [multiprocessing.Process(target=spin, args=(stop_at,), daemon=True) for _ in range(load)]
            for worker in workers:
                worker.start()
            time.sleep(5)  # let the spinners take their cores before the run starts
        try:
            result = run_demo(threads, Path(tempfile.mkdtemp(dir=spare)), subjects, prompts, timeout_s)
        finally:
            for worker in workers:
                worker.terminate()
                worker.join()
        result["parallel_load_processes"] = load
        print(f"load {load}: runtime.threads={threads}: {result['seconds']} s", flush=True)
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=8, help="plan.limit.subjects (the demo's 8)")
    parser.add_argument("--prompts", type=int, default=4, help="plan.limit.prompts (the demo's 4)")
    parser.add_argument("--load", type=int, default=physical_cores(), help="busy processes of the loaded case")
    parser.add_argument("--settings", help="runtime.threads values, comma-separated (default: <cores>,auto,1)")
    parser.add_argument("--timeout-s", type=float, default=3600, help="stop a run after this long (recorded)")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    cores = physical_cores()
    # torch's default (a thread per core), the new default, one
    settings = args.settings.split(",") if args.settings else [str(cores), "auto", "1"]
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="threads-demo-") as spare:
        runs = measure(settings, 0, args.subjects, args.prompts, Path(spare), args.timeout_s)
        runs += measure(settings, args.load, args.subjects, args.prompts, Path(spare), args.timeout_s)
    reference = next((run["images"] for run in runs if run["finished"]), runs[0]["images"])
    for run in runs:
        run["images_identical_to_first"] = sum(reference.get(k) == v for k, v in run["images"].items())
        run["images_compared"] = len(run.pop("images"))
    record = {
        **provenance(torch.device("cpu"), load_start),
        "settings": {
            "subjects": args.subjects,
            "prompts": args.prompts,
            "physical_cores": cores,
            "load": args.load,
            "timeout_s": args.timeout_s,
        },
        "runs": runs,
    }
    print(json.dumps(runs, indent=1))
    if not args.no_record:
        out = ROOT / "results" / "benchmarks"
        atomic_write_json(out / "threads_demo.json", record)
        atomic_write_bytes(out / "threads_demo.md", markdown(record).encode())


def markdown(record: dict[str, Any]) -> str:
    machine, settings = record["machine"], record["settings"]
    lines = [
        "# The demo's time by runtime.threads (benchmarks/threads_demo.py)",
        "",
        f"{record['created']}, commit {record['git_commit']}, {machine['processor']}, "
        f"{settings['physical_cores']} physical cores; demo with plan.limit.subjects={settings['subjects']} "
        f"prompts={settings['prompts']} (5 methods, generate + evaluate + report).",
        "This machine is shared: the load average before each run is what other users' work left, so the",
        "'no added load' rows are not an idle machine (see the load column).",
        "",
        "| added busy processes | runtime.threads | seconds | load average before (1 min) "
        "| images identical to the first finished run's |",
        "|---|---|---|---|---|",
    ]
    for run in record["runs"]:
        lines.append(
            f"| {run['parallel_load_processes']} | {run['threads']} | "
            f"{run['seconds'] if run['finished'] else '> ' + str(run['seconds']) + ' (stopped)'} | "
            f"{run['load_average_before'][0]:.2f} | {run['images_identical_to_first']} of {run['images_compared']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
