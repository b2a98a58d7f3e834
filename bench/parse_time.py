"""How long `snakemake -n` takes on a finished results tree: the cost every cluster job pays again (each job parses
the whole workflow), and what a user waits for before a dry run answers.

    python bench/parse_time.py DIR [--runs 7]     # DIR: a checkout whose results/ holds a finished run

Prints each run's wall time and the median; goal: under 1.5 s on 2 cores.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(args.workdir.resolve() / "src"))
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--quiet", "all"], cwd=args.workdir,
                              capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
            return proc.returncode
    said = (proc.stdout + proc.stderr).strip().splitlines()
    print(f"last run said: {said[-1] if said else '(nothing)'}")
    print("runs (s): " + " ".join(f"{t:.2f}" for t in times))
    print(f"snakemake -n on {args.workdir}: median {statistics.median(times):.2f} s, min {min(times):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
