"""A method made by a program in another environment, driven by the harness like a native one.

For the shard's unfinished items the harness writes a JSONL job file, runs the command (the user's
Python and a driver script, in the user's checkout, with the configured environment variables) and
reads back each item's `<id>.png` + `<id>.json` the moment the driver announces it. The runner
stores each one like a native image (atomic, manifest row, config hash). A failed item comes back as
a failed result (its row says why, nothing replaces it, a rerun retries it). Results a killed run
left in the exchange folder are taken on the rerun if they answer the very same job line.

Exchange folder (inside the run folder, one per shard writer):
    external/<method>/<writer>/jobs.jsonl          this call's jobs
    external/<method>/<writer>/subjects/<source>.png   the normalised subject images
    external/<method>/<writer>/out/<id>.png|.json  the driver's answers (+ extra artifacts)
"""

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monkey.baselines.external.jobs import (
    JOB_FILE,
    OUT_DIR,
    STATUS_OK,
    Job,
    clear_result,
    read_result,
    subject_image_file,
    write_jobs,
)
from monkey.baselines.external.process import Command, ExternalProcess, ExternalProcessError

from monkey.errors import ConfigError
from monkey.methods.base import GenerationRequest, GenerationResult, StreamingMethod
from monkey.models.profiles import Runtime

log = logging.getLogger("monkey.external")

TEMPLATES = ("prompt", "class_name", "subject_word")


@dataclass(frozen=True)
class Environment:
    """Where the external method runs: never part of the config hash (moving a checkout changes no image)."""

    command: tuple[str, ...]
    cwd: Path
    env: dict[str, str]
    startup_timeout_s: float | None
    item_timeout_s: float | None


def environment_from_config(name: str, environment: dict[str, Any] | None) -> Environment:
    """The generic method's `environment:` block, checked."""
    environment = dict(environment or {})
    known = {"command", "cwd", "env", "startup_timeout_s", "item_timeout_s"}
    unknown = sorted(set(environment) - known)
    if unknown:
        raise ConfigError(f"method {name}: method.environment has unknown keys {unknown}; allowed: {sorted(known)}")
    command = environment.get("command")
    if not command:
        raise ConfigError(
            f"method {name}: set method.environment.command, the program and its arguments "
            "(e.g. '[/envs/tool/bin/python,/path/driver.py]'); the harness appends --jobs FILE --out DIR"
        )
    cwd = Path(environment.get("cwd") or ".").expanduser()
    if not cwd.is_dir():
        raise ConfigError(f"method {name}: method.environment.cwd={str(cwd)!r} is not a folder")
    return Environment(
        command=tuple(str(part) for part in ([command] if isinstance(command, str) else command)),
        cwd=cwd,
        env={str(k): str(v) for k, v in (environment.get("env") or {}).items()},
        startup_timeout_s=positive_or_none(name, "startup_timeout_s", environment.get("startup_timeout_s")),
        item_timeout_s=positive_or_none(name, "item_timeout_s", environment.get("item_timeout_s")),
    )


