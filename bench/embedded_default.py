"""Benchmark of the embedded default, as a user runs it: a fresh copy of the repository, `snakemake`, then
`snakemake` again (which must have nothing to do). Prints the wall times, the CPU time of every process the run
started (on a machine shared with other work the wall grows with the load, the CPU time much less), every job's
start and wall from Snakemake's own log, and the stage figures the fine-tune and evaluate jobs record.

    python bench/embedded_default.py            # goals: full run <= 120 s on 2 CPU cores, no-op rerun < 10 s
    python bench/embedded_default.py --keep DIR # and keep the finished copy (results/, Snakemake's log) in DIR
    python bench/embedded_default.py --configfile config/examples/cpu-real.yaml   # another run description
                                                # (the real-weights example's goal: <= 10 minutes on 2 cores)
"""

import argparse
import datetime
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Snakemake's log: a timestamp line, then the line that names the job it starts or the one it finished.
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
STARTED = re.compile(r"^(?:local)?[Jj]ob (\d+): (.*)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def copy_repo(dest: Path) -> None:
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes((REPO / rel).read_bytes())


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd, cwd) -> tuple[float, float, str]:
    """(wall s, CPU s of the command and every process under it, its output). The wall is the system clock's, as
    Snakemake's log stamps are: on a loaded virtual machine the monotonic clock was seen to fall behind it."""
    cpu0, t0 = children_cpu_s(), time.time()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(cwd / "src")))
    wall, cpu = time.time() - t0, children_cpu_s() - cpu0
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return wall, cpu, proc.stdout + proc.stderr


def jobs(log: str) -> list[tuple[str, str, float, float]]:
    """(rule, what the job does, start s, wall s) of every finished job, from Snakemake's log (whole seconds)."""
    stamp, started, found = None, {}, []
    for line in log.splitlines():
        if m := STAMP.match(line):
            stamp = datetime.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := STARTED.match(line):
            started[m.group(1)] = (stamp, m.group(2))
        elif (m := FINISHED.match(line)) and m.group(1) in started:
            begin, what = started[m.group(1)]
            found.append((m.group(2), what, begin, stamp))
    if not found:
        return []
    t0 = min(begin for _, _, begin, _ in found)
    return [(rule, what, (begin - t0).total_seconds(), (end - begin).total_seconds()) for rule, what, begin, end in found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="copy the finished repository copy here")
    parser.add_argument("--configfile", help="a config of the repository to run instead of the embedded default")
    args = parser.parse_args()
    command = [sys.executable, "-m", "snakemake", *(["--configfile", args.configfile] if args.configfile else [])]
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        copy_repo(repo)
        full, full_cpu, log = timed(command, repo)
        noop, _, out = timed(command, repo)
        assert "Nothing to be done" in out, out[-2000:]
        summaries = {p.parent.name: json.loads(p.read_text()) for p in repo.glob("results/finetune/*/summary.json")}
        evaluate = {p.parent.name: json.loads(p.read_text()) for p in repo.glob("results/evaluate/*/metrics.json")}
        if args.keep:
            (repo / "snakemake.log").write_text(log)
            shutil.copytree(repo, args.keep, symlinks=True, dirs_exist_ok=True)
    print(f"cores: {os.cpu_count()}, load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'what':<48}{'seconds':>10}")
    print(f"{'snakemake (whole ' + (args.configfile or 'embedded default') + ')':<48}{full:>10.1f}")
    print(f"{'  CPU time of all its processes':<48}{full_cpu:>10.1f}")
    print(f"{'snakemake again (nothing to do)':<48}{noop:>10.1f}")
    for name, s in sorted(summaries.items()):
        print(f"{'finetune ' + name + ' stage wall':<48}{s['stage_wall_s']:>10.1f}")
        print(f"{'finetune ' + name + ' training (litgpt)':<48}{s['training_time_s']:>10.1f}")
    for name, m in sorted(evaluate.items()):
        print(f"{'evaluate ' + name + ' wall (acc ' + format(m['acc'], '.3f') + ')':<48}{m['wall_s']:>10.1f}")
    print(f"\n{'job (from the snakemake log, whole seconds)':<100}{'start':>7}{'wall':>7}")
    for rule, what, start, wall in jobs(log):
        print(f"{(rule + ': ' + what)[:99]:<100}{start:>7.0f}{wall:>7.0f}")


if __name__ == "__main__":
    main()
