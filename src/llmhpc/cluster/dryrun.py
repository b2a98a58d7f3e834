"""What a dry run would submit: `snakemake --profile <site> -n` prints every job's scheduler command.

Neither the cluster-generic executor (PBS) nor the Slurm plugin prints its submit command in a dry run, and the
jobs are known only once the DAG is built, so the lines are printed when Snakemake exits."""

from __future__ import annotations

import atexit
import sys
from typing import Callable


def jobs_to_submit(workflow) -> list:
    """The jobs this dry run would hand to the scheduler, by job id (local rules run on the login node)."""
    dag = workflow.dag
    # not job.is_local: a dry run executes locally, so Snakemake calls every job local then
    local = getattr(workflow, "_localrules", set())
    jobs = [job for job in dag.jobs if dag.needrun(job) and job.rule.name not in local and not job.rule.norun]
    return sorted(jobs, key=lambda job: job.jobid)


def print_at_exit(workflow, title: str, render: Callable[[list], list[str]]) -> None:
    """At exit of a dry run, print `title` and the lines `render(jobs)` makes of the jobs it would submit."""

    def show():
        try:
            if not workflow.dryrun:
                return
            jobs = jobs_to_submit(workflow)
        except Exception:  # no DAG (an error before it was built): Snakemake has reported that already
            return
        print(f"\n{title}", file=sys.stderr)
        try:
            lines = render(jobs)
        except Exception as exc:  # a submit line that cannot be rendered is reported, not a traceback at exit
            lines = [f"cannot render: {exc}"]
        for line in lines:
            print(f"  {line}", file=sys.stderr)

    atexit.register(show)
