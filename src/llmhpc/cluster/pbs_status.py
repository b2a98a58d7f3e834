"""PBS Pro job states and cancellation for Snakemake's cluster-generic executor (llmhpc-pbs-status, -cancel).

- status: one `qstat -x -f -F json` for every job of the run, cached for a few seconds under a lock, so that
  Snakemake asking about hundreds of jobs one by one runs a handful of qstat; finished jobs map to success or
  failed by Exit_status; a qstat that fails or prints garbage is not a failed job (the answer is `running`).
- cancel: qdel in batches.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from llmhpc.cluster.pbs import STATE_DIR, PBSError, _one_argument_command, exit_records_dir, locked, not_on_path

CACHE_SECONDS = 10.0  # one qstat answers every status call within this window
QSTAT_TIMEOUT = 60
GIVE_UP_AFTER = 1800.0  # qstat failing this long is no longer transient: stop the run with an error
CANCEL_BATCH = 50
PURGE_GRACE = 120.0  # a purged job without an exit record is failed after this long (records may lag on NFS)
WALLTIME_EXITS = {-29, 271}  # JOB_EXEC_KILL_WALLTIME (PBS Pro 2020+); 256 + SIGTERM (older moms)


# -------------------------------------------------------------------------------------------------- status

def map_state(job: dict | None) -> tuple[str, str | None]:
    """(running | success | failed, why) for one job's qstat -f -F json attributes."""
    if job is None:
        return "running", None
    state = job.get("job_state")
    if state in ("F", "X"):
        code = job.get("Exit_status")
        if code is None:
            return "failed", "finished without an exit status (deleted before it ran?)"
        code = int(code)
        if code == 0:
            return "success", None
        if code in WALLTIME_EXITS:
            limit = (job.get("Resource_List") or {}).get("walltime")
            return "failed", (f"killed for exceeding its walltime{f' {limit}' if limit else ''} (Exit_status {code}):"
                              f" raise the rule's runtime resource")
        if code > 256:
            return "failed", f"killed by signal {code - 256} (Exit_status {code})"
        if code < 0:
            return "failed", f"PBS could not run it (Exit_status {code})"
        return "failed", f"exited with {code}"
    return "running", None


def _read_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _submitted(state_dir: Path) -> list[str]:
    try:
        return [ln.split("\t")[0] for ln in (state_dir / "jobs").read_text().splitlines() if ln.strip()]
    except OSError:
        return []


