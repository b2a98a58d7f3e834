from llmhpc.rulelog import to_log
from llmhpc.stages import convert

to_log(snakemake.log[0])
convert.convert(snakemake.input.weights, snakemake.output[0], snakemake.params.model_name)
