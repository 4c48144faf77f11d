"""Leftovers of issue 26 for machines shared by colleagues and killed runs: stale temp files removed at a
stage's start (never a live writer's), the tiny-model cache readable under the umask, a refused
`external` answer stored as a failed item and asked again, and a refused run that writes nothing.

Planted bugs, each caught here (then reverted):
  - atomic.stale_temp: `not pid_alive` flipped to `pid_alive`: test_stale_temp_files_*
  - atomic.stale_temp: the other-host name judged by its pid: test_stale_temp_files_* (other host kept fresh)
  - runner.generate_stage: remove_stale_temp_files dropped: test_each_stage_start_removes_*[generate]
  - models.tiny.write_once: apply_umask dropped: test_the_tiny_cache_follows_the_umask
  - external.jobs.read_result: read_artifacts' name check dropped: test_a_refused_external_answer_*
  - runner.generate_batch: the artifact-name check before write_image dropped: test_a_refused_artifact_name_*
  - store.ManifestWriter.close: the empty-file removal dropped: test_a_writer_that_adds_no_row_leaves_no_file
  - runner.generate_stage: register_config back before check_conflicts: test_a_refused_rerun_writes_no_config
  - refused_run.discard_refused_run: the "only startup files" guard dropped: test_a_refused_run_*
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import compose_config
from monkey.baselines.external.jobs import Job, read_result, result_paths
from monkey.baselines.external.method import ExternalMethod
from PIL import Image

from monkey import atomic, runner
from monkey.atomic import STALE_AFTER_S, atomic_write_bytes, host_tag, remove_stale_temp_files
from monkey.errors import DataError, RunFolderError
from monkey.methods.base import GenerationRequest, GenerationResult
from monkey.methods.presets import method_spec
from monkey.models.tiny import write_once
from monkey.refused_run import discard_refused_run
from monkey.runner import generate_batch, plan_from_config
from monkey.store import RunStore

SMALL = ("plan.limit.subjects=1", "plan.limit.prompts=2", "generation.height=64", "generation.width=64")


# ---- 12: temp files of killed writers -----------------------------------------------------------------
def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def temp_file(folder: Path, name: str, age_s: float = 0.0) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"partial")
    if age_s:
        past = time.time() - age_s
        os.utime(path, (past, past))
    return path


def test_the_temp_name_names_its_writer(tmp_path):
    seen: list[str] = []
    atomic_write_bytes(tmp_path / "a.b.png", b"x")
    atomic.atomic_write(tmp_path / "c.json", lambda handle: seen.extend(os.listdir(tmp_path)))
    [temp] = [name for name in seen if name.endswith(".tmp")]
    match = atomic.TEMP_NAME.match(temp)
    assert match and match["target"] == "c.json" and int(match["pid"]) == os.getpid() and match["host"] == host_tag()


def test_stale_temp_files_go_and_a_live_writers_stays(tmp_path):
    here, other = host_tag(), "0" * 8 if host_tag() != "0" * 8 else "1" * 8
    old = STALE_AFTER_S + 60
    gone = [
        temp_file(tmp_path, f".a.png.{dead_pid()}@{here}.k2j4h5g6.tmp"),  # its writer is dead
        temp_file(tmp_path / "images" / "x", f".b.png.{dead_pid()}@{here}.zzzzzzzz.tmp"),  # in a subfolder too
        temp_file(tmp_path, ".c.json.abcd1234.tmp", age_s=old),  # an old name without pid, old
        temp_file(tmp_path, f".d.png.{os.getpid()}@{other}.abcdefgh.tmp", age_s=old),  # another machine's, old
    ]
    kept = [
        temp_file(tmp_path, f".e.png.{os.getpid()}@{here}.abcdefgh.tmp", age_s=old),  # a live writer: never
        temp_file(tmp_path, ".f.json.abcd1234.tmp"),  # no pid, fresh
        temp_file(tmp_path, f".g.png.{dead_pid()}@{other}.abcdefgh.tmp"),  # another machine's pid: by age only
        temp_file(tmp_path, "h.tmp", age_s=old),  # not a hidden temp name
        temp_file(tmp_path, ".i.png", age_s=old),
    ]
    assert sorted(remove_stale_temp_files(tmp_path)) == sorted(gone)
    assert [path.exists() for path in gone + kept] == [False] * len(gone) + [True] * len(kept)


@pytest.mark.parametrize("stage", ["generate", "evaluate", "report"])
def test_each_stage_start_removes_killed_writers_temp_files(stage, make_config, tmp_path, monkeypatch):
    from monkey.eval.report import build_report
    from monkey.eval.scoring import evaluate_run

    cfg = make_config(*SMALL, "eval=tiny")
    folder = tmp_path / "run" if stage != "report" else tmp_path / "report"
    stale = temp_file(folder / "images", f".x.png.{dead_pid()}@{host_tag()}.abcdefgh.tmp")
    live = temp_file(folder / "images", f".y.png.{os.getpid()}@{host_tag()}.abcdefgh.tmp")

    def stop(*args, **kwargs):
        raise DataError("stopped before the model")

    monkeypatch.setattr(runner, "build_method", stop)
    if stage == "generate":
        with pytest.raises(DataError, match="stopped before the model"):
            runner.generate_stage(cfg, folder)
    elif stage == "evaluate":
        assert evaluate_run(folder, cfg.eval).rows == 0
    else:
        with pytest.raises(DataError, match="no run folder"):
            build_report([tmp_path], folder, cfg.eval)
    assert not stale.exists() and live.exists()


# ---- 13: the shared tiny-model cache -----------------------------------------------------------------
@pytest.mark.parametrize(("umask", "folders", "files"), [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_the_tiny_cache_follows_the_umask(umask, folders, files, tmp_path):
    def private_writer(staging: Path) -> None:  # as mkdtemp and some save_pretrained calls write
        (staging / "unet").mkdir(mode=0o700)
        descriptor = os.open(staging / "unet" / "weights.safetensors", os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(descriptor)

    previous = os.umask(umask)
    try:
        root = write_once(tmp_path / "tiny" / "sd-abc", private_writer)
    finally:
        os.umask(previous)
    modes = {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")]}
    assert modes == {".": folders, "unet": folders, "unet/weights.safetensors": files, "complete": files}


# ---- 14: a refused external answer -------------------------------------------------------------------
@pytest.fixture(scope="module")
def plan():
    return plan_from_config(compose_config(*SMALL))


def request_of(item) -> GenerationRequest:
    return GenerationRequest(item, "a prompt", 7, 64, 64)


def answer(out: Path, job: Job, artifacts: object) -> None:
    image_path, json_path = result_paths(out, job.key)
    Image.new("RGB", (64, 64), "red").save(image_path)
    Image.new("L", (64, 64)).save(out / "mask.png")
    json_path.write_text(json.dumps({"job": job.record, "status": "ok", "artifacts": artifacts}))


@pytest.mark.parametrize(
    ("artifacts", "why"),
    [
        ({"../../x": "mask.png"}, "artifact name '../../x'"),
        ({"mask": "../../../etc/hostname"}, "outside its folder"),
        ({"mask": 3}, "not a file name"),
        ({"mask": "missing.png"}, "No such file"),
        (["mask.png"], "must map names"),
    ],
)
def test_a_refused_external_answer_is_a_failed_item_and_is_asked_again(artifacts, why, plan, tmp_path, tiny_runtime):
    out = tmp_path / "out"
    out.mkdir()
    job = Job.build(request_of(plan[0]), tmp_path / "s.png", "a prompt", {})
    answer(out, job, artifacts)
    result = read_result(out, job)
    assert result is not None and result.image is None and result.artifacts == {}
    assert result.error.startswith("refused answer") and why in result.error
    answer(out, job, {"mask": "mask.png"})  # the same answer, well-formed: taken
    assert read_result(out, job).artifacts["mask"].size == (64, 64)

    # a rerun clears the refused answer and asks the driver again (its run_jobs gets the item)
    answer(out, job, artifacts)
    method = ExternalMethod("ext", tiny_runtime, environment={"command": ["true"], "cwd": str(tmp_path)})
    method.work_dir = tmp_path
    asked: list[str] = []

    def run_jobs(todo, index_of, jobs_file, out_dir):
        asked.extend(job.key for job in todo)
        yield from ()

    method.run_jobs = run_jobs
    assert list(method.stream([request_of(plan[0])])) == []
    assert asked == [job.key] and not any(path.exists() for path in result_paths(out, job.key))


class OneResult:
    """A stand-in method handing back one image with the given artifacts."""

    def __init__(self, artifacts):
        self.artifacts = artifacts

    def prompt_for(self, item):
        return "a prompt"

    def generate(self, requests):
        return [GenerationResult(Image.new("RGB", (64, 64)), dict(self.artifacts)) for _ in requests]


def test_a_refused_artifact_name_leaves_no_image_without_its_row(make_config, plan, tmp_path):
    cfg = make_config(*SMALL)
    store = RunStore(tmp_path)
    with store.writer("m", "w") as writer, pytest.raises(RunFolderError, match="evil/name"):
        generate_batch(
            OneResult({"evil/name": Image.new("L", (8, 8))}),
            plan[:1],
            method_spec(cfg),
            store,
            writer,
            "m",
            {"config_hash": "h"},
            {plan[0].item_id: 0},
        )
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no image, no row, no empty manifest


# ---- 15: a refused run writes nothing ----------------------------------------------------------------
def failed_row(item: str) -> dict:
    """A failed row with every field the row reader checks (monkey.manifest_rows)."""
    return {
        "method": "m",
        "item_id": item,
        "status": "failed",
        "config_hash": "c0ffee",
        "plan_index": 0,
        "created": 1.0,
        "dataset": "d",
        "subject": "s",
        "source_path": "s.jpg",
        "plan_prompt": "p",
        "seed": 0,
    }


def test_a_writer_that_adds_no_row_leaves_no_file(tmp_path):
    store, calls = RunStore(tmp_path), []
    with store.writer("m", "w", lambda: calls.append(1)):
        pass
    assert not (tmp_path / "manifest").exists() and calls == []
    with store.writer("m", "w", lambda: calls.append(1)) as writer:
        writer.append(failed_row("a"))
        writer.append(failed_row("b"))
    assert calls == [1] and len(store.rows("m")) == 2
    with store.writer("m", "w", lambda: calls.append(1)):  # reopened, nothing added: the rows stay
        pass
    assert len(store.rows("m")) == 2


def test_a_refused_rerun_writes_no_config(make_config, plan, tmp_path, monkeypatch):
    cfg = make_config(*SMALL, "plan.limit.prompts=1")
    label = method_spec(cfg).name
    store = RunStore(tmp_path)
    relpath = plan[0].image_relpath(label)
    store.write_image(relpath, Image.new("RGB", (8, 8)))
    row = {
        "method": label,
        "item_id": plan[0].item_id,
        "status": "ok",
        "image": relpath,
        "config_hash": "0" * 16,
        "plan_prompt": plan[0].prompt,
        "prompt": plan[0].prompt,
        "seed": plan[0].seed,
        "plan_index": 0,
        "created": 1.0,
        "dataset": plan[0].source.dataset,
        "subject": plan[0].source.subject,
        "source_path": str(plan[0].source.image_path),
    }
    with store.writer(label, "other") as writer:
        writer.append(row)
    before = sorted(p for p in tmp_path.rglob("*"))
    monkeypatch.setattr(runner, "build_method", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(RunFolderError, match="another config"):
        runner.generate_stage(cfg, tmp_path)
    assert sorted(p for p in tmp_path.rglob("*")) == before  # no configs/<hash>.json, no empty manifest


def hydra_startup(run_dir: Path, shard: str) -> None:
    (run_dir / ".hydra" / shard).mkdir(parents=True)
    (run_dir / ".hydra" / shard / "config.yaml").write_text("a: 1\n")
    (run_dir / f"{shard}.log").write_text("[monkey][ERROR] - refused\n")


def test_a_refused_run_removes_only_its_own_startup_files(tmp_path):
    experiment = tmp_path / "runs" / "demo"
    run_dir = experiment / "m,x=1"
    hydra_startup(run_dir, "shard-0-of-1")
    (experiment / "multirun.yaml").write_text("hydra: {}\n")
    assert discard_refused_run(run_dir, "shard-0-of-1")
    assert [p.name for p in tmp_path.rglob("*")] == ["runs"]  # run.root stays, the rest is gone

    hydra_startup(run_dir, "shard-0-of-2")
    hydra_startup(run_dir, "shard-1-of-2")  # another shard of the same folder, still starting
    assert not discard_refused_run(run_dir, "shard-0-of-2")
    assert sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")) == [
        ".hydra",
        ".hydra/shard-1-of-2",
        ".hydra/shard-1-of-2/config.yaml",
        "shard-1-of-2.log",
    ]
    (run_dir / "manifest").mkdir()  # a folder with results keeps everything, its log included
    assert not discard_refused_run(run_dir, "shard-1-of-2") and (run_dir / "shard-1-of-2.log").exists()
