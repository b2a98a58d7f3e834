from llmhpc import atomic
from llmhpc.rulelog import to_log
from llmhpc.stages.summary import build

to_log(snakemake.log[0])
table = build(
    run_name=snakemake.params.run_name,
    experiments=snakemake.params.experiments,
    manifest=snakemake.input.manifest,
    finetune=dict(zip(snakemake.params.experiments, snakemake.input.finetune)),
    evaluate=dict(zip(["base", *snakemake.params.experiments], snakemake.input.evaluate)),
    data={"train": snakemake.input.train, "val": snakemake.input.val, "eval": snakemake.input.eval},
    serve=dict(zip(snakemake.params.served, snakemake.input.serve)),
)
atomic.write_text(snakemake.output[0], table.to_csv(index=False))
print(table.to_string())
