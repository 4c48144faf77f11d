"""Run an external tool as a child process that the harness owns.

The child runs in its own session (process group): when the harness stops it (an error, Ctrl-C, a
timeout) the whole group goes, the tool's own workers included. Its stdin is a pipe it never gets
data from: when the harness dies, even by SIGKILL, the pipe closes and the driver ends its group
(the drivers watch for that EOF). stderr is streamed line by line into the shard's log. stdout
carries the protocol: one JSON event per line (`ready`, `item`, `done`).
"""

import contextlib
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monkey.errors import MonkeyError

log = logging.getLogger("monkey.external")

# Variables that would let the harness's own packages leak into the child's interpreter.
ISOLATING_UNSET = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")


# Search paths whose entries inside the harness's virtual environment are dropped for the child: its
# bin/ (another `python`, `pip`) and its site-packages' shared libraries (torch's CUDA and cuDNN) would
# shadow the tool's own.
SEARCH_PATHS = ("PATH", "LD_LIBRARY_PATH")


def without_harness_prefix(value: str, prefix: str | None = None) -> str:
    """`value` (an os.pathsep list) without the entries inside the harness's virtual environment; outside
    a virtual environment (sys.prefix == sys.base_prefix, e.g. /usr) nothing is dropped."""
    if prefix is None:
        prefix = sys.prefix if sys.prefix != sys.base_prefix else None
    if not prefix:
        return value
    root = os.path.realpath(prefix)
    kept = [
        entry
        for entry in value.split(os.pathsep)
        if not (entry and os.path.commonpath([root, os.path.realpath(entry)]) == root)
    ]
    return os.pathsep.join(kept)


class ExternalProcessError(MonkeyError):
    """The external process failed as a whole (could not start, crashed, timed out)."""


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)  # added to the harness's environment
    startup_timeout_s: float | None = None  # until the driver says `ready` (models loaded)
    item_timeout_s: float | None = None  # between two finished items

    def environment(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if k not in ISOLATING_UNSET}
        for name in SEARCH_PATHS:  # the harness's venv (its bin/, torch's CUDA libraries) stays out of the child
            if name in base:
                base[name] = without_harness_prefix(base[name])
        return {**base, **self.env, "PYTHONUNBUFFERED": "1", "PYTHONNOUSERSITE": "1"}

    def describe(self) -> str:
        return " ".join(self.argv)


class ExternalProcess:
    """`with ExternalProcess(command) as process: for event in process.events(): ...`"""

    def __init__(self, command: Command, name: str):
        self.command = command
        self.name = name
        self.process: subprocess.Popen | None = None
        self.stderr_tail: deque[str] = deque(maxlen=20)
        self._stderr_thread: threading.Thread | None = None
        self._stopped = False

    def __enter__(self) -> "ExternalProcess":
        try:
            self.process = subprocess.Popen(
                list(self.command.argv),
                cwd=self.command.cwd,
                env=self.command.environment(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as err:
            raise ExternalProcessError(f"{self.name}: cannot start `{self.command.describe()}`: {err}") from err
        log.info(
            "%s: started pid %d: %s (cwd %s)", self.name, self.process.pid, self.command.describe(), self.command.cwd
        )
        self._stderr_thread = threading.Thread(target=self._pump_stderr, daemon=True)
        self._stderr_thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _pump_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self.stderr_tail.append(line)
                log.info("[%s] %s", self.name, line)

    def last_error_line(self) -> str:
        return self.stderr_tail[-1] if self.stderr_tail else "(nothing on stderr)"

    def events(self) -> Iterator[dict[str, Any]]:
        """The protocol events as they come; raises ExternalProcessError on a timeout (after killing
        the group). Ends when the child closes stdout (it exited)."""
        assert self.process is not None and self.process.stdout is not None
        stream = self.process.stdout
        selector = selectors.DefaultSelector()
        selector.register(stream, selectors.EVENT_READ)
        buffer, ready = b"", False
        last = time.monotonic()
        try:
            while True:
                limit = self.command.item_timeout_s if ready else self.command.startup_timeout_s
                wait = None if limit is None else max(0.0, limit - (time.monotonic() - last))
                if not selector.select(timeout=wait):
                    self.stop()
                    phase = "a finished item" if ready else "the driver's `ready` (loading its models)"
                    raise ExternalProcessError(
                        f"{self.name}: no progress for {limit:g} s waiting for {phase}; the process group was "
                        f"killed. Raise method.environment.{'item' if ready else 'startup'}_timeout_s if that is "
                        "too short; finished items are kept and a rerun does the rest"
                    )
                chunk = os.read(stream.fileno(), 65536)
                if not chunk:
                    return
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    event = self._parse(line)
                    if event is None:
                        continue
                    ready = ready or event.get("event") == "ready"
                    last = time.monotonic()
                    yield event
        finally:
            selector.close()

    def _parse(self, line: bytes) -> dict[str, Any] | None:
        text = line.decode(errors="replace").strip()
        if not text:
            return None
        try:
            event = json.loads(text)
        except json.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            log.info("[%s stdout] %s", self.name, text)
            return None
        return event

    def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            code = self.process.wait()
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=5)
        return code

    def stop(self, grace_s: float = 5.0) -> None:
        """End the child's whole process group: SIGTERM, then SIGKILL after `grace_s`."""
        process = self.process
        if process is None or self._stopped:
            return
        self._stopped = True
        if process.poll() is None:
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace_s)
        self._signal_group(signal.SIGKILL)  # workers the tool started may outlive their leader
        process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=5)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
