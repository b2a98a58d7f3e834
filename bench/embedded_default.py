"""Benchmark of the embedded default, as a user runs it: a fresh copy of the repository, `snakemake`, then
`snakemake` again (which must have nothing to do). Prints a table of wall times and per-stage job times.

    python bench/embedded_default.py            # goals: full run < 300 s on 2 CPU cores, no-op rerun < 10 s
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def copy_repo(dest: Path) -> None:
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes((REPO / rel).read_bytes())


def timed(cmd, cwd) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(cwd / "src")))
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return wall, proc.stdout + proc.stderr


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        copy_repo(repo)
        full, log = timed([sys.executable, "-m", "snakemake"], repo)
        noop, out = timed([sys.executable, "-m", "snakemake"], repo)
        assert "Nothing to be done" in out, out[-2000:]
        summaries = {p.parent.name: json.loads(p.read_text()) for p in repo.glob("results/finetune/*/summary.json")}
        evaluate = {p.parent.name: json.loads(p.read_text()) for p in repo.glob("results/evaluate/*/metrics.json")}
    print(f"cores: {os.cpu_count()}")
    print(f"{'what':<40}{'seconds':>10}")
    print(f"{'snakemake (whole embedded default)':<40}{full:>10.1f}")
    print(f"{'snakemake again (nothing to do)':<40}{noop:>10.1f}")
    for name, s in sorted(summaries.items()):
        print(f"{'finetune ' + name + ' stage wall':<40}{s['stage_wall_s']:>10.1f}")
        print(f"{'finetune ' + name + ' training (litgpt)':<40}{s['training_time_s']:>10.1f}")
    for name, m in sorted(evaluate.items()):
        print(f"{'evaluate ' + name + ' wall (acc ' + format(m['acc'], '.3f') + ')':<40}{m['wall_s']:>10.1f}")


if __name__ == "__main__":
    main()
