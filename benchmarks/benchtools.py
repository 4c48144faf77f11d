"""What every benchmark script measures the same way: wall time around a synchronised device, peak
memory, interleaved A/B pairs, and the machine and commit a record was made on. One copy, so two
records never differ by how they were taken. Imported beside the scripts (`python benchmarks/X.py`
puts this folder on the path; tests that load a script by file put it there too)."""

import json
import os
import platform
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer reads what the work took."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call, the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(
    a: Callable[[], Any], b: Callable[[], Any], pairs: int, device: torch.device, label: str
) -> list[tuple[float, float]]:
    """(a, b) seconds per pair in ABBA order, so a drifting machine load hits both sides alike."""
    results = []
    for index in range(pairs):
        if index % 2 == 0:
            ta, tb = timed(a, device), timed(b, device)
        else:
            tb, ta = timed(b, device), timed(a, device)
        results.append((ta, tb))
        print(f"  {label} pair {index + 1}/{pairs}: {ta:.2f} s vs {tb:.2f} s (ratio {ta / tb:.3f})", flush=True)
    return results


class PeakMemory:
    """Peak memory of one call: the CUDA allocator's peak, or the process RSS sampled by a thread."""

    def __init__(self, device: torch.device):
        self.device = device

    def measure(self, fn: Callable[[], Any]) -> dict[str, float]:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            fn()
            sync(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            return {"peak_mib": peak / 2**20, "above_start_mib": (peak - before) / 2**20}
        import psutil  # CPU only: a GPU machine's environment may lack it

        process = psutil.Process()
        before = process.memory_info().rss
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], process.memory_info().rss)
                time.sleep(0.002)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            fn()
        finally:
            done.set()
            thread.join()
        peak[0] = max(peak[0], process.memory_info().rss)
        return {"peak_mib": peak[0] / 2**20, "above_start_mib": (peak[0] - before) / 2**20}


def machine(device: torch.device) -> dict[str, Any]:
    """The machine a record was made on, with its load when asked (a shared machine inflates times)."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "device": str(device),
        "load_average": os.getloadavg(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "cuda": str(torch.version.cuda),
    }


def provenance(device: torch.device, load_start: tuple[float, float, float] | None = None) -> dict[str, Any]:
    """A record's when, what code, which machine and which versions; with `load_start` (os.getloadavg()
    when the timing began) the machine's load then and now."""
    info = machine(device)
    if load_start is not None:
        info = {**info, "load_average_start": load_start, "load_average_end": os.getloadavg()}
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": git_commit(),
        "machine": info,
        "versions": versions(),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def git_commit() -> str | None:
    """HEAD of the checkout the script runs from (None outside git)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def monkey_against_ip_adapter(pipe: Any, sampler: Any, batch: Any, pairs: int, device: torch.device) -> dict[str, Any]:
    """MONKEY (`sampler`, a MonkeySampler) against the plain IP-Adapter at scale 1 with pass 2's steps
    and guidance, on one batch of one subject: a warm-up of each, peak memory, then `pairs` ABBA pairs.
    Returns the figures both CPU speed benchmarks record."""
    settings = sampler.settings
    masks: list[dict[str, Any]] = []

    def ip_adapter() -> Any:
        pipe.set_ip_adapter_scale(1.0)
        return pipe(
            prompt=list(batch.prompts),
            height=batch.height,
            width=batch.width,
            num_inference_steps=settings.final_steps,
            guidance_scale=settings.guidance_scale,
            generator=batch.generators(),
            ip_adapter_image_embeds=[batch.image_embeds],
            output_type="pil",
        )

    def monkey() -> Any:
        output = sampler(batch)
        masks.append(output.masks[0].info())
        return output

    print("warm-up ...", flush=True)
    monkey()
    ip_adapter()
    memory = PeakMemory(device)
    peak = {"ip_adapter": memory.measure(ip_adapter), "monkey": memory.measure(monkey)}
    print(f"peak memory: {peak}", flush=True)
    print("timing MONKEY vs IP-Adapter ...", flush=True)
    times = interleaved(monkey, ip_adapter, pairs, device, "monkey/ip_adapter")
    return {
        "monkey_s_median": statistics.median(a for a, _ in times),
        "ip_adapter_s_median": statistics.median(b for _, b in times),
        "time_ratio_median": statistics.median(a / b for a, b in times),
        "peak_memory": peak,
        "memory_ratio": peak["monkey"]["peak_mib"] / peak["ip_adapter"]["peak_mib"],
        "pairs_s": times,
        "mask_info": masks[-1],
    }


def batch_against_one_by_one(
    batched: Callable[[], Any], one_by_one: Callable[[], Any], count: int, pairs: int, device: torch.device
) -> dict[str, Any]:
    """N items in one call (`batched`) against the same N items one call each (`one_by_one`): a warm-up,
    each side's peak memory, then `pairs` ABBA pairs. The figures both CPU batch records end with,
    per image (a side's median seconds / N) and as the median of the pairs' ratios."""
    print(f"warm-up, then {pairs} pairs: batch {count} vs {count} x batch 1 ...", flush=True)
    batched()
    memory = PeakMemory(device)
    peak = {"batched": memory.measure(batched), "one_by_one": memory.measure(one_by_one)}
    times = interleaved(batched, one_by_one, pairs, device, f"batch {count}/one by one")
    return {
        "pairs_s": times,  # (one call of N items, N calls of one item)
        "seconds_per_image": {
            "batched": statistics.median(a for a, _ in times) / count,
            "one_by_one": statistics.median(b for _, b in times) / count,
        },
        "speedup_median": statistics.median(b / a for a, b in times),
        "peak_memory": peak,
    }


def batch_table(record: dict[str, Any]) -> list[str]:
    """A batch record's table and pairs (markdown lines), from batch_against_one_by_one's figures and
    `settings.batch`."""
    per_image, peak = record["seconds_per_image"], record["peak_memory"]
    pairs = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in record["pairs_s"])
    return [
        "| items | s / image, one call of all | s / image, one call each | speed-up (median of pairs) "
        "| peak RSS MiB, batched / one by one |",
        "|---|---|---|---|---|",
        f"| {record['settings']['batch']} | {per_image['batched']:.3f} | {per_image['one_by_one']:.3f} | "
        f"{record['speedup_median']:.2f} | {peak['batched']['peak_mib']:.0f} / "
        f"{peak['one_by_one']['peak_mib']:.0f} |",
        "",
        f"Pairs (s, batched/one by one): {pairs}.",
        "",
    ]


def write_json_and_markdown(record: dict[str, Any], path: Path, render: Callable[[dict[str, Any]], str]) -> None:
    """The record as `path` (JSON) and its markdown beside it (`.md`), the markdown printed too."""
    from monkey.atomic import atomic_write_bytes  # every file the project writes goes through the atomic path

    markdown = render(record)
    atomic_write_bytes(path, (json.dumps(record, indent=2) + "\n").encode())
    atomic_write_bytes(path.with_suffix(".md"), markdown.encode())
    print(markdown)
