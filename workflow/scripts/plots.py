from pathlib import Path

from llmhpc.rulelog import to_log
from llmhpc.stages.plots import make_all

to_log(snakemake.log[0])
experiments = snakemake.params.experiments
made = make_all(
    summary_csv=snakemake.input.summary,
    metrics=dict(zip(experiments, snakemake.input.metrics)),
    manifest_path=snakemake.input.manifest,
    experiments=experiments,
    tolerance=snakemake.params.tolerance,
    out_dir=Path(snakemake.output.loss).parent,
    model_source=snakemake.config["model"]["source"],
    workers=snakemake.threads,
)
for plot in made.values():
    print(f"{plot.name}: {', '.join(map(str, plot.files))}")
    for what in plot.missing:
        print(f"  missing: {what}")
    for key, label in plot.labels.items():
        print(f"  {key}: {label}")
