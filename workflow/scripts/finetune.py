from llmhpc import finetune
from llmhpc.rulelog import to_log

to_log(snakemake.log[0])
finetune.run_stage(
    config_path=snakemake.input.config,
    checkpoint_dir=snakemake.input.checkpoint,
    out_dir=snakemake.output.out_dir,
    stdout_path=snakemake.output.stdout,
    metrics_path=snakemake.output.metrics,
    summary_path=snakemake.output.summary,
    settings=snakemake.params.settings,
    peak_override=snakemake.params.peak_tflops,
    threads=snakemake.threads,
)
