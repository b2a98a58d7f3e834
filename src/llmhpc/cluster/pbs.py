"""PBS Pro for Snakemake's cluster-generic executor: submit, status and cancel commands, and the dry-run plan.

- submit: reads the job's properties from the jobscript Snakemake writes (its `# properties = {...}` line),
  renders a PBS job script to results/jobs/<rule>/<job name>.pbs (#PBS lines, the site's `module load` and
  environment, then Snakemake's own command) and qsubs it from results/logs/scheduler/, so that PBS leaves its
  `<job name>.o<id>` / `.e<id>` files there. The qsub options come from the job's standard resources
  (runtime, mem_mb, gpu, threads) plus `nodes`/`gpus_per_node`, written Gadi style or as PBS Pro select chunks.
- status and cancel: llmhpc.cluster.pbs_status (one cached qstat for every job; qdel in batches).

Entry points: the console script llmhpc-pbs-submit (pyproject.toml), and `plan_lines`, which
llmhpc.cluster.dryrun prints for `-n`. The site (project, queues, node shape, modules, env) comes from $LLMHPC_SITE,
set by the workflow (llmhpc.cluster.resources).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import shlex
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from llmhpc.cluster.resources import cpus_per_gpu
from llmhpc.cluster.site import SITE_ENV, Site, dump_site, load_site

JOBS_DIR = Path("results/jobs")
SCHEDULER_LOGS = Path("results/logs/scheduler")
STATE_DIR = Path(".snakemake/llmhpc-pbs")


def exit_records_dir(state_dir: Path = STATE_DIR) -> Path:
    """Where each job script leaves its exit code, named by $PBS_JOBID (absolute: jobs start in $HOME)."""
    return (Path.cwd() / state_dir / "exits").resolve()
MAX_JOB_NAME = 236  # PBS Pro's PBS_MAXJOBNAME


class PBSError(RuntimeError):
    """A job cannot be submitted as asked; the message says why."""


def not_on_path(command: str) -> str:
    """What to do when a PBS command is missing: the usual cause is a machine outside the cluster, or a login
    node whose PBS module is not loaded."""
    return (f"{command} is not on PATH: run snakemake on a login node of the PBS cluster, or load its PBS module"
            f" first (e.g. `module load pbs`)")


# ---------------------------------------------------------------------------------------------- job properties

def read_properties(jobscript_text: str, source: str | Path = "jobscript") -> dict:
    """The job properties Snakemake writes into every jobscript as `# properties = {json}`."""
    for line in jobscript_text.splitlines():
        if line.startswith("# properties = "):
            return json.loads(line[len("# properties = "):])
    raise PBSError(f"{source}: no '# properties = ' line; not a Snakemake jobscript")


def sanitize_job_name(name: str) -> str:
    """A name qsub accepts: PBS rejects whitespace, `/ % = @ ,` (and more) and a leading dot, and cuts at 236."""
    clean = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)
    if not clean or not clean[0].isalnum():
        clean = "j" + clean
    return clean[:MAX_JOB_NAME]


def job_name(props: dict) -> str:
    """`<rule>.<wildcard values>`: the same for the same job in every run, so the job script and the dry-run
    plan name it alike."""
    if props.get("type") == "group":
        return sanitize_job_name(f"group.{props['groupid']}")
    values = [str(v) for v in (props.get("wildcards") or {}).values()]
    return sanitize_job_name(".".join([props["rule"], *values]))


def _int(value, default: int, what: str, name: str) -> int:
    if value is None or value == "<TBD>":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PBSError(f"job {name}: resource {what}={value!r} is not a whole number") from None


def requested(props: dict, site: Site | dict) -> dict:
    """What the job asks for, per node: nodes, GPUs and CPUs per node, memory (MB) per node, walltime (s)."""
    site = Site.of(site)
    res = props.get("resources") or {}
    name = job_name(props)
    nodes = _int(res.get("nodes"), 1, "nodes", name)
    site_gpus = site.gpus_per_node or 0
    gpn = 0
    if site_gpus:  # on a CPU site, gpus_per_node counts processes, not GPUs
        if "gpus_per_node" in res:
            gpn = _int(res["gpus_per_node"], 0, "gpus_per_node", name)
        elif "gpu" in res:
            total = _int(res["gpu"], 0, "gpu", name)
            if total:
                nodes = max(nodes, math.ceil(total / site_gpus))
                gpn = math.ceil(total / nodes)
    if gpn > site_gpus and site_gpus:
        raise PBSError(f"job {name}: {gpn} GPUs per node asked, a {site.name} node has {site_gpus}")
    threads = _int(props.get("threads"), 1, "threads", name)
    cpus_node = site.cpus_per_node
    if gpn:  # threads of a GPU job are per process (llmhpc.cluster.resources), one process per GPU
        cpus = gpn * (cpus_per_gpu(site) or threads)
    else:
        cpus = min(threads, cpus_node) if cpus_node else threads
    mem_mb = _int(res.get("mem_mb"), 1000, "mem_mb", name)
    per_node_mem = math.ceil(mem_mb / nodes)
    if gpn and site.mem_per_node_gb:  # a GPU job gets at least its GPUs' share of the node's memory
        per_node_mem = max(per_node_mem, int(site.mem_per_node_gb * 1000 * gpn // site_gpus))
    runtime_min = _int(res.get("runtime"), 60, "runtime", name)
    return {"nodes": nodes, "gpus_per_node": gpn, "cpus_per_node": max(1, cpus), "mem_mb_per_node": per_node_mem,
            "walltime_s": max(60, runtime_min * 60), "internet": bool(_int(res.get("internet"), 0, "internet", name))}


def walltime(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def memory(mb: float) -> str:
    mb = math.ceil(mb)
    return f"{mb // 1000}GB" if mb % 1000 == 0 else f"{mb}MB"


def job_totals(req: dict, site: Site | dict) -> dict:
    """What the whole job holds, as qsub asks for it: nodes, GPUs, CPUs and memory (MB) in all. Gadi: a GPU job of
    whole nodes (all a node's GPUs, or more than one node, which Gadi requires to be whole) takes whole nodes' GPUs,
    CPUs and memory."""
    site = Site.of(site)
    nodes, gpn = req["nodes"], req["gpus_per_node"]
    if site.pbs_resources == "gadi" and gpn and (nodes > 1 or gpn == site.gpus_per_node):
        mem_node = site.mem_per_node_gb * 1000 if site.mem_per_node_gb else req["mem_mb_per_node"]
        return {"nodes": nodes, "ngpus": nodes * site.gpus_per_node,
                "ncpus": nodes * (site.cpus_per_node or req["cpus_per_node"]), "mem_mb": nodes * mem_node}
    return {"nodes": nodes, "ngpus": nodes * gpn, "ncpus": nodes * req["cpus_per_node"],
            "mem_mb": nodes * req["mem_mb_per_node"]}


def resource_options(req: dict, site: Site | dict) -> list[tuple[str, str]]:
    """qsub -l options, as (flag, value) pairs. Gadi: one job-wide list; a GPU job of whole nodes (all a node's GPUs,
    or more than one node, which Gadi requires to be whole) takes whole nodes' CPUs and memory: ngpus a multiple of 4, 12 CPUs per
    GPU. select: one chunk per node, with one MPI rank per GPU, scattered over distinct nodes."""
    site = Site.of(site)
    nodes, gpn = req["nodes"], req["gpus_per_node"]
    if site.pbs_resources == "gadi":
        held = job_totals(req, site)
        ngpus, ncpus, mem = held["ngpus"], held["ncpus"], memory(held["mem_mb"])
        items = ([f"ngpus={ngpus}"] if ngpus else []) + [f"ncpus={ncpus}", f"mem={mem}"]
        if site.jobfs_gb:
            items.append(f"jobfs={memory(nodes * site.jobfs_gb * 1000)}")
        items.append(f"walltime={walltime(req['walltime_s'])}")
        if site.storage:
            items.append("storage=" + "+".join(site.storage))
        return [("-l", ",".join(items))]
    chunk = [str(nodes), f"ncpus={req['cpus_per_node']}"]
    if gpn:
        chunk += [f"ngpus={gpn}", f"mpiprocs={gpn}"]
    chunk.append(f"mem={memory(req['mem_mb_per_node'])}")
    options = [("-l", "select=" + ":".join(chunk)), ("-l", f"walltime={walltime(req['walltime_s'])}")]
    if nodes > 1:
        options.append(("-l", "place=scatter"))
    return options


def queue_for(req: dict, site: Site | dict) -> str | None:
    site = Site.of(site)
    if req["internet"]:
        if not site.copy_queue:
            raise PBSError("a job asks for internet=1 but the site has no copy_queue (Gadi: copyq)")
        return site.copy_queue
    if req["gpus_per_node"]:
        return site.queue
    return site.cpu_queue or site.queue


def qsub_option_pairs(props: dict, site: Site | dict) -> list[tuple[str, str]]:
    """(flag, value) of every qsub option the job gets (the site's qsub_args come on top)."""
    site = Site.of(site)
    if not site.project:
        raise PBSError(f"site '{site.name}' has no project: set site.project (qsub -P)")
    req = requested(props, site)
    pairs = [("-N", job_name(props)), ("-P", site.project)]
    queue = queue_for(req, site)
    if queue:
        pairs.append(("-q", queue))
    pairs += resource_options(req, site)
    pairs.append(("-j", "n"))  # keep stdout (.o) and stderr (.e) apart: the .e file is what a failure leaves
    return pairs


def qsub_options(props: dict, site: Site | dict) -> list[str]:
    site = Site.of(site)
    return [part for pair in qsub_option_pairs(props, site) for part in pair] + list(site.qsub_args)


def script_path(props: dict) -> Path:
    return JOBS_DIR / (props.get("rule") or "group") / f"{job_name(props)}.pbs"


def qsub_command(props: dict, site: Site | dict, root: Path = Path(".")) -> tuple[list[str], Path]:
    """(qsub argv, directory to run it in). qsub runs in results/logs/scheduler so that PBS writes its
    <name>.o<id> and <name>.e<id> files there (PBS names them after the job and puts them where qsub ran)."""
    site = Site.of(site)
    script = (root / script_path(props)).resolve()
    return ["qsub", *qsub_options(props, site), str(script)], (root / SCHEDULER_LOGS).resolve()


def format_command(argv: list[str], cwd: Path) -> str:
    return f"cd {shlex.quote(str(cwd))} && " + " ".join(shlex.quote(a) for a in argv)


def render_script(props: dict, site: Site | dict, jobscript_text: str, command_line: str) -> str:
    """The PBS job script: the qsub options again as #PBS lines (so the file alone is a complete run script),
    the site's modules and environment, then Snakemake's job command."""
    site = Site.of(site)
    lines = ["#!/bin/bash"] + [f"#PBS {flag} {value}" for flag, value in qsub_option_pairs(props, site)]
    if site.qsub_args:
        lines.append("#PBS " + " ".join(shlex.quote(a) for a in site.qsub_args))
    wildcards = ", ".join(f"{k}={v}" for k, v in (props.get("wildcards") or {}).items())
    lines += [f"# Snakemake job {props.get('jobid')}: rule {props.get('rule')}" + (f" ({wildcards})" if wildcards else ""),
              f"# Rendered by llmhpc.cluster.pbs for site '{site.name}'; submitted with:",
              f"#   {command_line}"]
    if site.modules:  # stop here, not later with an obscure CUDA or MPI error
        lines.append("module load " + " ".join(shlex.quote(m) for m in site.modules) +
                     " || { echo 'module load failed' >&2; exit 1; }")
    for key, value in sorted(site.env.items()):
        lines.append(f"export {key}={shlex.quote(str(value))}")
    # jobs re-read the workflow without --profile: this is how the fine-tune learns its launcher and settings
    lines.append(f"export {SITE_ENV}={shlex.quote(dump_site(site))}")
    # The job's exit code, kept where the status command finds it once PBS has purged the job from its history
    # (a SIGKILL leaves no record; status then falls back to a grace period).
    exits = shlex.quote(str(exit_records_dir()))
    lines.append(f'mkdir -p {exits} && trap \'echo $? > {exits}/"$PBS_JOBID"\' EXIT')
    body = [ln for ln in jobscript_text.splitlines() if not ln.startswith("#!")]
    return "\n".join(lines + body) + "\n"


# -------------------------------------------------------------------------------------------------- submit

def site_from_env(environ=None) -> Site:
    environ = os.environ if environ is None else environ
    if not environ.get(SITE_ENV):
        raise PBSError(f"${SITE_ENV} is not set: the PBS commands run from a Snakemake run of this workflow,"
                       f" which sets it from the profile's site.yaml")
    return Site.of(load_site(environ[SITE_ENV]))


@contextmanager
def locked(state_dir: Path):
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def submit(jobscript: str | Path, site: Site | dict, root: Path = Path("."), state_dir: Path = STATE_DIR,
           log=None) -> str:
    """Render and qsub one job; return PBS's job id."""
    site = Site.of(site)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    jobscript_text = Path(jobscript).read_text()
    props = read_properties(jobscript_text, jobscript)
    argv, cwd = qsub_command(props, site, root)
    script = Path(argv[-1])
    command_line = format_command(argv, cwd)
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(render_script(props, site, jobscript_text, command_line))
    cwd.mkdir(parents=True, exist_ok=True)
    log(command_line)
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise PBSError(f"{not_on_path('qsub')}; the job script is ready in {script}") from None
    if proc.returncode != 0:
        raise PBSError(f"qsub exited with {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}\n"
                       f"  command: {command_line}")
    job_id = proc.stdout.strip().splitlines()[0].strip() if proc.stdout.strip() else ""
    if not job_id:
        raise PBSError(f"qsub printed no job id (stderr: {proc.stderr.strip()})")
    with locked(state_dir):
        with open(state_dir / "jobs", "a") as fh:
            fh.write(f"{job_id}\t{job_name(props)}\n")
    return job_id


# ---------------------------------------------------------------------------------------------- dry-run plan

def plan_lines(jobs_properties: list[dict], site: Site | dict) -> list[str]:
    """The exact qsub command of each job, as submit would run it."""
    site = Site.of(site)
    return [format_command(*qsub_command(props, site)) for props in jobs_properties]


# ------------------------------------------------------------------------------------------------ commands

def _one_argument_command(name: str, usage: str, action, argv) -> int:
    """A cluster-generic command that takes one argument and prints one answer; PBSError -> exit 1."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: {usage}", file=sys.stderr)
        return 2
    try:
        print(action(argv[0]))
    except PBSError as exc:
        print(f"llmhpc.cluster.pbs {name}: {exc}", file=sys.stderr)
        return 1
    return 0


def submit_main(argv=None) -> int:
    return _one_argument_command("submit", "llmhpc-pbs-submit JOBSCRIPT",
                                 lambda jobscript: submit(jobscript, site_from_env()), argv)
