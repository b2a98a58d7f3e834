import os
from pathlib import Path

from llmhpc.cluster import cost, launch
from llmhpc.rulelog import to_log
from llmhpc.stages import finetune

to_log(snakemake.log[0])
# The site (from the cluster profile) says how to start one process per GPU on every node and with which
# NCCL/MPI environment; the experiment's launch_env wins over the site's.
launch_plan = launch.plan(snakemake.config["site"], snakemake.params.settings)
os.environ.update(launch_plan["env"])
# The measured cost in service units where the site has charge rates: the stage's wall hours x what this job held
# x the queue's rate (llmhpc.cluster.cost); the summary table shows it as the metric `su`.
job = {"rule": snakemake.rule, "wildcards": dict(snakemake.wildcards.items()), "threads": snakemake.threads,
       "resources": dict(snakemake.resources.items())}
finetune.run_stage(
    config_path=snakemake.input.config,
    checkpoint_dir=snakemake.input.checkpoint,
    out_dir=Path(snakemake.output.final).parent,
    stdout_path=snakemake.output.stdout,
    metrics_path=snakemake.output.metrics,
    summary_path=snakemake.output.summary,
    settings=snakemake.params.settings,
    peak_override=snakemake.params.peak_tflops,
    threads=snakemake.threads,
    launch=launch_plan,
    runtime_min=getattr(snakemake.resources, "runtime", None),
    cost_of=lambda wall_s: cost.measured(job, snakemake.config["site"], wall_s),
)
