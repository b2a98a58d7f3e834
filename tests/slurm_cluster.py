"""A real one-node Slurm on this host for tests: Debian's slurm-wlm (slurmctld, slurmd) and munge.

The daemons are this test session's own processes, with their state under one directory per user in the
system's temporary folder. Slurm's client commands, and the `srun` that snakemake-executor-plugin-slurm's job
step runs inside every job, read /etc/slurm/slurm.conf (the plugin drops SLURM_CONF from the job step's
environment), so the configuration is written there, marked as ours; a slurm.conf without our marker is never
touched. Daemons left by a crashed session are found through their pidfiles and stopped before a new start.

No accounting daemon: slurmdbd needs a MySQL/MariaDB server. The executor plugin then reads job states with
`squeue` (`--slurm-status-command squeue`), which sees finished jobs for MinJobAge seconds.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo", "scontrol", "srun")
SLURM_CONF = Path("/etc/slurm/slurm.conf")
GRES_CONF = SLURM_CONF.parent / "gres.conf"
MARKER = "# written by llmhpc tests/slurm_cluster.py"
# GPUs the node advertises as generic resources (gres) so that `--gres=gpu:N` requests are scheduled; the
# node has none, and the jobs run on its CPUs.
FAKE_GPUS = 2
# Finished jobs stay visible to squeue/scontrol this long: the plugin's squeue status needs >= 3x its first
# status-check delay, and tests read a job's record after it ended.
MIN_JOB_AGE_S = 600


def find_binary(name: str) -> str | None:
    """Daemons live in /usr/sbin, which is not on every PATH (e.g. a non-root user's)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def missing_binaries() -> list[str]:
    return [name for name in (*DAEMONS, *CLIENTS) if find_binary(name) is None]


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_shape() -> dict[str, str]:
    """The machine's CPUs and memory as slurmd itself reports them (`slurmd -C`)."""
    out = subprocess.run([find_binary("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"(\w+)=(\S+)", out.splitlines()[0]))
    return {k: fields[k] for k in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore",
                                   "RealMemory")}


class SlurmCluster:
    def __init__(self, root: Path | None = None):
        self.root = root or Path(tempfile.gettempdir()) / f"llmhpc-slurm-{os.getuid()}"
        self.host = socket.gethostname().split(".")[0]
        self.procs: dict[str, subprocess.Popen] = {}
        self._lock = None

    # -- paths -------------------------------------------------------------------------------------------
    def pidfile(self, daemon: str) -> Path:
        return self.root / f"{daemon}.pid"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def ctld_log(self) -> Path:
        return self.root / "log" / "slurmctld.log"

    @property
    def env(self) -> dict[str, str]:
        """Environment for client commands (also fine for snakemake: /etc/slurm/slurm.conf is ours)."""
        env = dict(os.environ)
        env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
        env["SLURM_CONF"] = str(SLURM_CONF)
        return env

    # -- start/stop -------------------------------------------------------------------------------------
    def start(self, timeout: float = 90) -> SlurmCluster:
        missing = missing_binaries()
        if missing:
            raise RuntimeError(f"Slurm/munge binaries not found: {', '.join(missing)} "
                               "(Debian: apt-get install -y slurm-wlm munge)")
        if os.geteuid() != 0:
            raise RuntimeError("the test Slurm runs slurmd as root (it starts jobs as their owner); run as root")
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        # One test Slurm per host at a time: a second session waits here instead of killing the first's.
        self._lock = open(self.root / "lock", "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.kill_leftovers()
        self.write_config()
        try:
            self._start_munged(timeout)
            self._start("slurmctld", ["-D", "-i", "-f", str(SLURM_CONF)])
            self._wait(lambda: self._ok(["scontrol", "ping"], "UP"), timeout, "slurmctld answering scontrol ping")
            self._start("slurmd", ["-D", "-f", str(SLURM_CONF), "-N", self.host])
            self._wait(self.node_idle, timeout, f"node {self.host} idle in sinfo")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        # Jobs first, so that slurmd does not leave their processes behind.
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "--user", str(os.getuid())], env=self.env,
                           capture_output=True, timeout=30)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.queue():
                time.sleep(0.5)
        for name in reversed(DAEMONS):
            proc = self.procs.pop(name, None)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            self.pidfile(name).unlink(missing_ok=True)
        self.kill_leftovers()
        for conf in (SLURM_CONF, GRES_CONF):
            if self._ours(conf):
                conf.unlink()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def kill_leftovers(self) -> None:
        """Stop what a crashed session left running: its jobs (through its own slurmctld, while that still
        answers), its daemons (by pidfile, checked by command line), then job steps that outlived slurmd."""
        if self._alive("slurmctld") and self._ours(SLURM_CONF):
            subprocess.run(["scancel", "--full", "--user", str(os.getuid())], env=self.env, capture_output=True,
                           timeout=30)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.queue():
                time.sleep(0.5)
        for name in DAEMONS:
            pidfile = self.pidfile(name)
            try:
                pid = int(pidfile.read_text().split()[0])
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except (OSError, ValueError, IndexError):
                pidfile.unlink(missing_ok=True)
                continue
            # A recycled pid belongs to some other program: only a daemon of ours is stopped.
            if name in cmdline and (str(self.root) in cmdline or str(SLURM_CONF) in cmdline):
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        break
                    deadline = time.monotonic() + 15
                    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                        time.sleep(0.2)
                    if not Path(f"/proc/{pid}").exists():
                        break
            pidfile.unlink(missing_ok=True)
        for pid in self._stray_job_steps():
            for victim in [pid, *descendants(pid)]:
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _alive(self, name: str) -> bool:
        try:
            pid = int(self.pidfile(name).read_text().split()[0])
            return name in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            return False

    def _stray_job_steps(self) -> list[int]:
        """slurmstepd processes of this cluster (they keep slurmd's log under our root open)."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if not (proc / "cmdline").read_bytes().startswith(b"slurmstepd"):
                    continue
                if any(str(self.root) in os.readlink(fd) for fd in (proc / "fd").iterdir()):
                    found.append(int(proc.name))
            except OSError:
                continue
        return found

    # -- configuration ----------------------------------------------------------------------------------
    def write_config(self) -> None:
        for conf in (SLURM_CONF, GRES_CONF):
            if conf.exists() and not self._ours(conf):
                raise RuntimeError(f"{conf} exists and was not written by the tests: refusing to replace a "
                                   "real Slurm configuration")
        for sub in ("state", "spool", "log", "munge", "dev"):
            shutil.rmtree(self.root / sub, ignore_errors=True)
            (self.root / sub).mkdir(mode=0o700, parents=True)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        shape = node_shape()
        node = " ".join(f"{k}={v}" for k, v in shape.items())
        r = self.root
        conf = f"""{MARKER}; state in {r}
ClusterName=llmhpctest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={self.pidfile('slurmctld')}
SlurmdPidFile={self.pidfile('slurmd')}
SlurmctldLogFile={self.ctld_log}
SlurmdLogFile={r}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container: processes are tracked through /proc, tasks are not confined.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Jobs that give no --mem would otherwise get the whole node's memory, one job at a time.
DefMemPerCPU=1024
GresTypes=gpu
MinJobAge={MIN_JOB_AGE_S}
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
KillWait=5
InactiveLimit=0
Waittime=0
NodeName={self.host} NodeAddr=127.0.0.1 {node} Gres=gpu:{FAKE_GPUS} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
"""
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(conf)
        # slurmd counts GPUs by their device files; empty files stand in for them (task/none binds nothing).
        devices = self.root / "dev"
        devices.mkdir(exist_ok=True)
        for i in range(FAKE_GPUS):
            (devices / f"nvidia{i}").touch()
        GRES_CONF.write_text(
            f"{MARKER}\nNodeName={self.host} Name=gpu File={devices}/nvidia[0-{FAKE_GPUS - 1}]\n")

    @staticmethod
    def _ours(path: Path) -> bool:
        try:
            return path.read_text().startswith(MARKER)
        except OSError:
            return False

    # -- helpers ------------------------------------------------------------------------------------------
    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "ab")
        # Own session: a Ctrl-C aimed at a test's snakemake never reaches the daemons.
        proc = subprocess.Popen([find_binary(name), *args], stdout=log, stderr=subprocess.STDOUT,
                                env=self.env, start_new_session=True)
        log.close()
        self.procs[name] = proc
        self.pidfile(name).write_text(f"{proc.pid}\n")

    def _start_munged(self, timeout: float) -> None:
        m = self.root / "munge"
        self._start("munged", ["--foreground", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={m / 'munge.key'}", f"--pid-file={m / 'munged.pid'}",
                               f"--log-file={m / 'munged.log'}", f"--seed-file={m / 'munged.seed'}"])
        self._wait(self.munge_socket.exists, timeout, f"munged socket {self.munge_socket}")

    def _ok(self, cmd: list[str], expect: str) -> bool:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=30)
        return proc.returncode == 0 and expect in proc.stdout

    def node_state(self) -> str:
        proc = subprocess.run(["sinfo", "-h", "-N", "-n", self.host, "-o", "%T"], env=self.env,
                              capture_output=True, text=True, timeout=30)
        return proc.stdout.strip()

    def node_idle(self) -> bool:
        state = self.node_state()
        # A node that registered with a wrong shape is drained for good: say so now, not after the timeout.
        if state.startswith(("drain", "inval")):
            raise RuntimeError(f"node {self.host} is {state}:\n{self.logs()}")
        return state == "idle"

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n"
                                       f"{self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}:\n{self.logs()}")

    def logs(self, tail: int = 30) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")) + [self.root / "munge" / "munged.log"]:
            if path.is_file():
                lines = path.read_text(errors="replace").splitlines()[-tail:]
                parts.append(f"--- {path}\n" + "\n".join(lines))
        return "\n".join(parts)

    # -- queries for tests ---------------------------------------------------------------------------------
    def queue(self) -> list[str]:
        """Job ids squeue lists as pending or running (finished ones excluded)."""
        out = subprocess.run(["squeue", "-h", "-t", "PENDING,RUNNING,CONFIGURING,COMPLETING,SUSPENDED",
                              "-o", "%i"], env=self.env, capture_output=True, text=True, check=True,
                             timeout=30).stdout
        return out.split()

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as key=value pairs (finished jobs stay for MinJobAge)."""
        out = subprocess.run(["scontrol", "-o", "show", "job", job_id], env=self.env, capture_output=True,
                             text=True, check=True, timeout=30).stdout
        return dict(re.findall(r"(\S+?)=(\S*)", out))
