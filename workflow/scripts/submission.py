from llmhpc.rulelog import to_log
from llmhpc.stages import submission

to_log(snakemake.log[0])
params = snakemake.params
submission.make(
    archive=snakemake.output.archive,
    checksum=snakemake.output.checksum,
    manifest=snakemake.input.manifest,
    config=snakemake.config,
    experiments=params.experiments,
    configfiles=params.configfiles,
    name=params.name,
    run_name=params.run_name,
    max_file_mb=params.max_file_mb,
    exclude=[snakemake.log[0], *params.exclude],  # this job's own log is still being written
    served=params.served,
    summary=snakemake.input.summary,
)
