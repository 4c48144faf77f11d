"""Shards through the real config path: every item in exactly one shard, whole batches, shard=auto
from the launcher's environment, per-shard file names, one GPU per process."""

import pytest
import torch
from conftest import compose_config
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from monkey.errors import ConfigError
from monkey.runner import plan_from_config, shard_work
from monkey.shards import launch_device, shard_label, shard_numbers


@settings(max_examples=25, deadline=None)
@given(
    subjects=st.integers(1, 12),
    prompts=st.integers(1, 6),
    seeds=st.integers(1, 3),
    batch_size=st.integers(1, 5),
    num_shards=st.integers(1, 9),
)
def test_shards_of_a_configured_plan_are_its_batches_exactly_once(subjects, prompts, seeds, batch_size, num_shards):
    base = compose_config(
        f"plan.limit.subjects={subjects}",
        f"plan.limit.prompts={prompts}",
        f"plan.seeds={seeds}",
        f"generation.batch_size={batch_size}",
        f"num_shards={num_shards}",
    )
    plan = plan_from_config(base)
    assert len(plan) == subjects * prompts * seeds
    shards = [shard_work(OmegaConf.merge(base, {"shard": k}), plan) for k in range(num_shards)]
    assert [(k, n) for k, n, _ in shards] == [(k, num_shards) for k in range(num_shards)]
    batches = [batch for _, _, mine in shards for batch in mine]
    # one-process batches, cut independently: consecutive runs of batch_size items
    expected = [plan[start : start + batch_size] for start in range(0, len(plan), batch_size)]
    assert batches == expected  # no gap, no overlap, order kept, no batch split across shards
    sizes = [len(mine) for _, _, mine in shards]
    assert max(sizes) - min(sizes) <= 1  # balanced in batches


def test_shard_auto_takes_rank_and_world_size_from_the_launcher():
    env = {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0"}
    assert shard_numbers("auto", 1, env) == (2, 4)
    assert shard_numbers("auto", "auto", env) == (2, 4)
    assert shard_numbers("auto", 4, env) == (2, 4)
    assert shard_numbers("auto", 1, {}) == (0, 1)  # not launched by accelerate/torchrun: the whole plan


def test_shard_auto_through_the_config(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    cfg = compose_config("shard=auto", "plan.limit.subjects=3", "plan.limit.prompts=1", "generation.batch_size=1")
    shard, num_shards, mine = shard_work(cfg, plan_from_config(cfg))
    assert (shard, num_shards) == (1, 3)
    assert [item.source.subject for batch in mine for item in batch] == ["backpack_dog"]


@pytest.mark.parametrize(
    ("shard", "num_shards", "env", "message"),
    [
        ("auto", 3, {"RANK": "0", "WORLD_SIZE": "2"}, "WORLD_SIZE=2, but num_shards=3"),
        ("auto", 1, {"RANK": "0"}, "both RANK and WORLD_SIZE"),
        ("auto", 1, {"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' must be an integer"),
        (2, 2, {}, r"shard=2 must lie in \[0, num_shards=2\)"),
        ("first", 2, {}, "shard='first' and num_shards=2 must be integers"),
        (0, 0, {}, "num_shards=0"),
    ],
)
def test_bad_shard_settings_are_one_clear_error(shard, num_shards, env, message):
    with pytest.raises(ConfigError, match=message):
        shard_numbers(shard, num_shards, env)


def test_shard_label_names_each_process_apart(monkeypatch):
    assert shard_label(1, 4) == "shard-1-of-4"
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert shard_label("auto", 1) == "shard-3-of-4"
    assert shard_label("auto", 7) == "shard-auto-of-7"  # Hydra must not fail; the job reports the error


def test_auto_device_is_the_process_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert launch_device("auto", {"LOCAL_RANK": "1"}) == "cuda:1"
    assert launch_device("auto", {}) == "auto"  # one process: resolve_runtime picks cuda
    assert launch_device("cpu", {"LOCAL_RANK": "1"}) == "cpu"  # an explicit device wins
    with pytest.raises(ConfigError, match="LOCAL_RANK=2 but only 2 CUDA device"):
        launch_device("auto", {"LOCAL_RANK": "2"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert launch_device("auto", {"LOCAL_RANK": "1"}) == "auto"  # CPU-only machine: cpu
