from llmhpc.rulelog import to_log
from llmhpc.stages.data import prepare_eval

to_log(snakemake.log[0])
prepare_eval(snakemake.params.source, snakemake.output[0], snakemake.params.embedded)
