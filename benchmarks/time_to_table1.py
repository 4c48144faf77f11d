"""Time to Table 1: GPU-hours per method and in total for `experiment=paper_dreambooth` and `paper_magic`
under both presets, and the wall time on N GPUs through the SLURM launcher.

Items come from the real configs and plan code: each (method, preset) job of the experiment's sweep is
composed as `monkey-bench` composes it and its plan built by `monkey.runner.plan_from_config`. The full
DreamBooth grid is the listing of google/dreambooth (the shipped checksum list, `data/checksums/`, as a
tree of empty files: the loader reads no pixels) unless `--dreambooth-root` names a copy. Magic's card
count lives on the hub (jlbaker361/mtg): without `--magic-path` the record gives hours per card.

Per-image seconds are the H100 records' (results/benchmarks/gpu_*.json), at each method's fastest
measured batch, and only where the record measured the job's size and step count; every other job says
"not measured". Seconds per job = its batches x that batch's seconds (the last batch runs part full at
a full batch's cost). N GPUs: `shard=0..N-1 num_shards=N` through `hydra/launcher=slurm`, one GPU per
shard job; a job's wall time is its slowest shard's (monkey.plan.shard_batches: contiguous blocks of
whole batches), the experiment's the sum over its jobs run one after another.

    python benchmarks/time_to_table1.py                            # writes results/benchmarks/time_to_table1.*
    python benchmarks/time_to_table1.py --magic-path ~/data/mtg --gpus 1 4 8
"""

import argparse
import hashlib
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchtools import git_commit
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from monkey.atomic import atomic_write_bytes
from monkey.datasets.base import Source
from monkey.datasets.checksums import read_checksums
from monkey.datasets.download import checksum_file
from monkey.methods.presets import method_spec
from monkey.paths import bundled_dreambooth_root
from monkey.plan import build_plan, shard_batches
from monkey.prompts import prompt_set_from_config
from monkey.resolvers import register_resolvers
from monkey.runner import batch_size_of, plan_from_config

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("paper_dreambooth", "paper_magic")
LAUNCHER = ROOT / "conf" / "hydra" / "launcher" / "slurm.yaml"
NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Job:
    """One (method, preset) job of an experiment's sweep, as composed."""

    experiment: str
    method: str
    preset: str
    items: int  # plan items (Magic without --magic-path: per card)
    per_card: bool
    size: int
    steps: int | None  # the method's sampling steps (RectifID: guidance iterations), where it has them
    config_batch_size: int


@dataclass(frozen=True)
class Measurement:
    """A method's per-image time on a GPU, at its fastest measured batch, and what it was measured at."""

    method: str
    size: int
    steps: int | None
    batch_size: int
    seconds_per_image: float
    device: str
    source: str  # record file and figure


def sweep_methods(experiment: str) -> tuple[list[str], list[str]]:
    """The experiment's `hydra.sweeper.params` (method, preset) as its YAML lists them."""
    params = OmegaConf.load(ROOT / "conf" / "experiment" / f"{experiment}.yaml").hydra.sweeper.params
    return str(params.method).split(","), str(params.preset).split(",")


def dreambooth_listing(folder: Path) -> Path:
    """google/dreambooth's tree from the shipped checksum list: empty image files, and the class table
    (the bundled copy's, which the list's checksum identifies)."""
    sums = read_checksums(checksum_file("original"))
    table = bundled_dreambooth_root() / "dataset" / "prompts_and_classes.txt"
    if hashlib.sha256(table.read_bytes()).hexdigest() != sums["dataset/prompts_and_classes.txt"]:
        raise SystemExit(f"{table} is not google/dreambooth's prompts_and_classes.txt (checksum differs)")
    for name in sums:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(table.read_bytes() if name == "dataset/prompts_and_classes.txt" else b"")
    return folder


def compose_job(experiment: str, method: str, preset: str, data: list[str]):
    with initialize_config_module(config_module="monkey.conf", version_base="1.3"):
        return compose(
            config_name="config", overrides=[f"experiment={experiment}", f"method={method}", f"preset={preset}", *data]
        )


def method_steps(spec) -> int | None:
    knobs = spec.method
    if "iterations" in knobs:  # RectifID: what its time grows with
        return int(knobs["iterations"])
    for key in ("num_inference_steps", "final_steps", "num_steps"):
        if key in knobs:
            return int(knobs[key])
    return None


