import os
from pathlib import Path

import torch

from llmhpc import cuda_start

settings = snakemake.params.settings
if settings["device"] != "cpu" and settings["gpus"] == 1 and settings["num_nodes"] == 1:
    # one process scores here: the GPU's context starts while this job imports the scorer and reads its items
    # (where the scorer starts a process per GPU, this one touches no GPU)
    cuda_start.begin()

from llmhpc.cluster import cost, launch  # noqa: E402 - after CUDA has started
from llmhpc.rulelog import to_log  # noqa: E402
from llmhpc.stages import evaluate  # noqa: E402

to_log(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
checkpoint = Path(snakemake.input.checkpoint)  # the base model, or an experiment's out/final
# The measured cost in service units where the site has charge rates, as the fine-tune's (workflow/scripts/
# finetune.py): the stage's wall hours x what this job held x the queue's rate; the summary shows it as `su`.
job = {"rule": snakemake.rule, "wildcards": dict(snakemake.wildcards.items()), "threads": snakemake.threads,
       "resources": dict(snakemake.resources.items())}
plan = None
if settings["num_nodes"] > 1:  # started on every node by the site's launcher, with its NCCL/MPI environment
    plan = launch.plan(snakemake.config["site"], {"num_nodes": settings["num_nodes"], "devices": settings["gpus"]},
                       what="evaluate")
    os.environ.update(plan["env"])
else:  # one process here, or the scorer's data-parallel processes on this node: only the compile cache
    os.environ.update(launch.compile_cache_env(snakemake.config["site"], {}, os.environ))
evaluate.run_stage(settings, checkpoint, Path(snakemake.input.eval), snakemake.output.predictions,
                   snakemake.output.metrics,
                   cost_of=lambda wall_s: cost.measured(job, snakemake.config["site"], wall_s), launch=plan)