def query(job_ids: list[str], timeout: float = QSTAT_TIMEOUT) -> tuple[dict | None, set[str], str]:
    """One `qstat -x -f -F json` for job_ids: (jobs by id or None when the answer is unusable, ids PBS says
    it does not know, error text)."""
    try:
        proc = subprocess.run(["qstat", "-x", "-f", "-F", "json", *job_ids], capture_output=True, text=True,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, set(), f"qstat could not run: {exc}"
    unknown = set(re.findall(r"Unknown Job Id:? (\S+)", proc.stderr))
    try:
        data = json.loads(proc.stdout)
        jobs = data["Jobs"] if "Jobs" in data else {}
        if not isinstance(jobs, dict):
            raise ValueError("'Jobs' is not a mapping")
    except (ValueError, TypeError, KeyError) as exc:
        if unknown and not proc.stdout.strip():
            return {}, unknown, proc.stderr.strip()
        return None, unknown, f"qstat exited {proc.returncode}, unreadable output ({exc}): {proc.stderr.strip()[:300]}"
    return jobs, unknown, proc.stderr.strip()


def _same_job(wanted: str, known: str) -> bool:
    # qstat may answer with the full server name (1234.gadi-pbs) for a short id (1234) and the reverse
    return wanted == known or wanted.split(".")[0] == known.split(".")[0]


def status(job_id: str, state_dir: Path = STATE_DIR, cache_seconds: float = CACHE_SECONDS, log=None) -> str:
    """running, success or failed for job_id, from a shared cache refreshed by at most one qstat per window."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    with locked(state_dir):
        cache_path = state_dir / "qstat.json"
        cache = _read_json(cache_path, {"attempt": 0.0, "jobs": {}, "unknown": [], "failing_since": None})
        fresh = time.time() - cache["attempt"] < cache_seconds
        if not (fresh and (job_id in cache["jobs"] or job_id in cache["unknown"] or cache["failing_since"])):
            # jobs already finished (or unknown to PBS) are not asked about again, unless asked for
            settled = {j for j, attrs in cache["jobs"].items() if map_state(attrs)[0] != "running"}
            settled |= set(cache["unknown"])
            ids = [j for j in dict.fromkeys([job_id, *_submitted(state_dir)]) if j == job_id or j not in settled]
            jobs, unknown, error = query(ids)
            cache["attempt"] = time.time()
            if jobs is None:
                cache["failing_since"] = cache["failing_since"] or time.time()
                if time.time() - cache["failing_since"] > GIVE_UP_AFTER:
                    _write_json(cache_path, cache)
                    raise PBSError(f"qstat has failed for {GIVE_UP_AFTER / 60:.0f} minutes: {error}")
                log(f"llmhpc.cluster.pbs: qstat failed, treating job {job_id} as running and asking again later: {error}")
            else:
                cache["failing_since"] = None
                for known, attrs in jobs.items():
                    match = next((j for j in ids if _same_job(j, known)), known)
                    cache["jobs"][match] = {k: attrs.get(k) for k in
                                            ("job_state", "Exit_status", "Resource_List", "Error_Path", "Job_Name")}
                newly_unknown = {j for j in ids if any(_same_job(j, u) for u in unknown)}
                purged = cache.setdefault("purged", {})
                for j in newly_unknown & set(cache["jobs"]):  # seen before, now gone from PBS's history
                    purged.setdefault(j, time.time())
                cache["unknown"] = sorted((set(cache["unknown"]) | newly_unknown) - set(cache["jobs"]))
            _write_json(cache_path, cache)
        if job_id in cache["unknown"]:
            log(f"llmhpc.cluster.pbs: PBS does not know job {job_id} (not even in its history)")
            return "failed"
        if job_id in cache.get("purged", {}):
            return _purged_job(job_id, cache["purged"][job_id], state_dir, log)
        answer, why = map_state(cache["jobs"].get(job_id))
        if answer == "failed":
            attrs = cache["jobs"][job_id]
            log(f"llmhpc.cluster.pbs: job {job_id} ({attrs.get('Job_Name')}) {why}; its stderr: {attrs.get('Error_Path')}")
        return answer


def _purged_job(job_id: str, since: float, state_dir: Path, log) -> str:
    """A job PBS has purged from its history after we saw it: its exit record decides; without one (a SIGKILL,
    a node that died) it is failed once PURGE_GRACE has passed, so that a run never waits for it forever."""
    record = exit_records_dir(state_dir) / job_id
    if not record.exists():
        record = next((p for p in exit_records_dir(state_dir).glob("*") if _same_job(job_id, p.name)), record)
    if record.exists():
        code = record.read_text().strip()
        log(f"llmhpc.cluster.pbs: PBS no longer knows job {job_id} (purged from its history); its exit record"
            f" {record} says {code}")
        return "success" if code == "0" else "failed"
    if time.time() - since < PURGE_GRACE:
        return "running"
    log(f"llmhpc.cluster.pbs: PBS purged job {job_id} from its history and the job left no exit record in"
        f" {PURGE_GRACE:.0f} s (killed by a signal, or its node died): treating it as failed")
    return "failed"


# -------------------------------------------------------------------------------------------------- cancel

def cancel(job_ids: list[str], batch: int = CANCEL_BATCH, wait: float = 0.5) -> list[list[str]]:
    """qdel the jobs, `batch` ids per qdel. Each qdel runs in its own session, so that it finishes even when
    Snakemake stops waiting for this command (it allows 2 s); returns the batches."""
    batches = [job_ids[i:i + batch] for i in range(0, len(job_ids), batch)]
    try:
        procs = [subprocess.Popen(["qdel", *chunk], start_new_session=True) for chunk in batches]
    except FileNotFoundError:
        print(f"llmhpc-pbs-cancel: {not_on_path('qdel')}; jobs left: {' '.join(job_ids)}", file=sys.stderr)
        return batches
    deadline = time.monotonic() + wait
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    return batches



def status_main(argv=None) -> int:
    return _one_argument_command("status", "llmhpc-pbs-status JOBID", status, argv)


def cancel_main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cancel(argv)
    return 0
