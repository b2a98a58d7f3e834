from pathlib import Path

import torch

from llmhpc.rulelog import to_log
from llmhpc.stages import evaluate

to_log(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
checkpoint = Path(snakemake.input.checkpoint)
if snakemake.wildcards.model != "base":
    checkpoint = checkpoint / "final"  # litgpt finetune writes the final model to out_dir/final
evaluate.run(snakemake.params.settings, checkpoint, Path(snakemake.input.eval), snakemake.output.predictions,
             snakemake.output.metrics)
