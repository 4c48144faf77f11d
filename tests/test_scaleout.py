"""Scaling out through existing engines: `accelerate launch` (one process per device) and SLURM through
Hydra's submitit launcher, on a real single-node SLURM cluster started here. Both must give exactly the
images and manifest rows of one process running the whole demo.

All runs use one CPU thread per process: float rounding on a CPU depends on the thread count, and
the point is that sharding changes nothing else.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from subprocess import PIPE

import pytest
from helpers import QUICK_SIZE, image_bytes, manifest_line_count, stable_rows
from monkey.eval.score_store import ScoreSet
from slurm_cluster import SlurmCluster, free_port, missing_programs

from monkey.store import RunStore, read_manifest_file

# 6 items per method in 3 batches of 2. Shards are whole batches: shard 0 gets items 0-1, shard 1
# items 2-5 (cutting at item 3 would split a batch, and batch neighbours change float rounding).
PLAN = ("plan.limit.subjects=3", "plan.limit.prompts=2", "generation.batch_size=2", *QUICK_SIZE)
SHARD_ITEMS = {0: [0, 1], 1: [2, 3, 4, 5]}  # plan indices
METHODS = ("ip_adapter_0.5", "ip_adapter_1.0", "masactrl", "monkey", "text_only")  # the demo's multirun
RUN_KEY = ",".join(sorted(o for o in PLAN if "batch_size" not in o))  # run folder name: batch size left out


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def monkey_bench() -> list[str]:
    script = Path(sys.executable).parent / "monkey-bench"
    return [str(script)] if script.exists() else [sys.executable, "-m", "monkey.cli"]


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: int) -> None:
    """Run to completion; on timeout end the whole process group (a launcher and the workers it started)."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=PIPE, stderr=PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(f"{command} timed out after {timeout}s:\n{stderr[-6000:]}") from None
    assert process.returncode == 0, f"{command} failed:\n{stdout[-3000:]}\n{stderr[-6000:]}"


def run_folders(cwd: Path) -> dict[str, Path]:
    return {method: cwd / "runs" / "demo" / f"{method},{RUN_KEY}" for method in METHODS}


@pytest.fixture(scope="module")
def single_process(tmp_path_factory) -> dict[str, Path]:
    """The demo (both methods) in one process: the result every sharded run must reproduce."""
    cwd = tmp_path_factory.mktemp("single")
    run([*monkey_bench(), *PLAN], cwd, environment(), timeout=300)
    folders = run_folders(cwd)
    for folder in folders.values():
        assert len(RunStore(folder).finished(folder.name.split(",")[0])) == 6
    return folders


def assert_same_run(folder: Path, reference: Path) -> None:
    assert stable_rows(folder) == stable_rows(reference)
    assert image_bytes(folder) == image_bytes(reference)


def assert_two_shards_wrote_apart(folder: Path, method: str) -> None:
    """Each shard has its own manifest file, Hydra config folder and log, holding only its own block."""
    for shard in (0, 1):
        label = f"shard-{shard}-of-2"
        manifest = folder / "manifest" / f"{method}--shard-{shard:03d}-of-002.jsonl"
        assert sorted(row["plan_index"] for row in read_manifest_file(manifest)) == SHARD_ITEMS[shard]
        assert (folder / ".hydra" / label / "config.yaml").is_file()
        log = (folder / f"{label}.log").read_text()
        assert f"in shard {shard}/2" in log and f"in shard {1 - shard}/2" not in log


def test_accelerate_launch_two_processes_equal_one_process(single_process, tmp_path):
    # `--multi_gpu` selects accelerate's torchrun launcher, which starts one process per device and
    # sets RANK/WORLD_SIZE/LOCAL_RANK; no process group is created, so it runs on CPUs as well.
    # (`--cpu --num_processes 2` would start a single process unless MPI is set up.)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(free_port()), "-m", "monkey.cli", "shard=auto", *PLAN]
    run(launch, tmp_path, environment(), timeout=300)
    for method, folder in run_folders(tmp_path).items():
        assert_same_run(folder, single_process[method])
        assert_two_shards_wrote_apart(folder, method)
        assert_same_scores(folder, single_process[method])
    # the peers share no barrier, so neither writes the report (the single process did, after its sweep)
    assert not (tmp_path / "runs" / "demo" / "report").exists()
    assert (single_process["text_only"].parent / "report" / "table1.csv").is_file()


