"""Soak test (not in CI): SIGKILL `monkey-bench` at random points of generate, evaluate and report, for
every native method and `external` (FreeGraftor's driver against the test suite's fake checkout), then
let it finish, and compare the final run folder with an uninterrupted run's, file by file.

Each stage runs as its own command (`run.stages=[<stage>]`, the same overrides otherwise), killed
`--kills` times per method in all, spread over the stages in proportion to `--split`. A kill waits
until the process has started writing into the run folder (any file newer than its start, logs aside),
then a random further delay (uniform in 0..`--jitter` s), so kills land while files are being written
rather than during imports. After every kill every file of the folder must open whole (PNG decodes,
PDF ends in %%EOF, parquet and CSV parse, JSON parses); a killed writer's `.*.tmp` file is the one
exception (never read). The last command of each stage runs to the end, and its start removes the
temp files of killed writers (monkey.atomic.remove_stale_temp_files): none may be left at the end.

Comparison with the uninterrupted run (run in another folder with the same commands, no kills):
every file must be byte-identical except
  - logs and `.hydra/` (timestamps, the folder's own path),
  - manifests, compared row by row without the fields that record when and by whom
    (`created`, `timings`, `writer`) and MONKEY's `info.pass1`/`pass2_prefix`/`pass2_prefix_steps`
    (computed or read from the content cache, which the two runs share),
  - score records (JSON), compared without `created` and `image_stat` (the image file's mtime),
  - report tables (CSV, parquet), compared as tables without those columns and with the run root's
    own path (which names the folder) replaced by a placeholder,
  - report PDFs, compared without their /CreationDate,
  - the gallery's thumbnails, compared by content through gallery.html (their names are cache keys of
    the image's path and mtime),
  - the external method's exchange folder (`external/`: the driver's own answers and timings; the
    stored images and rows are compared like any method's).

    python benchmarks/soak_kills.py        # every method, 3 kills each -> results/benchmarks/soak_kills.{json,md}
    python benchmarks/soak_kills.py --kills 30 --methods monkey --no-record
"""

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("generate", "evaluate", "report")
VOLATILE_ROW_FIELDS = ("created", "timings", "writer")
# MONKEY's row info says whether its shared passes were computed or read from the content cache, which
# both runs share (MONKEY_CACHE): the killed run finds the reference run's passes there
VOLATILE_INFO_FIELDS = ("pass1", "pass2_prefix", "pass2_prefix_steps")
VOLATILE_SCORE_FIELDS = ("created", "image_stat")


# the six native methods (one IP-Adapter scale: the other is the same code) and the external one
METHODS = ("ip_adapter_1.0", "masactrl", "monkey", "rectifid", "text_only", "tf_ti2i", "external")
FAKE_FREEGRAFTOR = ROOT / "tests" / "fake_freegraftor"


def external_overrides(work: Path) -> list[str]:
    """`external`: FreeGraftor's driver (an external process speaking the job-file protocol) against the
    fake checkout of tests/fake_freegraftor, so the soak needs no FLUX weights."""
    root = work / "freegraftor"
    checkout = root / "FreeGraftor"
    if not checkout.is_dir():
        (checkout / "src").mkdir(parents=True)
        shutil.copy(FAKE_FREEGRAFTOR / "pipeline_af8c190.py", checkout / "src" / "pipeline.py")
        for name in ("fake_upstream.py", "torch.py"):
            shutil.copy(FAKE_FREEGRAFTOR / name, checkout / "src" / name)
        (checkout / ".git").mkdir()
        (checkout / ".git" / "HEAD").write_text("af8c190" + "0" * 33 + "\n")
        for name in ("FLUX.1-dev", "grounding-dino-tiny"):
            (root / name).mkdir()
        (root / "sam_vit_h.pth").write_bytes(b"weights")
    return [
        "method=freegraftor",
        f"method.environment.checkout={checkout}",
        f"method.environment.python={sys.executable}",
        f"method.environment.flux_dev={root / 'FLUX.1-dev'}",
        f"method.environment.grounding_dino={root / 'grounding-dino-tiny'}",
        f"method.environment.sam={root / 'sam_vit_h.pth'}",
    ]


def method_overrides(method: str, work: Path) -> list[str]:
    return external_overrides(work) if method == "external" else [f"method={method}"]


def overrides(run_root: Path, method: list[str], subjects: int, prompts: int) -> list[str]:
    return [
        "hydra.mode=RUN",
        f"run.root={run_root}",
        "run.name=soak",
        *method,
        "eval=tiny",
        f"plan.limit.subjects={subjects}",
        f"plan.limit.prompts={prompts}",
        "generation.batch_size=2",
        "generation.height=64",
        "generation.width=64",
    ]


