from pathlib import Path

from llmhpc.rulelog import to_log
from llmhpc.stages.data import prepare_finetune

to_log(snakemake.log[0])
prepare_finetune(snakemake.params.source, Path(snakemake.output.train).parent, snakemake.params.embedded)
