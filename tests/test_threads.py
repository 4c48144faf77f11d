"""`runtime.threads`: the auto rule, the refusals, and that the count changes speed only.

Planted bugs each test caught (issue 27):
- auto ignoring the load average (cores / jobs only) -> test_auto_takes_the_smallest_of_share_and_free
- auto dividing by the logical instead of the concurrent jobs (`// 1`) -> test_auto_takes_the_smallest_of_share_and_free
- runtime.threads entering the config hash (generation_config) -> test_threads_stay_out_of_the_config_hash
- runtime.threads dropped from hydra's exclude_keys (in the folder name) -> test_threads_stay_out_of_the_config_hash
"""

import pytest

from monkey.errors import ConfigError
from monkey.models.profiles import profile_from_config, resolve_runtime
from monkey.prefetch import compose_config
from monkey.runner import generation_config
from monkey.threads import ThreadChoice, auto_threads, choose_threads


@pytest.mark.parametrize(
    ("cores", "load", "jobs", "omp", "expected"),
    [
        (8, 0.0, 1, None, 8),  # idle machine: every core
        (8, 0.0, 2, None, 4),  # two shards of one launch on the node: half each
        (8, 5.2, 1, None, 3),  # five cores busy with others' work: the three left
        (8, 5.2, 4, None, 2),  # the smaller of both limits
        (2, 13.0, 1, None, 1),  # overloaded: never below one
        (2, 0.0, 5, None, 1),  # more jobs than cores: one each
        (8, 0.0, 1, "3", 3),  # OMP_NUM_THREADS is the user's choice
        (8, 0.0, 1, "x", 8),  # ... unless it is not a number (torch ignores it too)
    ],
)
def test_auto_takes_the_smallest_of_share_and_free(cores, load, jobs, omp, expected):
    assert auto_threads(cores, load, jobs, omp).threads == expected


@pytest.mark.parametrize("bad", [0, -2, 1.5, "four", True, None])
def test_bad_thread_counts_are_refused_naming_the_key(bad):
    with pytest.raises(ConfigError, match=r"runtime\.threads=.* auto or a whole number"):
        choose_threads(bad)
    assert choose_threads(3) == ThreadChoice(3, "runtime.threads")


def test_threads_stay_out_of_the_config_hash(make_config):
    configs = []
    for threads in ("auto", "1", "2"):
        cfg = make_config(f"runtime.threads={threads}")
        runtime = resolve_runtime(profile_from_config(cfg.model), "cpu", "float32")
        configs.append(generation_config(cfg, runtime))
    assert configs[0] == configs[1] == configs[2]
    hydra = compose_config(["runtime.threads=1"], return_hydra_config=True).hydra
    assert "runtime.threads" in hydra.job.config.override_dirname.exclude_keys  # nor in the run folder's name
