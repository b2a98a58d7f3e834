"""AN EMULATOR of PBS Pro's qsub, qstat, qdel and qalter, for tests only (PBS Pro cannot be installed here).

It is written from PBS Pro's documented command-line behaviour, not from its code, and covers what the
workflow uses:
- qsub [-N name] [-q queue] [-P project] [-l res=value,...]... [-o path] [-e path] [-j oe|eo|n] [-W a=v] [-V]
  [-v VAR=value,...] script: `#PBS` directives of the script are read too (the command line wins); it prints
  `<sequence>.<server>`; it refuses a bad job name ("qsub: illegal -N value", exit 2), malformed -l
  ("qsub: illegal -l value", exit 2), an unknown resource ("qsub: Unknown resource Resource_List.<name>",
  exit 2), a bad resource value ("qsub: Illegal attribute or resource value Resource_List.<name>", exit 2),
  select mixed with job-wide ncpus/ngpus/mem (exit 2), an unknown queue (exit 170) and chunks larger than an
  emulated node (exit 188).
- The job runs in the background as the job owner's batch shell: in $HOME, with a login-like environment
  (the submitter's only with -V or -v), PBS_JOBID, PBS_JOBNAME, PBS_O_WORKDIR, PBS_O_HOST, PBS_QUEUE,
  PBS_NODEFILE (one line per CPU of each node for job-wide requests, as Gadi writes it; `mpiprocs` lines per
  select chunk, as PBS Pro writes it), TMPDIR and PBS_JOBFS (a per-job directory), NCPUS/PBS_NCPUS/PBS_NGPUS.
  stdout and stderr are spooled and copied at the end to <name>.o<seq> / <name>.e<seq> in the directory qsub
  ran in (or -o/-e).
- Walltime: past the limit the job gets "=>> PBS: job killed: walltime N exceeded limit M" on its stderr,
  SIGTERM, then SIGKILL after the kill delay; Exit_status is 271 (256 + SIGTERM, how PBS reports a job killed
  by a signal) or, with PBS_EMULATOR_WALLTIME_EXIT=-29, JOB_EXEC_KILL_WALLTIME as newer PBS Pro reports it.
  A job that exits by itself reports its exit code; one killed by signal s reports 256 + s.
- qstat -x -f -F json [ids]: {"timestamp", "pbs_version", "pbs_server", "Jobs": {id: {Job_Name, job_state,
  queue, Resource_List, resources_used, Exit_status, Output_Path, Error_Path, ...}}}; finished jobs are in state
  F and shown only with -x; an unknown id gives "qstat: Unknown Job Id <id>" on stderr and exit 153.
- qdel ids...: a running job gets SIGTERM then SIGKILL (Exit_status 271); a queued one goes to F.
- qalter -l walltime=HH:MM:SS ids...: a new walltime for a queued or running job (as a PBS manager may change a
  running job's), enforced from then on; a finished job gives "qalter: Request invalid for state of job" (exit 168).

State lives in $PBS_EMULATOR_HOME (job table as jobs/<seq>.json). Every command call is appended to
calls.log there, so tests can count qstat runs. Faults for tests: a JSON list in qstat_faults ("exit",
"garbage") is consumed one entry per qstat call. Knobs: PBS_EMULATOR_SERVER, PBS_EMULATOR_QUEUES,
PBS_EMULATOR_CPUS_PER_NODE, PBS_EMULATOR_GPUS_PER_NODE, PBS_EMULATOR_QUEUE_DELAY, PBS_EMULATOR_KILL_DELAY,
PBS_EMULATOR_WALLTIME_EXIT, PBS_EMULATOR_HISTORY_SECONDS (the server's job_history_duration: a finished job
is purged that many seconds after it ended, and then qstat -x answers "Unknown Job Id" as for a job it never
had; unset = kept), PBS_EMULATOR_TIME_SCALE (real seconds per emulated second, so that tests can
exceed a one-minute walltime in seconds).
"""

from __future__ import annotations

import fcntl
import getopt
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

VERSION = "2022.1 (llmhpc test emulator, not PBS Pro)"
KNOWN_RESOURCES = {"select", "place", "ncpus", "ngpus", "mem", "vmem", "jobfs", "walltime", "storage",
                   "mpiprocs", "ompthreads", "wd", "software", "host"}
