from pathlib import Path

import torch

from llmhpc.cluster import cost
from llmhpc.rulelog import to_log
from llmhpc.stages import evaluate

to_log(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
checkpoint = Path(snakemake.input.checkpoint)  # the base model, or an experiment's out/final
# The measured cost in service units where the site has charge rates, as the fine-tune's (workflow/scripts/
# finetune.py): the stage's wall hours x what this job held x the queue's rate; the summary shows it as `su`.
job = {"rule": snakemake.rule, "wildcards": dict(snakemake.wildcards.items()), "threads": snakemake.threads,
       "resources": dict(snakemake.resources.items())}
evaluate.run_stage(snakemake.params.settings, checkpoint, Path(snakemake.input.eval), snakemake.output.predictions,
                   snakemake.output.metrics,
                   cost_of=lambda wall_s: cost.measured(job, snakemake.config["site"], wall_s))