def assert_same_scores(folder: Path, reference: Path) -> None:
    """Two shards scored one folder concurrently: every item once, as one process scores it (up to the
    float noise of other batch neighbours in the metric backbones)."""
    scores, expected = ({r["item_id"]: r["scores"] for r in ScoreSet(f, "tiny").records()} for f in (folder, reference))
    assert scores.keys() == expected.keys()
    for item_id, values in expected.items():
        assert scores[item_id] == pytest.approx(values, abs=1e-5)


MISSING = missing_programs()
NO_SLURM = f"SLURM test cluster needs Debian's slurm-wlm and munge (missing: {', '.join(MISSING)})"
REQUIRE_SLURM = os.environ.get("MONKEY_REQUIRE_SLURM") == "1"  # CI: a missing SLURM fails, never skips
needs_slurm = pytest.mark.skipif(bool(MISSING) and not REQUIRE_SLURM, reason=NO_SLURM)


@pytest.fixture
def slurm(tmp_path_factory):
    if MISSING:
        pytest.fail(f"{NO_SLURM}; MONKEY_REQUIRE_SLURM=1 forbids skipping")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def submit(slurm: SlurmCluster, *overrides: str) -> list[str]:
    """`monkey-bench -m hydra/launcher=slurm ...` as a user types it, fitted to this cluster (no GPU, few cores)."""
    fit = ["hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=30"]
    return [*monkey_bench(), "-m", "hydra/launcher=slurm", *overrides, *PLAN, *fit]


@needs_slurm
def test_slurm_shards_through_submitit_equal_one_process(slurm, single_process, tmp_path):
    command = submit(slurm, "shard=0,1", "num_shards=2")
    try:
        run(command, tmp_path, environment(SLURM_CONF=slurm.env["SLURM_CONF"]), timeout=400)
    except AssertionError as err:
        raise AssertionError(f"{err}\n{job_logs(tmp_path)}\n{slurm.logs()}") from err
    jobs = sorted((tmp_path / "runs" / "demo" / ".submitit").glob("*_*/*_log.out"))
    assert len(jobs) == 2 * len(METHODS)  # methods x 2 shards, one SLURM job each, each with its own log
    assert all("Job completed successfully" in path.read_text() for path in jobs)
    for method, folder in run_folders(tmp_path).items():
        assert_same_run(folder, single_process[method])
        assert_two_shards_wrote_apart(folder, method)


def job_logs(cwd: Path) -> str:
    paths = sorted((cwd / "runs" / "demo" / ".submitit").glob("*/*_log.*"))
    return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}" for p in paths)


@needs_slurm
def test_preempted_slurm_job_is_requeued_and_resumes(slurm, single_process, tmp_path):
    """SIGUSR2 is how SLURM warns a job of preemption or its time limit (submitit asks for it): submitit
    requeues the job, which reruns the Hydra job, which skips what the first attempt finished."""
    launcher = subprocess.Popen(
        submit(slurm, "method=ip_adapter_1.0", "run.stages=[generate]"),  # its log ends with the requeue
        cwd=tmp_path,
        env=environment(SLURM_CONF=slurm.env["SLURM_CONF"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        folder = run_folders(tmp_path)["ip_adapter_1.0"]
        deadline = time.monotonic() + 240
        while manifest_line_count(folder) < 2:  # the job has finished items to keep
            assert launcher.poll() is None and time.monotonic() < deadline, job_logs(tmp_path) + slurm.logs()
            time.sleep(0.05)
        (job,) = slurm.job_ids()
        slurm.run("scancel", "--signal=USR2", job)
        assert launcher.wait(timeout=300) == 0, job_logs(tmp_path) + slurm.logs()
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    attempts = re.findall(r"6 items in shard 0/1, (\d) finished", (folder / "shard-0-of-1.log").read_text())
    assert len(attempts) == 2 and attempts[0] == "0", job_logs(tmp_path)
    assert 2 <= int(attempts[1]) < 6, f"the job finished before it was preempted: {attempts}"
    assert "Requeued job" in job_logs(tmp_path)
    assert manifest_line_count(folder) == 6  # nothing generated twice
    assert_same_run(folder, single_process["ip_adapter_1.0"])