VALUELESS = {"wd"}
SIZE = re.compile(r"^\d+(b|kb|mb|gb|tb|w|kw|mw|gw|tw)?$", re.I)
INTEGER = re.compile(r"^\d+$")
DURATION = re.compile(r"^\d+(:\d{1,2}){0,2}$")
STORAGE = re.compile(r"^[a-z]+/[A-Za-z0-9_]+(\+[a-z]+/[A-Za-z0-9_]+)*$")
BAD_NAME = re.compile(r"[\s/%=@,]")
MAX_NAME = 236


class QsubError(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def home() -> Path:
    path = os.environ.get("PBS_EMULATOR_HOME")
    if not path:
        sys.exit("PBS emulator: PBS_EMULATOR_HOME is not set")
    root = Path(path)
    (root / "jobs").mkdir(parents=True, exist_ok=True)
    return root


def server() -> str:
    return os.environ.get("PBS_EMULATOR_SERVER", "emu-pbs")


@contextmanager
def locked(root: Path):
    with open(root / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def log_call(root: Path, argv: list[str]) -> None:
    with open(root / "calls.log", "a") as fh:
        fh.write(json.dumps({"t": time.time(), "argv": argv}) + "\n")


def read_job(root: Path, seq: int) -> dict | None:
    try:
        return json.loads((root / "jobs" / f"{seq}.json").read_text())
    except (OSError, ValueError):
        return None


def write_job(root: Path, job: dict) -> None:
    path = root / "jobs" / f"{job['_seq']}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(job, indent=1))
    os.replace(tmp, path)


def update_job(root: Path, seq: int, **changes) -> dict:
    with locked(root):
        job = read_job(root, seq)
        job.update(changes)
        job["mtime"] = time.ctime()
        write_job(root, job)
        return job


def stamp() -> str:
    return time.ctime()


def seconds(text: str) -> int:
    parts = [int(p) for p in text.split(":")]
    total = 0
    for part in parts:
        total = total * 60 + part
    return total


def hms(total: float) -> str:
    total = int(total)
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


# ------------------------------------------------------------------------------------------------------ qsub

def check_value(name: str, value: str) -> None:
    if name not in KNOWN_RESOURCES:
        raise QsubError(f"qsub: Unknown resource Resource_List.{name}", 2)
    ok = {"mem": SIZE, "vmem": SIZE, "jobfs": SIZE, "ncpus": INTEGER, "ngpus": INTEGER, "mpiprocs": INTEGER,
          "ompthreads": INTEGER, "walltime": DURATION, "storage": STORAGE}.get(name)
    if ok is not None and not ok.match(value):
        raise QsubError(f"qsub: Illegal attribute or resource value Resource_List.{name}", 2)


def parse_select(value: str) -> list[dict]:
    chunks = []
    for spec in value.split("+"):
        parts = spec.split(":")
        count = 1
        if parts and INTEGER.match(parts[0]):
            count = int(parts.pop(0))
        chunk = {}
        for part in parts:
            if "=" not in part:
                raise QsubError("qsub: illegal -l value", 2)
            key, val = part.split("=", 1)
            check_value(key, val)
            chunk[key] = val
        if not chunk and not count:
            raise QsubError("qsub: illegal -l value", 2)
        chunks.append({"count": count, **chunk})
    return chunks


def parse_resources(values: list[str]) -> dict:
    resources = {}
    for text in values:
        for item in text.split(","):
            if not item:
                raise QsubError("qsub: illegal -l value", 2)
            if "=" not in item:
                if item in VALUELESS:
                    resources[item] = "True"
                    continue
                raise QsubError("qsub: illegal -l value", 2)
            name, value = item.split("=", 1)
            if not value:
                raise QsubError("qsub: illegal -l value", 2)
            if name == "select":
                parse_select(value)
            else:
                check_value(name, value)
            resources[name] = value
    if "select" in resources:
        for name in ("ncpus", "ngpus", "mem", "mpiprocs"):
            if name in resources:
                raise QsubError(f'qsub: "-lresource=" cannot be used with "select" or "place", resource is: {name}',
                                2)
    return resources


def directives(script: str) -> list[str]:
    """#PBS options of a script, up to its first command line (where PBS stops reading them)."""
    args = []
    for line in script.splitlines()[1:] if script.startswith("#!") else script.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#PBS"):
            args += shlex.split(stripped[4:])
        elif stripped.startswith("#"):
            continue
        else:
            break
    return args


OPTSPEC = "N:q:P:l:o:e:j:W:Vv:"


def parse_options(argv: list[str]) -> tuple[dict, list[str]]:
    try:
        pairs, rest = getopt.getopt(argv, OPTSPEC)
    except getopt.GetoptError as exc:
        raise QsubError(f"qsub: {exc}\nusage: qsub [-N name] [-q queue] [-P project] [-l resource_list] "
                        f"[-o path] [-e path] [-j join] [-W attr] [-V] [-v var_list] script", 2) from None
    opts: dict = {"l": [], "W": [], "v": []}
    for flag, value in pairs:
        key = flag[1:]
        if key in ("l", "W", "v"):
            opts[key].append(value)
        elif key == "V":
            opts["V"] = True
        else:
            opts[key] = value
    return opts, rest


def nodes_of(resources: dict) -> list[dict]:
    """The emulated nodes a request lands on: [{host, ncpus, ngpus, lines}]."""
    cpn = int(os.environ.get("PBS_EMULATOR_CPUS_PER_NODE", "48"))
    gpn = int(os.environ.get("PBS_EMULATOR_GPUS_PER_NODE", "4"))
    host = socket.gethostname()
    names = (host if i == 0 else f"{host}-n{i}" for i in range(10_000))
    out = []
    if "select" in resources:
        for chunk in parse_select(resources["select"]):
            ncpus, ngpus = int(chunk.get("ncpus", 1)), int(chunk.get("ngpus", 0))
            if ncpus > cpn or ngpus > gpn:
                raise QsubError("qsub: Job violates queue and/or server resource limits", 188)
            for _ in range(chunk["count"]):
                out.append({"host": next(names), "ncpus": ncpus, "ngpus": ngpus,
                            "lines": int(chunk.get("mpiprocs", 1))})
        return out
    ncpus, ngpus = int(resources.get("ncpus", 1)), int(resources.get("ngpus", 0))
    count = max(1, math.ceil(ncpus / cpn), math.ceil(ngpus / gpn) if ngpus else 1)
    for _ in range(count):
        out.append({"host": next(names), "ncpus": ncpus // count, "ngpus": ngpus // count,
                    "lines": max(1, ncpus // count)})
    return out


def qsub(argv: list[str]) -> int:
    root = home()
    log_call(root, ["qsub", *argv])
    try:
        opts, rest = parse_options(argv)
        if len(rest) != 1:
            raise QsubError("qsub: a script file is required (this emulator does not read stdin)", 2)
        script_path = Path(rest[0])
        try:
            script = script_path.read_text()
        except OSError:
            raise QsubError("qsub: script file:: No such file or directory", 2) from None
        from_script, _ = parse_options(directives(script))
        merged = {**from_script, **{k: v for k, v in opts.items() if k not in ("l", "W", "v")}}
        resources = parse_resources(from_script["l"])
        resources.update(parse_resources(opts["l"]))
        name = merged.get("N", script_path.name)
        if not name or name.startswith(".") or BAD_NAME.search(name) or len(name) > MAX_NAME:
            raise QsubError("qsub: illegal -N value", 2)
        queue = merged.get("q", "workq")
        allowed = [q for q in os.environ.get("PBS_EMULATOR_QUEUES", "").split(",") if q]
        if allowed and queue not in allowed:
            raise QsubError("qsub: Unknown queue", 170)
        if merged.get("j", "n") not in ("oe", "eo", "n"):
            raise QsubError("qsub: illegal -j value", 2)
        nodes = nodes_of(resources)
    except QsubError as exc:
        print(exc, file=sys.stderr)
        return exc.code
    workdir = os.getcwd()
    with locked(root):
        seq_file = root / "seq"
        seq = int(seq_file.read_text()) + 1 if seq_file.exists() else 1000
        seq_file.write_text(str(seq))
        job_id = f"{seq}.{server()}"
        spool = root / "spool" / str(seq)
        spool.mkdir(parents=True)
        shutil.copyfile(script_path, spool / "script")  # PBS keeps its own copy: later edits do not matter
        host = socket.gethostname()
        out_path = merged.get("o") or f"{name}.o{seq}"
        err_path = merged.get("e") or f"{name}.e{seq}"
        environment = {k: v for k, v in os.environ.items()} if opts.get("V") or from_script.get("V") else {}
        for item in [*from_script["v"], *opts["v"]]:
            for pair in item.split(","):
                key, _, value = pair.partition("=")
                environment[key] = value if "=" in pair else os.environ.get(key, "")
        job = {
            "_seq": seq, "_spool": str(spool), "_nodes": nodes, "_env": environment, "_delete": False,
            "Job_Name": name, "Job_Owner": f"{os.environ.get('USER', 'user')}@{host}", "job_state": "Q",
            "queue": queue, "server": server(), "project": merged.get("P", "_pbs_project_default"),
            "Checkpoint": "u", "ctime": stamp(), "qtime": stamp(), "mtime": stamp(),
            "Error_Path": f"{host}:{os.path.join(workdir, err_path)}",
            "Output_Path": f"{host}:{os.path.join(workdir, out_path)}",
            "Join_Path": merged.get("j", "n"), "Keep_Files": "n", "Hold_Types": "n", "Priority": 0,
            "Rerunable": "True",
            "Resource_List": {**{k: int(v) if INTEGER.match(v) else v for k, v in resources.items()},
                              "nodect": len(nodes)},
            "Variable_List": {"PBS_O_HOME": os.environ.get("HOME", ""), "PBS_O_WORKDIR": workdir,
                              "PBS_O_HOST": host, "PBS_O_PATH": os.environ.get("PATH", ""),
                              "PBS_O_QUEUE": queue, "PBS_O_SHELL": os.environ.get("SHELL", "/bin/bash")},
            "Submit_arguments": " ".join(argv), "substate": 10, "run_count": 0,
            "comment": "Not Running: emulator queue delay",
        }
        write_job(root, job)
    subprocess.Popen([sys.executable, os.path.realpath(__file__), "run", str(seq)], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     env=dict(os.environ))
    print(job_id)
    return 0


# ------------------------------------------------------------------------------------------------ the "mom"

def _kill(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def run(seq: int) -> int:
    """Run job `seq` as a PBS mom would: wait in the queue, start the script, enforce walltime and qdel, stage
    out .o/.e, record the exit status."""
    root = home()
    time.sleep(float(os.environ.get("PBS_EMULATOR_QUEUE_DELAY", "0.3")))
    job = read_job(root, seq)
    if job is None or job["job_state"] == "F":
        return 0
    spool = Path(job["_spool"])
    nodefile = spool / "nodefile"
    nodefile.write_text("".join(f"{n['host']}\n" * n["lines"] for n in job["_nodes"]))
    jobfs = spool / "jobfs"
    jobfs.mkdir()
    home_dir = os.environ.get("HOME", "/")
    ncpus = sum(n["ncpus"] for n in job["_nodes"])
    ngpus = sum(n["ngpus"] for n in job["_nodes"])
    env = {"HOME": home_dir, "USER": os.environ.get("USER", "user"), "LOGNAME": os.environ.get("USER", "user"),
           "SHELL": "/bin/bash", "LANG": os.environ.get("LANG", "C.UTF-8"), "PATH": "/usr/local/bin:/usr/bin:/bin",
           **job["_env"], **job["Variable_List"],
           "PBS_JOBID": f"{seq}.{server()}", "PBS_JOBNAME": job["Job_Name"], "PBS_QUEUE": job["queue"],
           "PBS_NODEFILE": str(nodefile), "PBS_ENVIRONMENT": "PBS_BATCH", "PBS_JOBDIR": home_dir,
           "TMPDIR": str(jobfs), "PBS_JOBFS": str(jobfs), "NCPUS": str(ncpus), "PBS_NCPUS": str(ncpus),
           "PBS_NGPUS": str(ngpus), "OMP_NUM_THREADS": str(job["_nodes"][0]["ncpus"])}
    limit = seconds(job["Resource_List"]["walltime"]) if "walltime" in job["Resource_List"] else None
    kill_delay = float(os.environ.get("PBS_EMULATOR_KILL_DELAY", "2"))
    scale = float(os.environ.get("PBS_EMULATOR_TIME_SCALE", "1"))  # real seconds per emulated second
    out, err = open(spool / "OU", "w"), open(spool / "ER", "w")
    start = time.time()
    proc = subprocess.Popen(["/bin/bash", str(spool / "script")], cwd=home_dir, env=env, stdout=out, stderr=err,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    update_job(root, seq, job_state="R", substate=42, stime=stamp(), run_count=1, session_id=proc.pid,
               exec_host="+".join(f"{n['host']}/0*{n['ncpus']}" for n in job["_nodes"]),
               comment=f"Job run at {stamp()} on emulated nodes")
    forced = None
    while proc.poll() is None:
        time.sleep(0.1)
        elapsed = (time.time() - start) / scale
        walltime = ((read_job(root, seq) or {}).get("Resource_List") or {}).get("walltime")  # qalter may change it
        limit = seconds(walltime) if walltime else limit
        if limit is not None and elapsed > limit and forced is None:
            err.write(f"=>> PBS: job killed: walltime {math.ceil(elapsed)} exceeded limit {limit}\n")
            err.flush()
            forced = int(os.environ.get("PBS_EMULATOR_WALLTIME_EXIT", "271"))
        elif forced is None and (read_job(root, seq) or {}).get("_delete"):
            forced = 256 + signal.SIGTERM
        if forced is not None:
            _kill(proc.pid, signal.SIGTERM)
            deadline = time.time() + kill_delay
            while proc.poll() is None and time.time() < deadline:
                time.sleep(0.1)
            _kill(proc.pid, signal.SIGKILL)
            proc.wait()
    code = proc.returncode
    if forced is not None:
        status = forced
    else:
        status = 256 - code if code < 0 else code  # killed by signal s: 256 + s
    out.close()
    err.close()
    update_job(root, seq, job_state="E", substate=51)
    join = job["Join_Path"]
    out_target = job["Output_Path"].split(":", 1)[1]
    err_target = job["Error_Path"].split(":", 1)[1]
    if join == "oe":
        with open(spool / "OU", "a") as fh:
            fh.write((spool / "ER").read_text())
        shutil.copyfile(spool / "OU", out_target)
    elif join == "eo":
        with open(spool / "ER", "a") as fh:
            fh.write((spool / "OU").read_text())
        shutil.copyfile(spool / "ER", err_target)
    else:
        shutil.copyfile(spool / "OU", out_target)
        shutil.copyfile(spool / "ER", err_target)
    used = (time.time() - start) / scale
    update_job(root, seq, job_state="F", substate=92, Exit_status=status, _finished_at=time.time(),
               resources_used={"cpupercent": 0, "cput": hms(0), "mem": "0kb", "ncpus": ncpus, "vmem": "0kb",
                               "walltime": hms(used)},
               comment=f"Job run at {job.get('stime', stamp())} and finished")
    return 0


# ------------------------------------------------------------------------------------------------ qstat, qdel

def purged(root: Path, job: dict) -> bool:
    """Past the server's job_history_duration a finished job is removed from the server for good."""
    keep = os.environ.get("PBS_EMULATOR_HISTORY_SECONDS")
    if keep is None or job.get("job_state") != "F" or time.time() - job.get("_finished_at", time.time()) < float(keep):
        return False
    (root / "jobs" / f"{job['_seq']}.json").unlink(missing_ok=True)
    return True


def find(root: Path, job_id: str) -> dict | None:
    seq = job_id.split(".")[0]
    if not INTEGER.match(seq):
        return None
    job = read_job(root, int(seq))
    if job is not None and purged(root, job):
        return None
    if job is None or ("." in job_id and job_id.split(".", 1)[1] != server()):
        return None
    return job


def public(job: dict) -> dict:
    return {k: v for k, v in job.items() if not k.startswith("_")}


def qstat(argv: list[str]) -> int:
    root = home()
    log_call(root, ["qstat", *argv])
    faults_path = root / "qstat_faults"
    with locked(root):
        faults = json.loads(faults_path.read_text()) if faults_path.exists() else []
        fault = faults.pop(0) if faults else None
        if faults_path.exists():
            faults_path.write_text(json.dumps(faults))
    if fault == "exit":
        print(f"Connection refused\nqstat: cannot connect to server {server()} (errno=15010)", file=sys.stderr)
        return 1
    try:
        pairs, ids = getopt.getopt(argv, "xfF:")
    except getopt.GetoptError as exc:
        print(f"qstat: {exc}", file=sys.stderr)
        return 2
    flags = dict(pairs)
    if "-F" in flags and "-f" not in flags:
        print("qstat: option -F requires -f", file=sys.stderr)
        return 2
    if flags.get("-F") != "json":
        print("PBS emulator: only `qstat [-x] -f -F json [ids]` is emulated", file=sys.stderr)
        return 2
    history = "-x" in flags
    jobs, code = {}, 0
    if ids:
        for job_id in ids:
            job = find(root, job_id)
            if job is None:
                print(f"qstat: Unknown Job Id {job_id}", file=sys.stderr)
                code = 153
            elif job["job_state"] == "F" and not history:
                print(f"qstat: {job_id} Job has finished, use -x or -H to obtain historical job information",
                      file=sys.stderr)
                code = 35
            else:
                jobs[f"{job['_seq']}.{server()}"] = public(job)
    else:
        for path in sorted((root / "jobs").glob("*.json")):
            job = json.loads(path.read_text())
            if purged(root, job):
                continue
            if history or job["job_state"] != "F":
                jobs[f"{job['_seq']}.{server()}"] = public(job)
    text = json.dumps({"timestamp": int(time.time()), "pbs_version": VERSION, "pbs_server": server(),
                       "Jobs": jobs}, indent=4)
    if fault == "garbage":
        text = text[: len(text) // 2]
    if jobs or not ids:
        print(text)
    return code


def qdel(argv: list[str]) -> int:
    root = home()
    log_call(root, ["qdel", *argv])
    if not argv:
        print("usage: qdel [-W force|suppress_email=X] [-x] job_identifier...", file=sys.stderr)
        return 2
    code = 0
    for job_id in argv:
        job = find(root, job_id)
        if job is None:
            print(f"qdel: Unknown Job Id {job_id}", file=sys.stderr)
            code = 153
        elif job["job_state"] == "F":
            print(f"qdel: Job has finished {job_id}", file=sys.stderr)
            code = 35
        elif job["job_state"] == "Q":
            update_job(root, job["_seq"], job_state="F", _delete=True, comment="Job deleted while queued")
        else:
            update_job(root, job["_seq"], _delete=True)
    return code


def qalter(argv: list[str]) -> int:
    root = home()
    log_call(root, ["qalter", *argv])
    try:
        pairs, ids = getopt.getopt(argv, "l:")
        changes = parse_resources([value for _, value in pairs])
    except (getopt.GetoptError, QsubError) as exc:
        message = str(exc)
        print(message.replace("qsub:", "qalter:", 1) if message.startswith("qsub:") else f"qalter: {message}",
              file=sys.stderr)
        return 2
    if not ids or set(changes) - {"walltime"}:
        print("PBS emulator: only `qalter -l walltime=HH:MM:SS job_identifier...` is emulated", file=sys.stderr)
        return 2
    code = 0
    for job_id in ids:
        job = find(root, job_id)
        if job is None:
            print(f"qalter: Unknown Job Id {job_id}", file=sys.stderr)
            code = 153
        elif job["job_state"] == "F":
            print(f"qalter: Request invalid for state of job {job_id}", file=sys.stderr)
            code = 168
        else:
            update_job(root, job["_seq"], Resource_List={**job["Resource_List"], **changes})
    return code


def main(command: str, argv: list[str]) -> int:
    if command == "run":
        return run(int(argv[0]))
    return {"qsub": qsub, "qstat": qstat, "qdel": qdel, "qalter": qalter}[command](argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
