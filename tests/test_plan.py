"""Work plans: pairings, limits, deterministic method-independent seeds, shards."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monkey.datasets.dreambooth import load_dreambooth
from monkey.errors import ConfigError
from monkey.plan import build_plan, derive_seed, shard_items
from monkey.prompts import load_prompt_set


@pytest.fixture(scope="module")
def sources():
    return load_dreambooth()


@pytest.fixture(scope="module")
def prompts():
    return load_prompt_set("locations", "{subject_word} {location}")


def test_cross_pairing_counts(sources, prompts):
    plan = build_plan(sources, prompts, pairing="cross", seeds=2)
    assert len(plan) == 30 * 20 * 2
    assert len({item.item_id for item in plan}) == len(plan)


def test_cycle_pairing_pairs_row_k_with_prompt_k_mod_20(sources, prompts):
    plan = build_plan(sources, prompts, pairing="cycle")
    assert len(plan) == 30
    assert [item.prompt_index for item in plan] == [k % 20 for k in range(30)]
    assert plan[0].prompt == "backpack in the jungle"
    assert plan[2].prompt == "bear plushie on the beach"


def test_limits(sources, prompts):
    plan = build_plan(sources, prompts, limit_subjects=3, limit_prompts=4, seeds=2)
    assert len(plan) == 3 * 4 * 2
    named = build_plan(sources, prompts, limit_subjects=["dog", "teapot"], limit_prompts=1)
    assert [item.source.subject for item in named] == ["dog", "teapot"]
    with pytest.raises(ConfigError, match="unknown subjects"):
        build_plan(sources, prompts, limit_subjects=["unicorn"])
    with pytest.raises(ConfigError, match="pairing"):
        build_plan(sources, prompts, pairing="zip")


def test_seeds_are_deterministic_distinct_and_base_dependent(sources, prompts):
    first = build_plan(sources, prompts, seeds=2)
    again = build_plan(sources, prompts, seeds=2)
    assert [i.seed for i in first] == [i.seed for i in again]
    assert len({i.seed for i in first}) == len(first)
    other = build_plan(sources, prompts, seeds=2, base_seed=1)
    assert all(a.seed != b.seed for a, b in zip(first, other, strict=True))
    assert first[0].seed == derive_seed(0, "dreambooth/backpack/00", 0, 0)


def test_image_paths_are_unique_and_named_by_item(sources, prompts):
    plan = build_plan(sources, prompts, seeds=2)
    paths = {item.image_relpath("m") for item in plan}
    assert len(paths) == len(plan)
    assert plan[1].image_relpath("ip_adapter_1.0") == "images/ip_adapter_1.0/dreambooth/backpack/00_p00_s1.png"


@given(size=st.integers(0, 400), shards=st.integers(1, 17))
def test_shards_partition_the_plan(size, shards):
    items = list(range(size))
    parts = [shard_items(items, k, shards) for k in range(shards)]  # type: ignore[arg-type]
    assert [x for part in parts for x in part] == items  # no gap, no overlap, order kept
    assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced


def test_bad_shard_is_refused():
    with pytest.raises(ConfigError, match="shard=2"):
        shard_items([1, 2, 3], 2, 2)
