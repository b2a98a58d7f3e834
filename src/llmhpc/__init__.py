"""Logic of the LLM-on-HPC Snakemake workflow: one module per stage, imported by thin rule scripts."""

__version__ = "0.1.0"
