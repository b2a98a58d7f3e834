from llmhpc.rulelog import to_log
from llmhpc.stages import weights

to_log(snakemake.log[0])
info = weights.fetch(snakemake.params.model, snakemake.output[0])
print(info)
