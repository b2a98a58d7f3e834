from llmhpc.rulelog import to_log
from llmhpc.stages import weights

to_log(snakemake.log[0])
try:
    info = weights.fetch(snakemake.params.model, snakemake.output[0])
except weights.WeightsError as exc:
    raise SystemExit(f"weights: {exc}") from None  # one line that says what to do, not a traceback
print(info)