def count_jobs(dreambooth_root: Path, magic_path: str | None) -> list[Job]:
    """Every (method, preset) job of both experiments with its plan's item count, size and batch."""
    register_resolvers()
    jobs = []
    for experiment in EXPERIMENTS:
        methods, presets = sweep_methods(experiment)
        if experiment == "paper_dreambooth":
            data = [f"dataset.root={dreambooth_root}", "dataset.images=all"]
        else:
            data = [f"dataset.path={magic_path}"] if magic_path else []
        for method in methods:
            for preset in presets:
                cfg = compose_job(experiment, method, preset, data)
                spec = method_spec(cfg)
                per_card = experiment == "paper_magic" and not magic_path
                items = len(items_per_card(cfg) if per_card else plan_from_config(cfg))
                size = spec.height
                jobs.append(
                    Job(experiment, method, preset, items, per_card, size, method_steps(spec), batch_size_of(cfg))
                )
    return jobs


def items_per_card(cfg) -> list[Any]:
    """The plan of one Magic card (a stand-in source, not live, as dataset.live=false makes them)."""
    card = Source(
        dataset="magic", subject="card", image_id="0", image_path=Path("card.png"), class_name="character",
        subject_word="character", live=bool(cfg.dataset.live),
    )  # fmt: skip
    p = cfg.plan
    return build_plan([card], prompt_set_from_config(cfg.prompts), p.pairing, p.seeds, p.base_seed, None, None)


# ---- the GPU records ----------------------------------------------------------------------------------
def h100(name: str) -> bool:
    return "H100" in name


def lcm_measurements(record: dict[str, Any]) -> list[Measurement]:
    """IP-Adapter and MONKEY on LCM Dreamshaper's architecture, at the batch each is fastest at."""
    run = record.get("throughput")
    if not run or run.get("quick") or not h100(run["device_name"]):
        return []
    s, out = run["settings"], []
    for method, steps in (("ip_adapter", s["ip_adapter"]["steps"]), ("monkey", s["monkey"]["final_steps"])):
        best = max(run["batches"], key=lambda b, m=method: b[m]["images_per_s"])
        source = f"gpu_throughput.json throughput, batch {best['batch_size']}, {best[method]['images_per_s']:.2f} img/s"
        out.append(
            Measurement(method, s["size"], steps, best["batch_size"], 1 / best[method]["images_per_s"],
                        run["device_name"], source)
        )  # fmt: skip
    return out


def rectifid_measurements(record: dict[str, Any]) -> list[Measurement]:
    """RectifID: the fastest variant's seconds per image (per-iteration median extrapolated to the
    iteration count by the benchmark), one item per call; and, where the record holds the batch sweep
    (several items per guided call), each measured batch's extrapolated seconds per image."""
    if not record or record["settings"].get("quick") or not h100(record.get("gpu", "")):
        return []
    s = record["settings"]
    name, best = min(record["variants"].items(), key=lambda kv: kv[1]["extrapolated_s"])
    source = f"gpu_rectifid.json {name}, {best['extrapolated_s']:.1f} s/image at {s['extrapolated_to']} iterations"
    out = [Measurement("rectifid", s["size"], s["extrapolated_to"], 1, best["extrapolated_s"], record["gpu"], source)]
    for row in record.get("batches") or []:
        source = (
            f"gpu_rectifid.json batches, {row['mode']} batch {row['batch']}, {row['images_per_s']:.4f} img/s "
            f"at {s['extrapolated_to']} iterations"
        )
        out.append(
            Measurement("rectifid", s["size"], s["extrapolated_to"], row["batch"], 1 / row["images_per_s"],
                        record["gpu"], source)
        )  # fmt: skip
    return out


