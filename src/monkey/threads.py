"""`runtime.threads`: how many threads torch's CPU operators use in this process.

torch starts with one thread per core. On a shared machine whose cores are already busy (colleagues'
jobs, the shards of one `accelerate launch` on the same node) those threads wait on each other and a
run crawls (issue 27: the demo ran ~10x faster with OMP_NUM_THREADS=1 on a loaded 2-core machine).
`auto` therefore takes the physical cores divided among the concurrent processes of this node, at most
the cores the load average leaves free, and at least one; OMP_NUM_THREADS, when set, is the user's
choice and is kept. The count is chosen once per process (the jobs of an in-process multirun share it,
so a later job is not starved by the load its predecessors made) and logged. It is recorded in every
manifest row but not in the config hash: it changes speed, not what a job computes (docs/shared-machines.md
says how far that was checked).
"""

import logging
import math
import os
from dataclasses import dataclass

from monkey.errors import ConfigError

log = logging.getLogger(__name__)

ALLOWED = "auto or a whole number of threads >= 1"


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str  # for the log line: how `auto` (or the setting) arrived at the number


def auto_threads(
    physical_cores: int, load_average: float, concurrent_jobs: int, omp_threads: str | None
) -> ThreadChoice:
    """The `auto` rule as a pure function of what it reads from the machine."""
    if omp_threads:
        try:
            return ThreadChoice(max(1, int(omp_threads)), f"OMP_NUM_THREADS={omp_threads}")
        except ValueError:
            pass  # torch ignores a malformed value too; fall through to the rule
    share = max(1, physical_cores // max(1, concurrent_jobs))
    free = max(1, math.floor(physical_cores - load_average + 0.5))
    threads = max(1, min(share, free))
    return ThreadChoice(
        threads,
        f"auto: {physical_cores} physical cores / {concurrent_jobs} concurrent jobs = {share}, "
        f"{free} free at load average {load_average:.2f}",
    )


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads share a core's arithmetic units)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or usable
    except ImportError:
        physical = usable
    return max(1, min(usable, physical))


def concurrent_jobs() -> int:
    """Processes of one launch on this node: accelerate launch / torchrun set LOCAL_WORLD_SIZE."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def choose_threads(setting: object) -> ThreadChoice:
    if setting == "auto":
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        return auto_threads(physical_cores(), load, concurrent_jobs(), os.environ.get("OMP_NUM_THREADS"))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ConfigError(f"runtime.threads={setting!r} is not allowed; choose {ALLOWED}")
    return ThreadChoice(setting, "runtime.threads")


_AUTO: ThreadChoice | None = None


def apply_threads(setting: object) -> int:
    """Set torch's intra-op threads from `runtime.threads` and log the choice; returns the count."""
    global _AUTO
    import torch

    if setting == "auto":
        _AUTO = _AUTO or choose_threads(setting)
        choice = _AUTO
    else:
        choice = choose_threads(setting)
    torch.set_num_threads(choice.threads)
    log.info("torch threads: %d (%s)", choice.threads, choice.reason)
    return choice.threads
