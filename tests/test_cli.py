"""The console script end to end, as a user runs it: single run, multirun, kill -9 and resume, errors."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import QUICK, QUICK_SIZE, image_bytes, manifest_line_count, stable_rows

SMALL = ("plan.limit.subjects=2", "plan.limit.prompts=2", *QUICK)
GENERATE_ONLY = "run.stages=[generate]"  # these tests are about generation; tests/test_eval_cli.py runs all stages


def command() -> list[str]:
    script = Path(sys.executable).parent / "monkey-bench"
    return [str(script)] if script.exists() else [sys.executable, "-m", "monkey.cli"]


def run_cli(cwd: Path, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*command(), *overrides], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
    )


def test_single_run_writes_images_and_manifest(tmp_path):
    result = run_cli(tmp_path, "hydra.mode=RUN", GENERATE_ONLY, *SMALL)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "demo" / ("ip_adapter_1.0," + ",".join(sorted(SMALL)))
    assert len(image_bytes(run_dir)) == 4
    assert [row["prompt"] for row in stable_rows(run_dir)] == [
        "backpack in the jungle",
        "backpack in the snow",
        "backpack dog in the jungle",
        "backpack dog in the snow",
    ]
    assert (run_dir / ".hydra" / "shard-0-of-1" / "config.yaml").is_file()


def test_demo_multirun_makes_one_folder_per_method(tmp_path):
    # no step override: the methods name their steps differently (MONKEY: initial_steps/final_steps)
    result = run_cli(tmp_path, GENERATE_ONLY, "plan.limit.subjects=1", "plan.limit.prompts=1", *QUICK_SIZE)
    assert result.returncode == 0, result.stderr
    folders = sorted(p.name.split(",")[0] for p in (tmp_path / "runs" / "demo").iterdir() if p.is_dir())
    assert folders == ["ip_adapter_0.5", "ip_adapter_1.0", "masactrl", "monkey", "text_only"]


def test_killed_run_resumes_to_the_same_manifest(tmp_path):
    # one item per batch: a resumed run groups items into other batches, and batched float sums
    # differ from single ones by rounding (<= 1 uint8 level), which an exact byte comparison would see
    overrides = (
        "hydra.mode=RUN",
        GENERATE_ONLY,
        "plan.limit.subjects=3",
        "plan.limit.prompts=4",
        "generation.batch_size=1",
        *QUICK,
    )
    reference = tmp_path / "reference"
    reference.mkdir()
    assert run_cli(reference, *overrides).returncode == 0
    killed = tmp_path / "killed"
    killed.mkdir()
    process = subprocess.Popen(
        [*command(), *overrides],
        cwd=killed,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    run_dir = next((reference / "runs" / "demo").iterdir())
    killed_dir = killed / "runs" / "demo" / run_dir.name
    deadline = time.time() + 120
    while (time.time() < deadline and not (killed_dir / "manifest").is_dir()) or (
        (killed_dir / "manifest").is_dir() and manifest_line_count(killed_dir) < 3
    ):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 3 <= manifest_line_count(killed_dir) < 12
    assert run_cli(killed, *overrides).returncode == 0
    assert manifest_line_count(killed_dir) == 12
    assert stable_rows(killed_dir) == stable_rows(run_dir)
    assert image_bytes(killed_dir) == image_bytes(run_dir)


def test_unknown_method_lists_the_options(tmp_path):
    result = run_cli(tmp_path, "hydra.mode=RUN", "method=ip_adapter_2.0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "method=ip_adapter_2.0" in lines[0] and "ip_adapter_0.5" in lines[0]


def test_missing_dataset_root_is_one_clear_error(tmp_path):
    result = run_cli(tmp_path, "hydra.mode=RUN", "dataset.root=/no/such/folder")
    assert result.returncode == 2
    assert "dataset.root='/no/such/folder' does not exist" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not list((tmp_path / "runs").rglob("*"))  # a refused run leaves no folder, log or .hydra/ behind


def test_model_that_cannot_load_offline_names_the_id(tmp_path):
    result = run_cli(tmp_path, "hydra.mode=RUN", "model=lcm_dreamshaper", *SMALL)
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "model.pretrained='SimianLuo/LCM_Dreamshaper_v7'" in output and "HF_HUB_OFFLINE" in output
    assert "`hf download SimianLuo/LCM_Dreamshaper_v7`" in output  # the command to run, not a placeholder
    assert "stacktrace" not in output.lower() and "Traceback" not in output  # no pointer to a hidden trace
    assert not list((tmp_path / "runs").rglob("*"))  # refused after the checks: still no config, manifest or log
