"""Logic of the LLM-on-HPC Snakemake workflow: one module per stage, imported by thin rule scripts."""

__version__ = "0.1.0"

# The plots stage's figures, results/plots/<name>.{png,svg}: the rules, the slides and the plots module share
# this one list (here, so that reading it does not import matplotlib into every Snakemake start).
PLOT_NAMES = ("loss", "throughput", "time_breakdown", "memory", "eval_accuracy", "infer_tradeoff")
