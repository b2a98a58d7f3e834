"""How long `snakemake -n` takes on a finished results tree: the cost every cluster job pays again (each job parses
the whole workflow), and what a user waits for before a dry run answers.

    python bench/parse_time.py DIR [DIR ...] [--runs 11]   # DIR: a checkout whose results/ holds a finished run

Each DIR is timed against Snakemake's own floor: a one-rule workflow with params, finished, in the same
environment, its runs interleaved with the others' so that a busy or slowed machine slows every side alike (on a
shared 2-core machine the same tree's median moved between 1.4 and 1.9 s within an hour). Prints each side's wall
median and minimum, and the workflow's cost above the floor; goal: under 1.5 s on 2 cores.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOOR_SNAKEFILE = """\
rule all:
    input: "a.txt"

rule a:
    output: "a.txt"
    params: x=1
    shell: "echo {params.x} > {output}"
"""


def dry_run(workdir: Path, env: dict) -> tuple[float, bool]:
    """Wall seconds of one `snakemake -n`, and whether it found nothing to do (a finished tree)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--quiet", "all"], cwd=workdir,
                          capture_output=True, text=True, env=env)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"snakemake -n failed in {workdir}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return took, "Nothing to be done" in proc.stdout + proc.stderr


def make_floor(root: Path) -> Path:
    floor = root / "floor"
    floor.mkdir()
    (floor / "Snakefile").write_text(FLOOR_SNAKEFILE)
    subprocess.run([sys.executable, "-m", "snakemake", "-c1", "--quiet", "all"], cwd=floor, check=True,
                   capture_output=True)
    return floor


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdirs", type=Path, nargs="+")
    ap.add_argument("--runs", type=int, default=11)
    args = ap.parse_args()
    # Python as users run it: bytecode cached. A sandbox that sets PYTHONDONTWRITEBYTECODE (this project's CPU
    # machine does) recompiles every module of the workflow's package at every parse; site-packages were
    # compiled by pip at install time either way.
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as tmp:
        sides = [(str(d), d.resolve(), dict(base, PYTHONPATH=str(d.resolve() / "src"))) for d in args.workdirs]
        sides.append(("Snakemake's floor (one rule with params)", make_floor(Path(tmp)), base))
        for _, workdir, env in sides:  # untimed: writes the bytecode caches, reads the files into the page cache
            if not dry_run(workdir, env)[1]:
                print(f"warning: {workdir} is not a finished tree (snakemake -n plans jobs); its time includes"
                      " planning them", file=sys.stderr)
        times: dict[str, list[float]] = {name: [] for name, _, _ in sides}
        for _ in range(args.runs):
            for name, workdir, env in sides:
                times[name].append(dry_run(workdir, env)[0])
    floor = statistics.median(times[sides[-1][0]])
    print(f"snakemake -n, {args.runs} interleaved runs each (wall s):")
    print("| tree | median | min | above the floor |\n|---|---|---|---|")
    for name, _, _ in sides:
        med = statistics.median(times[name])
        above = "" if name == sides[-1][0] else f"{med - floor:+.2f}"
        print(f"| {name} | {med:.2f} | {min(times[name]):.2f} | {above} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
