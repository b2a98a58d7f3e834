"""What a dry run would submit: `snakemake --profile <site> -n` prints every job's scheduler command and, on PBS,
each job's estimated cost in service units.

Neither the cluster-generic executor (PBS) nor the Slurm plugin prints its submit command in a dry run, and the
jobs are known only once the DAG is built, so the lines are printed when Snakemake exits. The lines are composed by
pbs, slurm and cost; this module, above them, prints them."""

from __future__ import annotations

import atexit
import json
import sys
from typing import Callable

from llmhpc.cluster import cost, pbs, slurm
from llmhpc.cluster.site import Site


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


def register_dry_run_plan(workflow, site: Site | dict) -> None:
    """In a dry run print the submit line of every job that would be submitted: on PBS the qsub lines, then each
    job's estimated cost in service units and their total (llmhpc.cluster.cost); on Slurm the sbatch lines."""
    site = Site.of(site)

    def properties(jobs) -> list[dict]:
        return [json.loads(job.properties()) for job in jobs]

    if site.scheduler == "pbs":
        # registered first: atexit runs last-in first-out, so the estimate prints after the qsub lines
        print_at_exit(workflow, f"Estimated cost in service units (site '{site.name}'; requested walltime x resources"
                                f" held x the queue's rate):", lambda jobs: cost.estimate_lines(properties(jobs), site))
        print_at_exit(workflow, f"PBS submissions of this dry run (site '{site.name}'; nothing was submitted):",
                      lambda jobs: pbs.plan_lines(properties(jobs), site))
    elif site.scheduler == "slurm":
        print_at_exit(workflow, f"Slurm submissions of this dry run (site '{site.name}'; nothing was submitted):",
                      lambda jobs: [slurm.sbatch_line(job) for job in jobs])
