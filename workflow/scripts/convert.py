from llmhpc import weights
from llmhpc.rulelog import to_log

to_log(snakemake.log[0])
weights.convert(snakemake.input.weights, snakemake.output[0], snakemake.params.model_name)
