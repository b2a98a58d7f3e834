from llmhpc.data import prepare_eval
from llmhpc.rulelog import to_log

to_log(snakemake.log[0])
prepare_eval(snakemake.params.source, snakemake.output[0], snakemake.params.embedded)
