# LLM fine-tune and evaluation on an HPC cluster, as one reproducible command.
# Stages: env -> weights -> convert -> data -> finetune -> evaluate -> summary (one rule file each).
from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless the command names config files: then they alone say what the run is about (keys they
# leave out take the schema's defaults, config_hub's values), so a real run never inherits the laptop's settings.
# To change a few keys of the embedded default, name it first: --configfile config/config.yaml mine.yaml
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/env.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/convert.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/serve_check.smk"
include: "workflow/rules/summary.smk"
include: "workflow/rules/plots.smk"
include: "workflow/rules/slides.smk"
include: "workflow/rules/submission.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
