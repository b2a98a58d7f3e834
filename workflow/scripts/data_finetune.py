from pathlib import Path

from llmhpc.data import prepare_finetune
from llmhpc.rulelog import to_log

to_log(snakemake.log[0])
prepare_finetune(snakemake.params.source, Path(snakemake.output.train).parent, snakemake.params.embedded)
