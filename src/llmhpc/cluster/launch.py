"""How the fine-tune job starts one process per GPU on every node, and with which environment.

`plan(site, ft, environ)` returns, for `finetune.run_stage(..., launch=plan)`, the launcher prefix, the
environment variables for the processes (the site's NCCL/MPI settings, then the experiment's
finetune.launch_env) and what the fine-tune summary records. The node count and GPUs per node come
from the scheduler and are checked against the experiment's num_nodes and devices:

- local: litgpt starts its own processes on this node (the embedded default, and every one-node job).
- mpirun: one MPI rank per GPU over the unique hosts of $PBS_NODEFILE (OpenMPI's `--map-by ppr:D:node`).
  Lightning Fabric picks its MPIEnvironment when mpi4py is importable and MPI's world size is above 1; rank 0
  broadcasts its hostname as the main address and a free port, and each host's ranks form the node.
- srun: one Slurm task per GPU inside the allocation (Lightning's SLURMEnvironment reads the SLURM_* ranks).
- pernode: one `torchrun --nnodes N --node-rank r --nproc-per-node D --master-addr <first host>` per node,
  started here for node 0 and through the site's remote_shell (ssh, pbs_tmrsh) on the others
  (`python -m llmhpc.cluster.launch pernode`); Lightning detects torchrun. With site.nodes_on_one_host every node's
  torchrun runs here on its own slice of the GPUs, to test the multi-node path on one machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from llmhpc.cluster.resources import cpus_per_gpu
from llmhpc.cluster.site import SITE_ENV, Site

# Forwarded to other nodes' torchrun by pernode: what modules and the venv put into this job's environment.
FORWARDED = ("PATH", "LD_LIBRARY_PATH", "LIBRARY_PATH", "PYTHONPATH", "CPATH", "CUDA_HOME", "HF_HOME", SITE_ENV)


class LaunchError(RuntimeError):
    """The job's nodes do not match the experiment, or the launcher cannot run; the message says what to change."""


def node_hosts(nodefile: str | Path) -> list[str]:
    """Unique hosts of a PBS node file, in order (PBS lists a host once per CPU or per MPI rank)."""
    hosts = []
    for line in Path(nodefile).read_text().split():
        if line not in hosts:
            hosts.append(line)
    return hosts


def process_env(site: Site | dict, ft: dict, environ=None) -> dict:
    """The site's settings, then the experiment's launch_env (which wins), plus OpenMP threads per process
    sized to the CPUs a GPU gets (one process per GPU) and torch.compile's persistent cache (site.compile_cache,
    made absolute here, in the job's working directory: processes on other nodes start elsewhere)."""
    site = Site.of(site)
    environ = os.environ if environ is None else environ
    env = {**site.env, **(ft.get("launch_env") or {})}
    if "OMP_NUM_THREADS" not in env and cpus_per_gpu(site):
        env["OMP_NUM_THREADS"] = str(cpus_per_gpu(site))
    env.update(compile_cache_env(site, env, environ))
    return {k: str(v) for k, v in env.items()}


def compile_cache_env(site: Site | dict, env: dict, environ) -> dict:
    """TORCHINDUCTOR_CACHE_DIR for site.compile_cache, absolute, with `~` and the job environment's $VARIABLES
    expanded, unless `env` (the site's and the experiment's settings) or that environment already name one, or
    the key is ""."""
    site = Site.of(site)
    if not site.compile_cache or "TORCHINDUCTOR_CACHE_DIR" in env or "TORCHINDUCTOR_CACHE_DIR" in environ:
        return {}
    path = string.Template(site.compile_cache).safe_substitute(environ)  # unknown names stay, as in a shell's
    return {"TORCHINDUCTOR_CACHE_DIR": str(Path(path).expanduser().resolve())}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def pbs_hosts(environ, ft: dict, launcher: str, what: str = "finetune") -> list[str]:
    """The job's nodes from $PBS_NODEFILE, checked against `what`.num_nodes."""
    if not environ.get("PBS_NODEFILE"):
        raise LaunchError(f"site.launcher '{launcher}' reads the nodes from $PBS_NODEFILE, which is not set")
    hosts = node_hosts(environ["PBS_NODEFILE"])
    if len(hosts) != ft["num_nodes"]:
        raise LaunchError(f"the job has {len(hosts)} node(s) ($PBS_NODEFILE: {', '.join(hosts)}) but"
                          f" {what}.num_nodes is {ft['num_nodes']}: the scheduler request and the {what} settings"
                          f" disagree")
    return hosts


