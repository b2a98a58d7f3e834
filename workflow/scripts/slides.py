from pathlib import Path

from llmhpc.outputs.slides.model import build_deck
from llmhpc.rulelog import to_log
from llmhpc.stages.slides import render_all

to_log(snakemake.log[0])
deck = build_deck(
    summary_csv=snakemake.input.summary,
    manifest_json=snakemake.input.manifest,
    presentation=snakemake.params.presentation,
    experiments=snakemake.params.experiments,
    run_name=snakemake.params.run_name,
    plots_dir=Path(snakemake.input.plots[0]).parent,
    run_args=snakemake.params.run_args,
    profiles=snakemake.params.profiles,
    model_name=snakemake.params.model_name,
    model_source=snakemake.config["model"]["source"],
)
render_all(deck, Path(snakemake.input.templates[0]).parent, {"html": snakemake.output.html, "pdf": snakemake.output.pdf,
                                              "pptx": snakemake.output.pptx, "json": snakemake.output.model})