def command(stage: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "monkey.cli", f"run.stages=[{stage}]", *args]


def experiment_dir(run_root: Path) -> Path:
    return run_root / "soak"


def newest_write(folder: Path, since: float) -> bool:
    """Whether any file under `folder` (logs and .hydra aside) was written at or after `since`."""
    if not folder.is_dir():
        return False
    for path in folder.rglob("*"):
        if path.suffix == ".log" or ".hydra" in path.parts or not path.is_file():
            continue
        try:
            if path.stat().st_mtime >= since:
                return True
        except FileNotFoundError:  # a temp file renamed away meanwhile
            return True
    return False


def unreadable(folder: Path) -> list[str]:
    """Files a reader cannot open whole (see the module docstring)."""
    import pandas as pd
    from PIL import Image

    bad = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            continue
        try:
            if path.suffix in (".png", ".jpg", ".jpeg"):  # plots, grids, gallery thumbnails
                with Image.open(path) as image:
                    image.load()
            elif path.suffix == ".pdf":
                if not path.read_bytes().rstrip().endswith(b"%%EOF"):
                    raise ValueError("no %%EOF")
            elif path.suffix == ".parquet":
                pd.read_parquet(path)
            elif path.suffix == ".csv":
                pd.read_csv(path)
            elif path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix in (".npy", ".safetensors", ".log", ".jsonl"):
                continue  # .npy/.safetensors: written like the others; logs and manifests: append-only
            else:
                path.read_text(encoding="utf-8")
        except Exception as err:  # any failure to read counts
            bad.append(f"{path.relative_to(folder)}: {type(err).__name__}: {err}")
    return bad


def table_text(path: Path, run_root: Path) -> str:
    """A report table as CSV text without volatile columns, the run root's path replaced."""
    import io

    import pandas as pd

    text = path.read_text() if path.suffix == ".csv" else pd.read_parquet(path).to_csv(index=False)
    frame = pd.read_csv(io.StringIO(text.replace(str(run_root), "<root>")))
    volatile = [c for c in frame.columns if c.split(".")[-1] in VOLATILE_SCORE_FIELDS or c == "cfg.run.root"]
    return frame.drop(columns=volatile).to_csv(index=False)


def stable_row(row: dict[str, Any]) -> dict[str, Any]:
    """A manifest row without the fields that record when, by whom, and from which cache."""
    kept = {k: v for k, v in row.items() if k not in VOLATILE_ROW_FIELDS}
    if isinstance(kept.get("info"), dict):
        kept["info"] = {k: v for k, v in kept["info"].items() if k not in VOLATILE_INFO_FIELDS}
    return kept


def gallery_text(path: Path) -> str:
    """gallery.html with each thumbnail's name (a cache key of the image's path and mtime, so never the
    same in two run roots) replaced by a hash of the thumbnail's bytes."""
    import hashlib

    def content(match: re.Match) -> str:
        thumb = path.parent / match.group(0)
        digest = hashlib.sha256(thumb.read_bytes()).hexdigest()[:20] if thumb.is_file() else "missing"
        return f"gallery/{digest}.jpg"

    return re.sub(r"gallery/[0-9a-f]+\.jpg", content, path.read_text())


def comparable(folder: Path, run_root: Path) -> dict[str, Any]:
    """relative path -> what must be equal between two runs (see the module docstring)."""
    from monkey.store import read_manifest_file

    out: dict[str, Any] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = str(path.relative_to(folder))
        if path.suffix == ".log" or ".hydra" in path.parts or (path.name.startswith(".") and rel.endswith(".tmp")):
            continue
        if "external" in Path(rel).parts:  # the exchange folder: the driver's own files (see the docstring)
            continue
        if path.parent.name == "gallery" and path.suffix == ".jpg":  # compared through gallery.html
            continue
        if path.name == "gallery.html":
            out[rel] = gallery_text(path)
            continue
        if path.suffix == ".jsonl" and path.parent.name == "manifest":
            rows = read_manifest_file(path)
            out[rel] = [stable_row(row) for row in rows]
        elif path.suffix == ".json" and "scores" in path.parts:
            record = json.loads(path.read_text())
            out[rel] = {k: v for k, v in record.items() if k not in VOLATILE_SCORE_FIELDS}
        elif path.suffix in (".csv", ".parquet") and "report" in path.parts:
            out[rel] = table_text(path, run_root)
        elif path.suffix == ".pdf":
            out[rel] = re.sub(rb"/CreationDate \([^)]*\)", b"", path.read_bytes())
        else:
            out[rel] = path.read_bytes()
    return out