def plan(site: Site | dict, ft: dict, environ=None, tmpdir: str | None = None, what: str = "finetune") -> dict:
    """How `ft`'s num_nodes x devices processes start on the site (`what`: the config section they come from)."""
    environ = os.environ if environ is None else environ
    site = Site.of(site)
    nodes, devices = ft["num_nodes"], ft["devices"]
    kind = site.launcher
    if nodes == 1 and kind in ("mpirun", "pernode") and not site.nodes_on_one_host:
        kind = "local"  # on one node litgpt starts its processes itself; MPI or torchrun add nothing there
    env = process_env(site, ft, environ)
    hosts: list[str] = []
    if kind == "local":
        if nodes > 1:
            raise LaunchError(f"{what}.num_nodes {nodes} with site.launcher 'local' (one node only)")
        prefix: list[str] = []
    elif kind == "mpirun":
        if importlib.util.find_spec("mpi4py") is None:
            raise LaunchError("site.launcher 'mpirun' needs mpi4py in the job's Python (Lightning detects MPI"
                              " through it): install mpi4py built against the site's MPI module")
        if site.nodes_on_one_host:
            # every "node" here: one host with all the ranks; the engine groups them into num_nodes nodes by rank
            hosts, per_host = ["localhost"], nodes * devices
        else:
            hosts, per_host = pbs_hosts(environ, ft, kind, what), devices
        fd, hostfile = tempfile.mkstemp(prefix="hosts.", dir=tmpdir or environ.get("TMPDIR"))
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(f"{h} slots={per_host}\n" for h in hosts))
        prefix = ["mpirun", "-np", str(nodes * devices), "--hostfile", hostfile, "--map-by", f"ppr:{per_host}:node"]
        for key in sorted(env):
            prefix += ["-x", key]  # OpenMPI exports these to the ranks on other nodes
        prefix += list(site.mpirun_args)
    elif kind == "srun":
        if environ.get("SLURM_JOB_NUM_NODES") and int(environ["SLURM_JOB_NUM_NODES"]) != nodes:
            raise LaunchError(f"the Slurm job has {environ['SLURM_JOB_NUM_NODES']} node(s) but {what}.num_nodes"
                              f" is {nodes}: the scheduler request and the litgpt settings disagree")
        # --overlap: the executor's own job step (srun -n1 around the rule) holds the job's CPUs; without it
        # this inner srun waits for them forever. --kill-on-bad-exit: a rank that fails ends the others (as
        # mpirun and pernode do), instead of leaving them in a collective until NCCL's timeout or the walltime
        prefix = ["srun", "--overlap", "--kill-on-bad-exit=1", f"--nodes={nodes}", f"--ntasks-per-node={devices}",
                  f"--ntasks={nodes * devices}", "--export=ALL"]
    elif kind == "pernode":
        if site.nodes_on_one_host:
            hosts = ["127.0.0.1"] * nodes
        else:
            hosts = pbs_hosts(environ, ft, kind, what)
        prefix = [sys.executable, "-m", "llmhpc.cluster.launch", "pernode", "--nproc-per-node", str(devices),
                  "--hosts", ",".join(hosts), "--master-port", str(free_port()),
                  "--remote-shell", json.dumps(list(site.remote_shell) or ["ssh"]),
                  "--forward", ",".join(sorted(env))]
        if site.nodes_on_one_host:
            prefix.append("--on-one-host")
        prefix.append("--")
    else:
        raise LaunchError(f"unknown site.launcher {kind!r}")
    return {"site": site.name, "scheduler": site.scheduler, "launcher": kind,
            "site_launcher": site.launcher, "num_nodes": nodes,
            "devices_per_node": devices, "hosts": hosts, "prefix": prefix, "env": env,
            "job_id": environ.get("PBS_JOBID") or environ.get("SLURM_JOB_ID")}