def tf_ti2i_measurements(record: dict[str, Any]) -> list[Measurement]:
    """TF-TI2I on SD3.5-large's shape (all 38 blocks): its median seconds per image, one item per call; with
    the batch sweep (fewer steps per call), batch B's time per image is that median over B's measured
    speed-up against batch 1 in the same sweep. An approximation, and the source says so: the sweep's per-call
    costs that do not grow with the steps (encoding, decoding) weigh more at its few steps than at the case's."""
    if not record or not h100(record["machine"].get("gpu") or ""):
        return []
    gpu = record["machine"]["gpu"]
    out = []
    for case in record["cases"]:
        if case["model"] != "sd35_large_shape" or case["transformer_blocks"] != 38:
            continue
        median = case["figures"]["tf_ti2i_s_median"]
        out.append(
            Measurement("tf_ti2i", case["size"], case["steps"], 1, median, gpu,
                        f"gpu_tf_ti2i.json {case['model']}, {median:.2f} s/image "
                        "(tiny text encoders, T5 dropped: the transformer's time)")
        )  # fmt: skip
        sweep = record.get("batches") or {}
        if sweep.get("size") != case["size"]:
            continue
        for row in sweep.get("rows") or []:
            if row["batch"] > 1 and row.get("speedup_vs_batch_1"):
                source = (
                    f"gpu_tf_ti2i.json batches, batch {row['batch']}: {row['speedup_vs_batch_1']:.2f}x batch 1's "
                    f"images/s at {sweep['steps']} steps, applied to {median:.2f} s/image (an approximation)"
                )
                seconds = median / row["speedup_vs_batch_1"]
                out.append(Measurement("tf_ti2i", case["size"], case["steps"], row["batch"], seconds, gpu, source))
    return out


def read_measurements(records: Path) -> list[Measurement]:
    def load(name: str) -> dict[str, Any]:
        path = records / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    return [
        *lcm_measurements(load("gpu_throughput")),
        *rectifid_measurements(load("gpu_rectifid")),
        *tf_ti2i_measurements(load("gpu_tf_ti2i")),
    ]


def measured_as(method: str) -> str:
    """The benchmark's name for a method: IP-Adapter's scale changes no work, so both rows share one."""
    return "ip_adapter" if method.startswith("ip_adapter_") else method


def match(job: Job, measurements: list[Measurement]) -> Measurement | None:
    """The fastest measurement of the job's method at its size and step count (its best batch), if any."""
    method = measured_as(job.method)
    found = [m for m in measurements if m.method == method and m.size == job.size and m.steps == job.steps]
    return min(found, key=lambda m: m.seconds_per_image, default=None)


def why_not(job: Job, measurements: list[Measurement]) -> str:
    others = [m for m in measurements if m.method == measured_as(job.method)]
    if not others:
        return f"{NOT_MEASURED}: no H100 record of {job.method}"
    at = ", ".join(f"{m.size} px / {m.steps} steps" for m in others)
    return f"{NOT_MEASURED} at {job.size} px / {job.steps} steps (measured at {at})"


# ---- the arithmetic -----------------------------------------------------------------------------------
def job_seconds(items: int, m: Measurement, gpus: int) -> float:
    """Wall seconds of one job on `gpus` shard jobs: its slowest shard's batches at the batch's time."""
    plan = list(range(items))  # stands for the plan: shard_batches only cuts it
    slowest = max(len(shard_batches(plan, m.batch_size, k, gpus)) for k in range(gpus))  # type: ignore[arg-type]
    return slowest * m.batch_size * m.seconds_per_image


def estimate(jobs: list[Job], measurements: list[Measurement], gpus: list[int]) -> list[dict[str, Any]]:
    rows = []
    for job in jobs:
        m = match(job, measurements)
        row: dict[str, Any] = {**asdict(job)}
        if m is None:
            row["status"] = why_not(job, measurements)
        else:
            row |= {
                "status": "measured",
                "measurement": asdict(m),
                "gpu_hours": job_seconds(job.items, m, 1) / 3600,
            }
            if not job.per_card:  # a card count is needed to shard a plan
                row["wall_hours"] = {str(n): job_seconds(job.items, m, n) / 3600 for n in gpus}
        rows.append(row)
    return rows


def totals(rows: list[dict[str, Any]], gpus: list[int]) -> dict[str, Any]:
    out = {}
    for experiment in EXPERIMENTS:
        mine = [r for r in rows if r["experiment"] == experiment]
        done = [r for r in mine if r["status"] == "measured"]
        out[experiment] = {
            "per_card": any(r["per_card"] for r in mine),
            "measured_jobs": len(done),
            "jobs": len(mine),
            "gpu_hours_measured_jobs": sum(r["gpu_hours"] for r in done),
            "wall_hours_measured_jobs": None
            if any(r["per_card"] for r in mine)
            else {str(n): sum(r["wall_hours"][str(n)] for r in done) for n in gpus},
            "not_measured": [f"{r['method']} ({r['preset']})" for r in mine if r["status"] != "measured"],
        }
    return out