def positive_or_none(name: str, key: str, value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or value <= 0:
        raise ConfigError(
            f"method {name}: method.environment.{key}={value!r} must be a positive number of seconds or null"
        )
    return float(value)


class ExternalMethod(StreamingMethod):
    """The generic external method (conf/method/external.yaml); FreeGraftor configures a subclass."""

    def __init__(
        self,
        name: str,
        runtime: Runtime,
        environment: dict[str, Any] | None = None,
        template: str = "prompt",
        knobs: dict[str, Any] | None = None,
    ):
        super().__init__(name, runtime)
        if template not in TEMPLATES:
            raise ConfigError(f"method {name}: method.template={template!r} is not allowed; choose one of {TEMPLATES}")
        self.template = template
        self.knobs = dict(knobs or {})
        self.environment_config = dict(environment or {})
        self._environment: Environment | None = None

    @property
    def environment(self) -> Environment:
        """Checked on first use, not at construction: a config can be composed, hashed and its prompts
        listed on a machine without the external environment; generating needs it."""
        if self._environment is None:
            self._environment = self.resolve_environment(self.environment_config)
        return self._environment

    def resolve_environment(self, environment: dict[str, Any] | None) -> Environment:
        return environment_from_config(self.name, environment)

    def template_prompt(self, request: GenerationRequest) -> str:
        """The prompt of the template image: the request's prompt, or the subject's class/word alone."""
        if self.template == "prompt":
            return request.prompt
        return getattr(request.item.source, self.template)

    def check_request(self, request: GenerationRequest) -> None:
        """Refuse requests the external tool cannot honour exactly (subclasses: e.g. sizes)."""

    def command(self, jobs_file: Path, out_dir: Path) -> Command:
        env = self.environment
        return Command(
            argv=(*env.command, "--jobs", str(jobs_file), "--out", str(out_dir)),
            cwd=env.cwd,
            env={**self.device_env(), **env.env},
            startup_timeout_s=env.startup_timeout_s,
            item_timeout_s=env.item_timeout_s,
        )

    def device_env(self) -> dict[str, str]:
        """The job's GPU for the child, whose code says plain "cuda": under `accelerate launch` or
        `torchrun` process r runs on cuda:<LOCAL_RANK>, so its child sees only that GPU."""
        device = self.runtime.device
        if device.type != "cuda" or device.index is None:
            return {}
        visible = [part for part in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if part.strip()]
        physical = visible[device.index] if device.index < len(visible) else str(device.index)
        return {"CUDA_VISIBLE_DEVICES": physical}

    def stream(self, requests: Sequence[GenerationRequest]) -> Iterator[tuple[int, GenerationResult]]:
        if self.work_dir is None:
            raise RuntimeError(f"method {self.name}: the runner did not set work_dir")
        self.environment  # noqa: B018 (a missing checkout stops here, before any file is written)
        work_dir, out_dir = self.work_dir, self.work_dir / OUT_DIR
        for request in requests:  # before any folder is made: a refused run writes nothing
            self.check_request(request)
        out_dir.mkdir(parents=True, exist_ok=True)
        jobs = [
            Job.build(
                request, subject_image_file(work_dir, request.item.source), self.template_prompt(request), self.knobs
            )
            for request in requests
        ]
        index_of = {job.key: index for index, job in enumerate(jobs)}
        todo: list[Job] = []
        for index, job in enumerate(jobs):
            earlier = read_result(out_dir, job)
            if earlier is not None and earlier.error is None:  # made before the harness was killed
                earlier.info["external"]["resumed_from_exchange"] = True
                yield index, earlier
            else:
                clear_result(out_dir, job.key)
                todo.append(job)
        if not todo:
            return
        jobs_file = work_dir / JOB_FILE
        write_jobs(jobs_file, todo)
        yield from self.run_jobs(todo, index_of, jobs_file, out_dir)

    def run_jobs(
        self, todo: list[Job], index_of: dict[str, int], jobs_file: Path, out_dir: Path
    ) -> Iterator[tuple[int, GenerationResult]]:
        pending = {job.key: job for job in todo}
        command = self.command(jobs_file, out_dir)
        failure: str | None = None
        with ExternalProcess(command, self.name) as process:
            try:
                for event in process.events():
                    kind = event.get("event")
                    if kind == "ready":
                        log.info("%s: driver ready: %s", self.name, {k: v for k, v in event.items() if k != "event"})
                    elif kind == "item" and event.get("id") in pending:
                        job = pending.pop(event["id"])
                        result = read_result(out_dir, job) or GenerationResult(
                            image=None, error="the driver announced this item but wrote no result for its job line"
                        )
                        yield index_of[job.key], result
                code = process.wait()
                log.info("%s: driver exited with code %d", self.name, code)
                if code != 0:
                    failure = f"exited with code {code}; last stderr line: {process.last_error_line()}"
            except ExternalProcessError as err:
                failure = str(err)
        for key in list(pending):  # written, but the driver died before it could announce them
            late = read_result(out_dir, pending[key])
            if late is not None:
                del pending[key]
                yield index_of[key], late
        if not pending:
            if failure:
                log.warning("%s: every item has its answer, but the driver %s", self.name, failure)
            return
        reason = failure or "the driver finished without a result for this item"
        for key in pending:
            yield index_of[key], GenerationResult(image=None, error=f"not made: {reason}")
        if failure:
            done = len(todo) - len(pending)
            raise ExternalProcessError(
                f"method {self.name}: `{command.describe()}` stopped after {done} of {len(todo)} items: {failure}. "
                "Finished items are stored; rerun the same command to do the rest (its log: the shard log)"
            )


__all__ = ["STATUS_OK", "Environment", "ExternalMethod"]
