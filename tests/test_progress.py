"""The multirun progress line (monkey.progress): the time left by hand, the sweep's jobs as Hydra's basic
sweeper makes them, the images a job plans, and the callback's line after a job.

Bugs planted to check that these tests can fail (each reverted):
    seconds_left multiplies by the images done instead of those remaining -> by_hand
    Tally.line divides the elapsed time by the images done (resumed ones counted) -> by_hand, callback
    sweep_jobs drops hydra.sweeper.params                                  -> sweep_jobs
    planned_images counts the whole plan, not the shard's share            -> planned_images
    generated_since counts every ok row, resumed ones too                  -> callback
"""

import json
import time

import pytest
from omegaconf import OmegaConf

from monkey.progress import MultirunProgress, Tally, duration, planned_images, seconds_left, sweep_jobs
from monkey.store import RunStore


def test_progress_line_by_hand():
    tally = Tally(planned=[32, 32, 64], started=1000.0, jobs_done=1, images_done=32, generated=32)
    # 160 s for 32 images: 5 s each; 128 - 32 = 96 left: 480 s
    assert seconds_left(160.0, 32, 96) == 480.0
    assert (
        tally.line(now=1160.0) == "multirun: 1/3 jobs, 32/128 images, 2m40s elapsed, about 8m00s left (5 s per image)"
    )
    resumed = Tally(planned=[32, 32], started=0.0, jobs_done=1, images_done=32, generated=0)  # job 1 was done
    assert resumed.line(now=3.0).endswith("32/64 images, 3s elapsed, time left: not known yet")
    unknown = Tally(planned=[8, None], started=0.0)
    assert unknown.line(now=0.0) == "multirun: 0/2 jobs, 0 images, 0s elapsed, time left: not known yet"
    assert [duration(s) for s in (0, 59.6, 61, 7322)] == ["0s", "1m00s", "1m01s", "2h02m"]


def test_sweep_jobs_as_the_basic_sweeper_makes_them():
    jobs = sweep_jobs({"method": "ip_adapter_1.0,text_only"}, ["plan.limit.prompts=1,2", "run.name=x"])
    assert jobs == [
        ["method=ip_adapter_1.0", "plan.limit.prompts=1", "run.name=x"],
        ["method=ip_adapter_1.0", "plan.limit.prompts=2", "run.name=x"],
        ["method=text_only", "plan.limit.prompts=1", "run.name=x"],
        ["method=text_only", "plan.limit.prompts=2", "run.name=x"],
    ]
    assert sweep_jobs(None, ["seed=1"]) == [["seed=1"]]


def test_planned_images_is_the_shards_share_of_the_plan(make_config):
    limits = ("plan.limit.subjects=3", "plan.limit.prompts=2")
    assert planned_images(make_config(*limits, "plan.seeds=3")) == 3 * 2 * 3  # subjects x prompts x seeds
    halves = [planned_images(make_config(*limits, "num_shards=2", f"shard={k}")) for k in (0, 1)]
    assert sum(halves) == 3 * 2 and min(halves) > 0  # each shard its share of the plan, together the plan


def test_callback_logs_jobs_images_and_time_left(tmp_path, caplog):
    caplog.set_level("INFO", logger="monkey")
    config = OmegaConf.create(
        {
            "run": {"stages": ["generate"]},
            "hydra": {"sweeper": {"params": None}, "overrides": {"task": ["method=a,b,c"]}},
        }
    )
    progress = MultirunProgress(count=lambda job: {"method=a": 4, "method=b": 4, "method=c": 8}[job[0]])
    progress.on_multirun_start(config)
    assert caplog.records[-1].getMessage().startswith("multirun: 0/3 jobs, 0/16 images")
    run_dir = tmp_path / "a"
    with RunStore(run_dir).writer("a", "test") as writer:  # 1 image made before the multirun, 3 during it
        for k in range(4):
            created = progress.tally.started - 100 if k == 0 else time.time()
            writer.append(
                {
                    "method": "a",
                    "item_id": f"i{k}",
                    "status": "ok",
                    "image": "x.png",
                    "created": created,
                    "config_hash": "c0ffee",
                    "plan_index": k,
                    "dataset": "d",
                    "subject": "s",
                    "source_path": "s.jpg",
                    "plan_prompt": "p",
                    "prompt": "p",
                    "seed": k,
                }  # every field the row reader checks
            )
    progress.tally.started -= 30  # the job took 30 s
    job = OmegaConf.create({"hydra": {"job": {"num": 0}, "runtime": {"output_dir": str(run_dir)}}})
    progress.on_job_end(job, None)
    line = caplog.records[-1].getMessage()
    # 4 of 16 images done, 3 made in about 30 s: 10 s each, 12 images left: about 120 s
    assert line.startswith("multirun: 1/3 jobs, 4/16 images, 30s elapsed, about 2m00s left (10 s per image)"), line
    assert json.loads(json.dumps(progress.tally.planned)) == [4, 4, 8]


def test_callback_is_silent_without_generate():
    progress = MultirunProgress(count=lambda job: pytest.fail("no count without a generate stage"))
    progress.on_multirun_start(OmegaConf.create({"run": {"stages": ["evaluate"]}}))
    progress.on_job_end(OmegaConf.create({}), None)
    assert progress.tally is None