# ---- the record ---------------------------------------------------------------------------------------
def markdown(record: dict[str, Any]) -> str:
    lines = [
        "# Time to Table 1 (benchmarks/time_to_table1.py)",
        "",
        f"{record['created']}. Items from the composed jobs of `experiment=paper_dreambooth` (the full grid, "
        f"{record['dreambooth_source']}) and `experiment=paper_magic` ({record['magic_source']}). Seconds per "
        "image from the H100 records at each method's fastest measured batch (its row says which); a job "
        "whose size or step count no record measured says so, and no figure is made up for it. Wall time on "
        f"N GPUs: `shard=0..N-1 num_shards=N hydra/launcher=slurm`, one GPU per shard job (launcher time limit "
        f"{record['launcher']['timeout_min']} min per job, requeued on timeout up to "
        f"{record['launcher']['max_num_timeout']} times), jobs one after another.",
        "",
    ]
    for experiment in EXPERIMENTS:
        lines += experiment_lines(record, experiment)
    sources = sorted({r["measurement"]["source"] for r in record["jobs"] if "measurement" in r})
    return "\n".join([*lines, "Sources: " + "; ".join(sources)]) + "\n"


def experiment_lines(record: dict[str, Any], experiment: str) -> list[str]:
    """One experiment's table and totals; per card (Magic offline) without wall times."""
    t, gpus = record["totals"][experiment], record["gpus"]
    per_card = t["per_card"]
    unit = " per card" if per_card else ""
    walls = [] if per_card else [f"wall h, {n} GPU{'s' if n > 1 else ''}" for n in gpus]
    lines = [
        f"## `{experiment}`",
        "",
        "| " + " | ".join(["method", "preset", f"items{unit}", "size", "batch (config / timed)", "s / image",
                         f"GPU-hours{unit}", *walls]) + " |",
        "|" + "---|" * (7 + len(walls)),
    ]  # fmt: skip
    for r in (r for r in record["jobs"] if r["experiment"] == experiment):
        cells = [r["method"], r["preset"], str(r["items"]), str(r["size"])]
        if r["status"] != "measured":
            cells += [f"{r['config_batch_size']} / -", r["status"], "", *[""] * len(walls)]
        else:
            m = r["measurement"]
            cells += [f"{r['config_batch_size']} / {m['batch_size']}", f"{m['seconds_per_image']:.3f}"]
            cells += [f"{r['gpu_hours']:.4f}", *(f"{r['wall_hours'][str(n)]:.3f}" for n in gpus if walls)]
        lines.append("| " + " | ".join(cells) + " |")
    total = f"Measured jobs ({t['measured_jobs']} of {t['jobs']}): {t['gpu_hours_measured_jobs']:.2f} GPU-hours{unit}"
    if per_card:
        total += " (times the card count; on N GPUs about that over N, plus up to one batch per job)"
    else:
        total += "; wall " + ", ".join(f"{t['wall_hours_measured_jobs'][str(n)]:.2f} h on {n}" for n in gpus)
    return ["", *lines, "", f"{total}. Not measured: {', '.join(t['not_measured']) or 'none'}.", ""]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=Path, default=ROOT / "results" / "benchmarks", help="the GPU records")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks", help="folder of the record")
    parser.add_argument("--dreambooth-root", type=Path, default=None, help="a google/dreambooth copy")
    parser.add_argument("--magic-path", default=None, help="a local Magic export (else: hours per card)")
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="GPU counts for the wall time")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="monkey-time-to-table1-") as folder:
        root = args.dreambooth_root or dreambooth_listing(Path(folder))
        jobs = count_jobs(root, args.magic_path)
    launcher = OmegaConf.load(LAUNCHER)
    record = {
        "benchmark": "time_to_table1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": git_commit(),
        "dreambooth_source": str(args.dreambooth_root)
        if args.dreambooth_root
        else "google/dreambooth's file list from data/checksums/dreambooth-original.sha256",
        "magic_source": args.magic_path
        or "card count unknown offline (jlbaker361/mtg on the hub): items and hours per card",
        "gpus": args.gpus,
        "launcher": {"timeout_min": launcher.timeout_min, "max_num_timeout": launcher.max_num_timeout},
        "jobs": estimate(jobs, read_measurements(args.records), args.gpus),
    }
    record["totals"] = totals(record["jobs"], args.gpus)
    path = args.out / "time_to_table1.json"
    atomic_write_bytes(path, (json.dumps(record, indent=2) + "\n").encode())
    atomic_write_bytes(path.with_suffix(".md"), markdown(record).encode())
    print(path.with_suffix(".md").read_text(), flush=True)
    return path


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
