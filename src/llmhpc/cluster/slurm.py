"""Slurm: the sbatch line of every job of a dry run, composed by the Slurm executor plugin's own functions.

The plugin decides the job name (a run UUID), its log file and --comment at submission; those are shown as
placeholders. As the plugin's run_job does, the GPU request (--gres) follows the rest. Everything the workflow
controls (nodes, GPUs, CPUs per task, memory, time, partition, account) is as it would be submitted."""

from __future__ import annotations

import shlex


def sbatch_line(job) -> str:
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    res = job.resources
    params = {
        "run_uuid": "<run-uuid>",
        "slurm_logfile": f"<slurm log of {job.rule.name}>",
        "comment_str": f"rule_{job.rule.name}",
        "account": f"-A {shlex.quote(str(res['slurm_account']))}" if res.get("slurm_account") else "",
        "partition": f"-p {shlex.quote(str(res['slurm_partition']))}" if res.get("slurm_partition") else "",
        "workdir": None,
    }
    name = job.rule.name + (f" ({', '.join(f'{k}={v}' for k, v in job.wildcards.items())})" if job.wildcards else "")
    return f"{name}: {' '.join((get_submit_command(job, params) + set_gres_string(job)).split())}"
