from pathlib import Path

from llmhpc.rulelog import to_log
from llmhpc.train.litgpt import write_litgpt_config

to_log(snakemake.log[0])
experiment = snakemake.wildcards.experiment
write_litgpt_config(
    snakemake.output[0],
    snakemake.params.settings,
    checkpoint_dir="results/checkpoints/base",
    data_dir="results/data/finetune",
    out_dir=f"results/finetune/{experiment}/out",
    experiment=experiment,
)
print(Path(snakemake.output[0]).read_text())