# ---------------------------------------------------------------------------------------------- pernode runner

def torchrun_command(command: list[str], nnodes: int, node_rank: int, nproc: int, master: str, port: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--node-rank={node_rank}",
            f"--nproc-per-node={nproc}", f"--master-addr={master}", f"--master-port={port}", "--no-python",
            *command]


def node_commands(command: list[str], hosts: list[str], nproc: int, port: int, remote_shell: list[str],
                  forward: list[str], on_one_host: bool, environ=None) -> list[tuple[list[str], dict]]:
    """(argv, extra env) that starts node r's torchrun, for every node r."""
    environ = os.environ if environ is None else environ
    out = []
    for rank, host in enumerate(hosts):
        argv = torchrun_command(command, len(hosts), rank, nproc, hosts[0], port)
        if on_one_host:
            gpus = ",".join(str(g) for g in range(rank * nproc, (rank + 1) * nproc))
            out.append((argv, {"CUDA_VISIBLE_DEVICES": gpus}))
        elif rank == 0:
            out.append((argv, {}))
        else:
            names = [n for n in dict.fromkeys([*forward, *FORWARDED]) if n in environ]
            exports = " ".join(f"{n}={shlex.quote(environ[n])}" for n in names)
            remote = f"cd {shlex.quote(os.getcwd())} && env {exports} " + " ".join(shlex.quote(a) for a in argv)
            out.append(([*remote_shell, host, remote], {}))
    return out


def run_nodes(commands: list[tuple[list[str], dict]], out=sys.stdout) -> int:
    """Start every node's launcher, prefix its output lines with its node rank, stop the others when one fails;
    return the first non-zero exit code (or 0)."""
    procs = []
    for argv, extra in commands:
        procs.append(subprocess.Popen(argv, env={**os.environ, **extra}, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, start_new_session=True))
    lock = threading.Lock()

    def pump(rank, proc):
        for line in proc.stdout:
            with lock:
                out.write(f"[node {rank}] {line}")
                out.flush()

    threads = [threading.Thread(target=pump, args=(r, p), daemon=True) for r, p in enumerate(procs)]
    for t in threads:
        t.start()
    code = 0
    pending = list(procs)
    while pending:
        for proc in list(pending):
            try:
                rc = proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
            pending.remove(proc)
            if rc != 0 and code == 0:
                code = rc
                for other in pending:
                    try:
                        os.killpg(other.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
    for t in threads:
        t.join(timeout=5)
    return code


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m llmhpc.cluster.launch")
    sub = parser.add_subparsers(dest="mode", required=True)
    pn = sub.add_parser("pernode", help="one torchrun per node of the job")
    pn.add_argument("--nproc-per-node", type=int, required=True)
    pn.add_argument("--hosts", required=True, help="comma-separated hosts; the first is the rendezvous address")
    pn.add_argument("--master-port", type=int, required=True)
    pn.add_argument("--remote-shell", default='["ssh"]', help="JSON list, e.g. [\"ssh\"]")
    pn.add_argument("--forward", default="", help="comma-separated environment variables to pass to other nodes")
    pn.add_argument("--on-one-host", action="store_true")
    pn.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command after --")
    commands = node_commands(command, args.hosts.split(","), args.nproc_per_node, args.master_port,
                             json.loads(args.remote_shell), [f for f in args.forward.split(",") if f],
                             args.on_one_host)
    return run_nodes(commands)


if __name__ == "__main__":
    sys.exit(main())