def run_stage(stage: str, args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command(stage, args), env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{stage} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def kill_once(stage: str, args: list[str], env: dict[str, str], folder: Path, rng: random.Random, jitter: float) -> str:
    """Start the stage, kill it once it writes (plus a random delay); 'killed' or 'finished first'."""
    since = time.time()
    process = subprocess.Popen(command(stage, args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while process.poll() is None and not newest_write(folder, since):
        time.sleep(0.02)
    time.sleep(rng.uniform(0, jitter))
    if process.poll() is not None:
        return "finished first"
    process.send_signal(signal.SIGKILL)
    process.wait()
    return "killed"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per method (default 3: one per stage)")
    parser.add_argument("--split", default="1,1,1", help="share of the kills for generate,evaluate,report")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all)")
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--jitter", type=float, default=1.0, help="max random delay after the first write (s)")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--work", type=Path, help="keep the run roots here (default: a temp folder)")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument(
        "--recompare", action="store_true", help="redo the record's comparisons on the folders kept in --work"
    )
    return parser.parse_args(argv)


def kills_per_stage(total: int, split: str) -> dict[str, int]:
    weights = [float(w) for w in split.split(",")]
    raw = [total * w / sum(weights) for w in weights]
    counts = [int(r) for r in raw]
    for index in sorted(range(3), key=lambda i: counts[i] - raw[i])[: total - sum(counts)]:
        counts[index] += 1
    return dict(zip(STAGES, counts, strict=True))


def soak_method(method: str, args: argparse.Namespace, work: Path, env: dict[str, str], rng: random.Random) -> dict:
    """One method's soak: the uninterrupted run, the killed one, and how they compare."""
    started = time.perf_counter()
    reference_root, killed_root = work / method / "reference", work / method / "killed"
    for root in (reference_root, killed_root):
        shutil.rmtree(root, ignore_errors=True)
    chosen = method_overrides(method, work)
    ref_args = overrides(reference_root, chosen, args.subjects, args.prompts)
    killed_args = overrides(killed_root, chosen, args.subjects, args.prompts)
    run_stage("generate", [*ref_args, "plan.limit.prompts=1"], env)  # write the tiny checkpoints once
    shutil.rmtree(reference_root, ignore_errors=True)
    stage_seconds = {stage: round(run_stage(stage, ref_args, env), 2) for stage in STAGES}
    folder = experiment_dir(killed_root)
    events, broken = [], []
    for stage, count in kills_per_stage(args.kills, args.split).items():
        for _ in range(count):
            outcome = kill_once(stage, killed_args, env, folder, rng, args.jitter)
            bad = unreadable(folder)
            temps = len(list(folder.rglob(".*.tmp"))) if folder.is_dir() else 0
            events.append({"stage": stage, "outcome": outcome, "unreadable": bad, "temp_files_after": temps})
            broken += bad
            print(f"{method} {stage}: {outcome}; unreadable files: {len(bad)}; temp files: {temps}", flush=True)
        run_stage(stage, killed_args, env)  # then to the end
    compared = compare(reference_root, killed_root)
    return {
        "method": method,
        "reference_stage_seconds": stage_seconds,
        "kills": sum(e["outcome"] == "killed" for e in events),
        "finished_before_kill": sum(e["outcome"] != "killed" for e in events),
        "kills_per_stage": {s: sum(e["stage"] == s and e["outcome"] == "killed" for e in events) for s in STAGES},
        "temp_files_left_by_kills": sum(e["temp_files_after"] for e in events),
        **compared,
        "unreadable_after_a_kill": broken,
        "identical": not compared["differing_files"] and not broken,
        "seconds": round(time.perf_counter() - started, 1),
        "events": events,
    }


def compare(reference_root: Path, killed_root: Path) -> dict[str, Any]:
    """The finished killed folder against the uninterrupted one (module docstring), and its temp files."""
    folder = experiment_dir(killed_root)
    reference = comparable(experiment_dir(reference_root), reference_root)
    killed = comparable(folder, killed_root)
    leftovers = sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp"))
    return {
        "files_compared": len(reference),
        "differing_files": sorted(k for k in set(reference) | set(killed) if reference.get(k) != killed.get(k)),
        "leftover_temp_files": leftovers,
        "clean": not leftovers,
    }


def failed_method(method: str, error: str) -> dict[str, Any]:
    return {
        "method": method,
        "error": error[-2000:],
        "kills": 0,
        "finished_before_kill": 0,
        "kills_per_stage": dict.fromkeys(STAGES, 0),
        "temp_files_left_by_kills": 0,
        "files_compared": 0,
        "differing_files": [],
        "unreadable_after_a_kill": [],
        "leftover_temp_files": [],
        "identical": False,
        "clean": False,
        "events": [],
    }


def summary(args: argparse.Namespace, methods: list[str], results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "benchmark": "soak_kills",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "methods_not_run": methods[len(results) :],
        "kills": sum(r["kills"] for r in results),
        "finished_before_kill": sum(r["finished_before_kill"] for r in results),
        "files_compared": sum(r["files_compared"] for r in results),
        "identical": all(r["identical"] for r in results),
        "clean": all(r["clean"] for r in results),
        "methods": results,
    }


def recompare(work: Path) -> dict[str, Any]:
    """The record again, each method's comparison redone on the run roots kept in `work`."""
    record = json.loads((ROOT / "results" / "benchmarks" / "soak_kills.json").read_text())
    for result in record["methods"]:
        if "error" in result:
            continue
        result.update(compare(work / result["method"] / "reference", work / result["method"] / "killed"))
        result["identical"] = not result["differing_files"] and not result["unreadable_after_a_kill"]
    for key in ("identical", "clean"):
        record[key] = all(r[key] for r in record["methods"])
    record["files_compared"] = sum(r["files_compared"] for r in record["methods"])
    record["recompared"] = True
    write_record(record)
    return record


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.recompare:
        if args.work is None:
            raise SystemExit("--recompare needs --work, the folder a soak kept")
        return recompare(args.work)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods {unknown}: allowed {list(METHODS)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="monkey-soak-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.setdefault("MONKEY_CACHE", str(work / "cache"))
    rng = random.Random(args.seed)
    results: list[dict[str, Any]] = []
    for method in methods:
        try:
            results.append(soak_method(method, args, work, env, rng))
        except SystemExit as err:  # a stage that failed outright: recorded, the other methods still run
            print(f"{method}: {err}", flush=True)
            results.append(failed_method(method, str(err)))
        record = summary(args, methods, results)
        if not args.no_record:  # after every method: a soak stopped early keeps what it measured
            write_record(record)
    print(json.dumps({k: v for k, v in record.items() if k != "methods"}, indent=2))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return record


def result_word(result: dict[str, Any]) -> str:
    if "error" in result:
        return "FAILED: " + result["error"].strip().splitlines()[-1][:120].replace("|", "/")
    return ("identical" if result["identical"] else "DIFFERENT") + ("" if result["clean"] else ", temp files left")


def write_record(record: dict[str, Any]) -> None:
    out = ROOT / "results" / "benchmarks"
    sys.path.insert(0, str(ROOT / "src"))
    from monkey.atomic import atomic_write_bytes, atomic_write_json

    atomic_write_json(out / "soak_kills.json", record)
    settings, machine = record["settings"], record["machine"]
    lines = [
        "# Soak: random SIGKILLs over generate, evaluate and report, every method",
        "",
        f"`python benchmarks/soak_kills.py --kills {settings['kills']} --split {settings['split']} --subjects "
        f"{settings['subjects']} --prompts {settings['prompts']}` ({settings['kills']} kills requested per method; "
        f"64 px, batches of 2, eval=tiny; `external` is FreeGraftor's driver on the fake checkout). Machine: "
        f"{machine['platform']}, {machine['cpus']} CPUs, load average "
        f"{', '.join(f'{x:.1f}' for x in machine['load_avg'])} (shared with other work).",
        "",
        "| method | kills (generate, evaluate, report) | finished before the kill | unreadable after a kill "
        "| temp files left by kills | files compared | files that differ | temp files at the end | result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["methods"]:
        per = r["kills_per_stage"]
        lines.append(
            f"| {r['method']} | {r['kills']} ({per['generate']}, {per['evaluate']}, {per['report']}) "
            f"| {r['finished_before_kill']} | {len(r['unreadable_after_a_kill'])} | {r['temp_files_left_by_kills']} "
            f"| {r['files_compared']} | {len(r['differing_files'])} | {len(r['leftover_temp_files'])} "
            f"| {result_word(r)} |"
        )
    verdict = "identical" if record["identical"] else "DIFFERENT: see soak_kills.json"
    lines += [
        "",
        f"In all: {record['kills']} kills hit a running process ({record['finished_before_kill']} runs finished "
        f"first), {record['files_compared']} files compared. Result: {verdict}; temp files left at the end: "
        f"{'none' if record['clean'] else 'SOME: see soak_kills.json'}.",
        "",
    ]
    if record.get("recompared"):
        lines += [
            "Comparisons redone on the kept folders (`--recompare`) after the soak's comparison was corrected "
            "(gallery thumbnails by content, MONKEY's cache-provenance fields, the exchange folder by its path "
            "inside the run root); the kills and the checks after each kill are the soak's own.",
            "",
        ]
    if record["methods_not_run"]:
        lines += [f"Stopped before: {', '.join(record['methods_not_run'])} (not soaked in this record).", ""]
    atomic_write_bytes(out / "soak_kills.md", "\n".join(lines).encode())


if __name__ == "__main__":
    main()
