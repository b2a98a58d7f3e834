from pathlib import Path

import torch

from llmhpc.rulelog import to_log
from llmhpc.stages import evaluate

to_log(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
checkpoint = Path(snakemake.input.checkpoint)  # the base model, or an experiment's out/final
evaluate.run(snakemake.params.settings, checkpoint, Path(snakemake.input.eval), snakemake.output.predictions,
             snakemake.output.metrics)
