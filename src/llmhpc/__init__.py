"""Logic of the LLM-on-HPC Snakemake workflow: one module per stage (llmhpc.stages), imported by thin rule
scripts, and one subpackage per concern (cluster, train, eval, outputs, sources)."""

__version__ = "0.1.0"
