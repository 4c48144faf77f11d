"""A throwaway single-node SLURM cluster on this machine, for tests (imported by tests; not a test module).

Debian's `slurm-wlm` and `munge` daemons are started in the foreground as child processes, with a
generated munge key, a generated slurm.conf on free localhost ports, and every state, spool, socket
and log file under one temp folder. Client commands (sbatch, squeue, and submitit through them) find
the cluster through SLURM_CONF. `stop()` cancels the jobs, then ends the daemons it started, by pid.
"""

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PROGRAMS = ("mungekey", "munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])  # daemons live in sbin


def program(name: str) -> str:
    return shutil.which(name, path=SEARCH_PATH) or name


def missing_programs() -> list[str]:
    return [name for name in PROGRAMS if shutil.which(name, path=SEARCH_PATH) is None]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_line() -> str:
    """This machine as slurmd sees it (`NodeName=<host> CPUs=.. RealMemory=..`): a node that claims more
    CPUs or memory than it has is drained at registration."""
    output = subprocess.run([program("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("NodeName="))
    return f"{line} NodeAddr=127.0.0.1 State=UNKNOWN"


def slurm_conf(root: Path, node: str) -> str:
    host = node.split()[0].removeprefix("NodeName=")
    user = getpass.getuser()
    return "\n".join(
        [
            "ClusterName=monkeytest",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # cred_expire is also how long a requeued job waits before it may start again (default 120 s)
            f"AuthInfo=socket={root / 'munge' / 'munge.socket'},cred_expire=10",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
            # a container has no usable cgroups: track processes by /proc, no task binding
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "MpiDefault=none",
            "SchedulerParameters=sched_interval=1,bf_interval=1",  # start (requeued) jobs without delay
            "ReturnToService=2",
            "KillWait=5",
            "MinJobAge=300",
            node,
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "PATH": SEARCH_PATH}
        self.processes: list[subprocess.Popen] = []

    def start(self, timeout: float = 60) -> "SlurmCluster":
        for folder in ("munge", "state", "spool", "log"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        munge = self.root / "munge"
        munge.chmod(0o755)  # the socket must be reachable; the key itself is 0600
        key = munge / "munge.key"
        subprocess.run([program("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
        self.conf.write_text(slurm_conf(self.root, node_line()))
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",  # temp folders live under the world-writable /tmp
                f"--key-file={key}",
                f"--socket={munge / 'munge.socket'}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--seed-file={munge / 'munged.seed'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
            ],
        )
        self._wait_for(lambda: (munge / "munge.socket").exists(), timeout, "munged to create its socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
        self._wait_for(self._node_idle, timeout, "the node to register idle")
        return self

    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "wb")  # noqa: SIM115 -- the daemon keeps it
        command = [program(command[0]), *command[1:]]
        self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env))
        log.close()

    def _node_idle(self) -> bool:
        result = self.run("sinfo", "--noheader", "--format=%t", check=False)
        return result.returncode == 0 and result.stdout.strip() == "idle"

    def _wait_for(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [p.args[0] for p in self.processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                reason = f"{dead} exited" if dead else f"timed out after {timeout:.0f}s"
                raise RuntimeError(f"SLURM test cluster: waiting for {what}: {reason}\n{self.logs()}")
            time.sleep(0.25)

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        command = (program(command[0]), *command[1:])
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def job_ids(self) -> list[str]:
        result = self.run("squeue", "--noheader", "--format=%i", check=False)
        return result.stdout.split() if result.returncode == 0 else []

    def logs(self, lines: int = 30) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job, then end the daemons this object started (by pid), newest first."""
        if self.processes and all(p.poll() is None for p in self.processes):
            ids = self.job_ids()
            if ids:
                self.run("scancel", *ids, check=False)
                deadline = time.monotonic() + 30
                while self.job_ids() and time.monotonic() < deadline:
                    time.sleep(0.5)
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()
