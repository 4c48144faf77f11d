"""Bad input stops with exit 2 and one line naming the key or file, before any model is loaded, and
loses nothing; a folder refuses to mix batch sizes; a manifest line that is not a row is skipped."""

import errno
import logging
import os
from pathlib import Path

import pytest
import torch
from helpers import QUICK, image_bytes, manifest_line_count

from monkey import atomic
from monkey.cli import run_job
from monkey.runner import generate_stage
from monkey.store import RunStore

SMALL = ("plan.limit.subjects=1", "plan.limit.prompts=2", "generation.batch_size=2", *QUICK)


def failed_line(caplog, code: int) -> str:
    """The one error line a failed job logged (exit code 2, no traceback)."""
    assert code == 2
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    message = errors[0].getMessage()
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("method.num_inference_steps=0", "method.num_inference_steps=0"),
        ("method.num_inference_steps=-3", "method.num_inference_steps=-3"),
        ("generation.height=7", "generation.height=7"),
        ("generation.width=100", "generation.width=100"),  # not a multiple of 8
        ("generation.batch_size=0", "generation.batch_size=0"),
        ("plan.seeds=0", "plan.seeds=0"),
        ("plan.limit.prompts=0", "plan.limit.prompts=0"),
        ("shard=3", "shard=3"),
        ("runtime.device=tpu", "runtime.device='tpu'"),
        ("+method.batch_size=-1", "method.batch_size=-1"),
    ],
)
def test_bad_generic_values_stop_in_one_line_before_any_work(make_config, tmp_path, caplog, override, names):
    code = run_job(make_config(*SMALL, "run.stages=[generate]", override), tmp_path / "run")
    message = failed_line(caplog, code)
    assert names in message and ("allowed" in message or "multiple of 8" in message or "must" in message)
    assert not (tmp_path / "run" / "images").exists()  # stopped before generating


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_a_gpu_is_one_line(make_config, tmp_path, caplog):
    message = failed_line(caplog, run_job(make_config(*SMALL, "runtime.device=cuda"), tmp_path / "run"))
    assert "runtime.device='cuda'" in message and "no CUDA GPU" in message


def test_subjects_csv_row_with_an_extra_field_names_file_and_line(make_config, tmp_path, caplog):
    from standins import noise

    data = tmp_path / "data"
    (data / "rex").mkdir(parents=True)
    noise(64, 64).save(data / "rex" / "00.jpg")
    (data / "subjects.csv").write_text("name,class\nrex,dog,extra\n")
    code = run_job(make_config(*SMALL, "dataset=folder", f"dataset.root={data}"), tmp_path / "run")
    message = failed_line(caplog, code)
    assert f"{data / 'subjects.csv'}:2" in message and "3 fields" in message


def test_a_full_disk_stops_in_one_line_and_keeps_finished_items(make_config, tmp_path, caplog, monkeypatch):
    """(Read-only and permission errors take the same path: tests/test_atomic_outputs.py.)"""
    code, words = errno.ENOSPC, "no space left"
    cfg = make_config(*SMALL, "plan.limit.prompts=4", "run.stages=[generate]")
    run_dir = tmp_path / "run"
    real_write, writes = atomic.atomic_write, {"n": 0}

    def disk_fills_after_two_images(path, write):
        if Path(path).suffix == ".png":
            writes["n"] += 1
            if writes["n"] > 2:
                def fail(handle):
                    handle.write(b"half an image")
                    raise OSError(code, os.strerror(code))
                return real_write(path, fail)
        return real_write(path, write)

    monkeypatch.setattr(atomic, "atomic_write", disk_fills_after_two_images)
    message = failed_line(caplog, run_job(cfg, run_dir))
    assert words in message and str(run_dir / "images") in message
    assert len(image_bytes(run_dir)) == manifest_line_count(run_dir) == 2  # the first batch, whole
    assert not [p for p in run_dir.rglob("*.tmp")]  # nothing half-written
    monkeypatch.setattr(atomic, "atomic_write", real_write)
    assert run_job(cfg, run_dir) == 0 and len(image_bytes(run_dir)) == 4  # space freed: it resumes


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_one_line(make_config, tmp_path, caplog):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_dir.chmod(0o555)
    try:
        message = failed_line(caplog, run_job(make_config(*SMALL, "run.stages=[generate]"), run_dir))
    finally:
        run_dir.chmod(0o755)
    assert "permission denied" in message and str(run_dir) in message


def test_another_batch_size_is_refused_naming_the_key(make_config, tmp_path):
    from monkey.errors import RunFolderError

    run_dir = tmp_path / "run"
    generate_stage(make_config(*SMALL), run_dir)
    with pytest.raises(RunFolderError, match=r"generation\.batch_size: 2 -> 4"):
        generate_stage(make_config(*SMALL, "generation.batch_size=4"), run_dir)
    with pytest.raises(RunFolderError, match=r"method\.batch_size: None -> 1"):
        generate_stage(make_config(*SMALL, "+method.batch_size=1"), run_dir)
    # the same effective batch size is the same folder: resumes, generates nothing
    same = make_config(*SMALL, "generation.batch_size=3", "+method.batch_size=2")
    assert generate_stage(same, run_dir).generated == 0


def test_a_json_line_that_is_not_a_row_is_skipped_with_file_and_line(make_config, tmp_path):
    run_dir = tmp_path / "run"
    generate_stage(make_config(*SMALL), run_dir)
    manifest = RunStore(run_dir).manifest_files()[0]
    rows_before = RunStore(run_dir).rows()
    with manifest.open("a") as handle:
        handle.write('{"foo": 1}\n[1, 2]\n{"method": "ip_adapter_1.0", "item_id": 3, "status": "ok"}\n')
    with pytest.warns(UserWarning) as caught:
        rows = RunStore(run_dir).rows()
    assert rows == rows_before
    messages = [str(w.message) for w in caught]
    assert any(f"{manifest}:3: not a manifest row" in m for m in messages)
    assert any(f"{manifest}:4: not a manifest row" in m for m in messages)
    assert any(f"{manifest}:5: not a manifest row" in m and "item_id" in m for m in messages)


def test_a_limit_logs_what_it_left_out(make_config, caplog):
    from monkey.runner import plan_from_config

    with caplog.at_level(logging.INFO, logger="monkey.plan"):
        plan_from_config(make_config("plan.limit.subjects=2", "plan.limit.prompts=3"))
    text = caplog.text
    assert "keeps 2 of 30 subjects" in text and "left out: bear_plushie" in text and "(18 more)" in text
    assert "keeps the first 3 of 20 prompts" in text
